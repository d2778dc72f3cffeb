"""Hub answers translated back into :mod:`tidings.errors`, once, at the SDK's edge.

The hub writes every error as RFC 9457 problem details
(https://www.rfc-editor.org/rfc/rfc9457). Its ``type`` URI names the exact class
(``https://tidings.dev/problems/stale-lease`` is :class:`~tidings.errors.StaleLease`);
where it does not (``about:blank``, a proxy's HTML page), the ``title`` and then
the status choose the class. The hub's ``detail`` is kept word for word and the
extra members (``attribute``, ``index``, ``field``, ``stale``, ...) land in
``.fields``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

import orjson

from tidings.errors import (
    BadRequest,
    Conflict,
    CorruptLog,
    Forbidden,
    InvalidEvent,
    NotFound,
    RateLimited,
    ServerBusy,
    StorageUnavailable,
    TidingsError,
    TooLarge,
    Unauthorized,
    UnsupportedMediaType,
)

__all__ = ["build_error", "error_from_response", "unbatched"]

# RFC 9457 section 3.1: the members every problem may have; the rest are extensions.
_STANDARD: Final = frozenset({"type", "title", "status", "detail", "instance"})


def _tree(cls: type[TidingsError]) -> Iterator[type[TidingsError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _tree(sub)


def _type_uri(cls: type[TidingsError]) -> str:
    # The URI is derived from the class name by errors.py; ask it rather than repeat the rule.
    return cls.__new__(cls).type_uri


_CLASSES: Final = list(_tree(TidingsError))
_BY_TYPE: Final = {_type_uri(c): c for c in _CLASSES}
_BY_TITLE: Final = {(c.status, c.title.lower()): c for c in reversed(_CLASSES)}
_BY_STATUS: Final[dict[int, type[TidingsError]]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    415: UnsupportedMediaType,
    422: InvalidEvent,
    429: RateLimited,
    503: StorageUnavailable,
}


def build_error(cls: type[TidingsError], detail: str, fields: Mapping[str, Any]) -> TidingsError:
    """An instance of ``cls`` carrying ``detail`` as given and ``fields`` as its extras.

    The constructors of some classes reword their detail (``CorruptLog``) or take
    named arguments (``InvalidEvent``); an error that comes back from the hub keeps
    the hub's words, so the base initializer is used and the typed attributes set
    from the fields.
    """
    err = cls.__new__(cls)
    TidingsError.__init__(err, detail, **fields)
    if isinstance(err, InvalidEvent):
        attribute = fields.get("attribute")
        err.attribute = attribute if isinstance(attribute, str) else None
    elif isinstance(err, CorruptLog):
        err.file = str(fields.get("file", ""))
        position = fields.get("position")
        err.position = position if isinstance(position, int) else -1
    elif isinstance(err, ServerBusy):
        after = fields.get("retry_after")
        err.retry_after_s = after if isinstance(after, int) else 1
    return err


def error_from_response(status: int, body: bytes, url: str) -> TidingsError:
    """The error a hub answer with ``status`` >= 400 stands for."""
    problem: object = None
    if body:
        try:
            problem = orjson.loads(body)
        except orjson.JSONDecodeError:
            problem = None
    if not isinstance(problem, dict):
        cls = _BY_STATUS.get(status, TidingsError)
        text = body.decode("utf-8", "replace").strip()[:300]
        detail = f"HTTP {status} from {url}" + (f": {text}" if text else "")
        return build_error(cls, detail, {} if cls.status == status else {"status": status})
    found = _BY_TYPE.get(str(problem.get("type")))
    if found is None or found.status != status:
        title = str(problem.get("title", "")).lower()
        found = _BY_TITLE.get((status, title)) or _BY_STATUS.get(status, TidingsError)
    detail = problem.get("detail") or problem.get("title") or f"HTTP {status} from {url}"
    fields = {k: v for k, v in problem.items() if k not in _STANDARD}
    if found.status != status:
        fields["status"] = status
    return build_error(found, str(detail), fields)


def unbatched(err: TidingsError) -> TidingsError:
    """A batch's error about one of its events, as a single publish of that event would get it.

    The hub prefixes the detail with ``event {index}:`` and adds ``index``; the
    producer-side batcher gives each caller the error without both.
    """
    fields = dict(err.fields)
    index = fields.pop("index", None)
    prefix = f"event {index}: "
    detail = err.detail.removeprefix(prefix)
    return build_error(type(err), detail, fields)
