"""Log append throughput beside its bare os.write ceilings: ``python bench/log_append.py``.

The same as ``tidings bench log``; ``--help`` lists the options.
"""

from tidings.benchmarks.log_append import main

if __name__ == "__main__":
    raise SystemExit(main())
