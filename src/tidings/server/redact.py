"""No secret in a log line: query values that authenticate are replaced before a record is written.

uvicorn logs the path and query of every WebSocket handshake (``"WebSocket
/v1/ws?ticket=…" [accepted]``, or 403 for a refused one) and, with an access log,
of every request. The hub takes no token in a URL, but a client may still send
one (a refused guess is logged too), and a ticket, though spent within seconds,
is a credential until then. :class:`RedactSecrets` filters uvicorn's handlers.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

import uvicorn.config

#: Query parameters whose values never reach a log.
SECRET_PARAMS = ("token", "ticket", "access_token")
_SECRET_QUERY = re.compile(
    r"([?&](?:" + "|".join(SECRET_PARAMS) + r")=)[^&\s\"']*", re.IGNORECASE
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced."""
    return _SECRET_QUERY.sub(r"\1" + REDACTED, text)


class RedactSecrets(logging.Filter):
    """A handler filter: secret query values out of the message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args.items()}
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, with :class:`RedactSecrets` on each of its handlers."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": RedactSecrets}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    return config


__all__ = ["REDACTED", "SECRET_PARAMS", "RedactSecrets", "log_config", "redact"]
