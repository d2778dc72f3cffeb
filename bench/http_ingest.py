"""HTTP ingest throughput beside its bare ASGI ceiling: ``python bench/http_ingest.py``.

The same as ``tidings bench http``; ``--help`` lists the options.
"""

from tidings.benchmarks.http_ingest import main

if __name__ == "__main__":
    raise SystemExit(main())
