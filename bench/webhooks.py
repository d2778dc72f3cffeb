"""Webhook deliveries per second beside a bare aiohttp posting loop: ``python bench/webhooks.py``.

The same as ``tidings bench webhooks``; ``--help`` lists the options.
"""

from tidings.benchmarks.webhooks import main

if __name__ == "__main__":
    raise SystemExit(main())
