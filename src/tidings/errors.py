"""The one exception tree of tidings.

Every error knows the HTTP status it maps to (RFC 9457 problem+json at the edge)
and the WebSocket close code it maps to, so each layer raises what it means and
the server translates once::

    TidingsError                      500
    ├── BadRequest                    400  malformed JSON, bad parameter
    │   ├── BadPosition               400  an offset, time or token that is not valid
    │   │   └── OffsetOutOfRange      400  below the log start (retention) or past its end
    │   └── UrlNotAllowed             400  a webhook URL that is not http(s) or not public
    ├── Unauthorized                  401
    ├── Forbidden                     403
    ├── NotFound                      404
    │   ├── TopicNotFound             404
    │   ├── GroupNotFound             404
    │   ├── WebhookNotFound           404
    │   └── ViewNotFound              404
    ├── Conflict                      409
    │   └── StaleLease                409  ack/nack of a lease that expired or was re-leased
    ├── TooLarge                      413
    ├── UnsupportedMediaType          415
    ├── InvalidEvent                  422  names the attribute and why (and the batch index)
    ├── RateLimited                   429
    ├── StorageError                  500
    │   └── CorruptLog                500  a batch the log cannot step over: file and position
    ├── StorageUnavailable            503  disk full, closed, shutting down
    ├── ServerBusy                    503  over a hub-wide budget; Retry-After says when to retry
    │   └── ViewBehind                503  a view not caught up with min_position in time
    ├── OutcomeUnknown                     (client) a request lost after it was sent: maybe applied
    └── NotOneHub                          (client) node URLs that answer as different hubs
"""

from __future__ import annotations

from typing import Any, ClassVar


class TidingsError(Exception):
    """The root of every error tidings raises on purpose."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    close_code: ClassVar[int] = 1011

    def __init__(self, detail: str, **fields: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        #: Extra problem+json members, e.g. ``attribute`` or ``index``.
        self.fields = fields

    @property
    def type_uri(self) -> str:
        name = type(self).__name__
        slug = "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")
        return f"https://tidings.dev/problems/{slug}"

    def to_problem(self) -> dict[str, Any]:
        """The RFC 9457 problem details object for this error."""
        problem: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        problem.update(self.fields)
        return problem


class BadRequest(TidingsError):
    status = 400
    title = "Bad request"
    close_code = 4400


class BadPosition(BadRequest):
    title = "Bad position"


class UrlNotAllowed(BadRequest):
    """A webhook URL of a scheme other than http(s), or whose host resolves to a
    loopback, private, link-local, CGNAT, multicast or reserved address that the
    hub does not allow (``field`` is ``url``)."""

    title = "Webhook URL not allowed"


class Unauthorized(TidingsError):
    status = 401
    title = "Unauthorized"
    close_code = 4401


class Forbidden(TidingsError):
    status = 403
    title = "Forbidden"
    close_code = 4403


class NotFound(TidingsError):
    status = 404
    title = "Not found"
    close_code = 4404


class TopicNotFound(NotFound):
    title = "Topic not found"


class GroupNotFound(NotFound):
    title = "Consumer group not found"


class WebhookNotFound(NotFound):
    title = "Webhook not found"


class ViewNotFound(NotFound):
    title = "View not found"


class Conflict(TidingsError):
    status = 409
    title = "Conflict"
    close_code = 4409


class StaleLease(Conflict):
    title = "Stale lease"


class OffsetOutOfRange(BadPosition):
    title = "Offset out of range"


class TooLarge(TidingsError):
    status = 413
    title = "Payload too large"
    close_code = 1009


class UnsupportedMediaType(TidingsError):
    status = 415
    title = "Unsupported media type"
    close_code = 4415


class InvalidEvent(TidingsError):
    """An event that breaks CloudEvents 1.0 or a registered schema.

    ``attribute`` names the attribute at fault; ``index`` its place in a batch.
    """

    status = 422
    title = "Invalid event"
    close_code = 4422

    def __init__(self, detail: str, *, attribute: str | None = None, **fields: Any) -> None:
        if attribute is not None:
            fields["attribute"] = attribute
        super().__init__(detail, **fields)
        self.attribute = attribute

    def at_index(self, index: int) -> InvalidEvent:
        """The same error, placed at ``index`` of a batch."""
        err = InvalidEvent(f"event {index}: {self.detail}", attribute=self.attribute)
        err.fields.update(self.fields)
        err.fields["index"] = index
        return err


class RateLimited(TidingsError):
    status = 429
    title = "Too many requests"
    close_code = 4429


class StorageError(TidingsError):
    status = 500
    title = "Storage error"


class CorruptLog(StorageError):
    """A batch that fails its CRC or framing where a storage cannot step over it.

    The embedded log steps over damage and names it instead (``tidings.log.damage``).
    """

    title = "Corrupt log"

    def __init__(self, detail: str, *, file: str, position: int) -> None:
        super().__init__(f"{detail} in {file} at byte {position}", file=file, position=position)
        self.file = file
        self.position = position


class StorageUnavailable(TidingsError):
    status = 503
    title = "Storage unavailable"
    close_code = 1013


class ServerBusy(TidingsError):
    """The hub is at a budget it shares among requests; the request may be retried."""

    status = 503
    title = "Server busy"
    close_code = 1013

    def __init__(self, detail: str, *, retry_after_s: int = 1, **fields: Any) -> None:
        super().__init__(detail, retry_after=retry_after_s, **fields)
        #: Seconds to wait before retrying; the HTTP answer's ``Retry-After``.
        self.retry_after_s = retry_after_s


class ViewBehind(ServerBusy):
    """A view did not reflect the position asked for (``min_position``) within the wait."""

    title = "View behind"


class OutcomeUnknown(TidingsError):
    """A request was sent to a node and its answer was lost (the connection dropped,
    no answer in time, a gateway's 502 or 504): the hub may or may not have applied
    it. Raised by a client only, for a request it will not send again because a
    second copy would not be harmless (an ack, a fetch, a webhook created...).
    ``node`` is the URL it was sent to."""

    title = "Outcome unknown"

    def __init__(self, detail: str, *, node: str) -> None:
        super().__init__(detail, node=node)
        self.node = node


class NotOneHub(TidingsError):
    """A client was given URLs that answer as different hubs (their ``Tidings-Hub-Id``
    differs): separate logs, where one position means different records. Raised by
    a client only, instead of moving to such a URL."""

    title = "Not one hub"
