"""Layer 4: the ``tidings`` command line.

``main`` assembles the commands; ``support`` holds their shared options and
output; ``webhooks`` is the ``tidings webhooks`` group. It imports every layer;
nothing imports it.
"""
