"""Layer 1, storage: the append-only log, bytes on disk and nothing above them.

- ``config``: the fsync policy, retention, segment layout, clock and record types.
- ``format``: the byte layout of segments and indexes, written out at its top.
- ``segment``, ``partition``: one segment file; one partition's segments, its
  writer (group commit) and readers, rolling and retention. Its parts:
  ``partstate`` (the state they share), ``healing`` (a failed write refused
  until it heals, the cuts start-up owes), ``holds`` (linked parts held until
  whole), ``compactable`` (what a compaction may rewrite); ``appendtimes``
  (append times never go back, the read horizon); ``knowndamage`` (a
  partition's damage record).
- ``recovery``: checking the active segment at open and cutting a torn tail.
- ``damage``: telling damage from a torn tail, stepping over it, its record;
  ``check``: the same scan offline, for ``tidings check``.
- ``files``: the open files of every partition, bounded, least recently used closed.
- ``linked``: one publish over several partitions, whole or not at all.
- ``compaction``: a topic compacted by key keeps the latest record of each key,
  at its offset; the rewrite of a segment, safe to die at. ``keymap``: what a
  pass reads, the latest record per key, and which records stay.
- ``memory``: the same interface in memory, for tests of the layers above.

Imports only :mod:`tidings.errors`. Imported by ``core`` (through the
``Storage`` seam's types), ``backends`` and the benchmarks.
"""
