"""The schema registry: event types' JSON Schemas, their versions and compatibility.

``compat.py`` decides whether one schema can stand for another (pure, no I/O);
``registry.py`` keeps the versions per type, checks new ones and validates event
data at publish; ``infer.py`` proposes a schema from the events a type carried.
Imports ``errors`` and ``log`` only; ``core.hub`` and the server use it, and a
backend stores it through the ``Storage`` seam (``core/storage.py``).
"""
