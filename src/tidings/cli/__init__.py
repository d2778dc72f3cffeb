"""Layer 4: the ``tidings`` command line, one module per command group.

``main`` assembles the commands; ``serve`` (the hub's flags), ``events``
(publish, tail, topics, groups, replay), ``apps`` (run, asyncapi, demo),
``webhooks``, ``check`` (a data directory, offline) and ``bench`` are the
groups; ``support`` holds their shared options and output. It imports every
layer; nothing imports it.
"""
