"""A no-op handler App beside the bare group fetch/ack loop: ``python bench/handlers.py``.

The same as ``tidings bench handlers``; ``--help`` lists the options.
"""

from tidings.benchmarks.handlers import main

if __name__ == "__main__":
    raise SystemExit(main())
