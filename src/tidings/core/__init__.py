"""Layer 2, no sockets: what a hub does, whatever stores it and serves it.

Topics, publishing and the dedupe window (``hub``, ``publishing``, ``dedupe``,
``refill``), reads and consumer groups (``consuming``, ``groups``: a group's
state machine, sans I/O; ``cursors``: its position in one partition;
``deadletters``: its records copied to the dead-letter topic, then done;
``offsetranges``: the offsets it has done, as ranges;
``skipping``: reads that step over damage), the
WebSocket session state machine (``session``), live fan-out (``fanout``), the
event-type catalogue (``catalog``), the metrics history (``history``, sans
I/O), and ``webhooks/``: endpoint configuration,
retry schedule, signing, URL checks and the store seam.

The seams live here, beside the code that uses them: ``storage.Storage`` and
``storage.PartitionStore`` (what a backend owes the hub),
``history.HistoryStore`` and ``webhooks.store.WebhookStore``. Imports ``events``,
``log`` (its value types and clock) and ``errors``. Imported by ``backends``,
``server`` and ``app``.
"""
