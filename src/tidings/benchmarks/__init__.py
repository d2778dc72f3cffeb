"""Layer 4: benchmarks, each printing our figure beside its ceiling from the same run.

Run through ``tidings bench ...`` (the CLI imports them lazily); ``processes``
starts the hubs they measure, ``anchors`` the other brokers they compare with.
Imports every layer; only the CLI imports it.
"""
