"""Finding apps by ``module:attribute``, and the structured log lines of ``tidings run``."""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tidings.app.app import App

__all__ = ["AppNotFound", "JsonLogFormatter", "load_apps"]


class AppNotFound(Exception):
    """A ``module:app`` path that does not lead to an App."""


def load_apps(paths: Iterable[str]) -> list[App]:
    """The apps named by ``module:attribute`` paths; an attribute may hold a list of apps.

    The current directory is searched for the module first, as ``python -m`` does.
    """
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    apps: list[App] = []
    for path in paths:
        apps.extend(_load(path))
    names = [a.name for a in apps]
    if len(set(names)) != len(names):
        raise AppNotFound(f"two apps share a name: {sorted(names)}")
    if not apps:
        raise AppNotFound("no app given: name one as module:app")
    return apps


def _load(path: str) -> list[App]:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise AppNotFound(f"{path!r} is not module:attribute (e.g. shop.payments:app)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppNotFound(f"no module named {module_name!r} (from {path!r})") from None
        raise AppNotFound(f"importing {module_name!r} failed: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AppNotFound(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, App):
        return [obj]
    if isinstance(obj, list | tuple) and obj and all(isinstance(a, App) for a in obj):
        return list(obj)
    raise AppNotFound(f"{path!r} is a {type(obj).__name__}, not an App or a list of Apps")


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the record's extras
    (``app``, ``topic``, ``group``, ``event_id``, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)
