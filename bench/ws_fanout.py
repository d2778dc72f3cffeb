"""WebSocket fan-out beside a bare websockets broadcast: ``python bench/ws_fanout.py``.

The same as ``tidings bench ws``; ``--help`` lists the options.
"""

from tidings.benchmarks.ws_fanout import main

if __name__ == "__main__":
    raise SystemExit(main())
