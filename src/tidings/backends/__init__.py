"""Layer 2: where a hub's log and metadata live; each backend implements core's seams.

- ``embedded/``: the segment log (:mod:`tidings.log`) plus SQLite metadata, in
  one data directory on one disk; the webhook store in SQLite beside it.

Imports ``log``, ``core`` (the seams it implements) and ``errors``. Imported by
``server.serve`` and the App framework's ``embedded:`` transport.
"""
