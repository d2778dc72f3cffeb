"""The order chain under a rising order rate: ``python bench/shop.py`` (from the repo root).

The same as ``tidings bench shop``; ``--help`` lists the options.
"""

from tidings.benchmarks.shop import main

if __name__ == "__main__":
    raise SystemExit(main())
