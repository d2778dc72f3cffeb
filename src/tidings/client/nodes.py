"""Which node of a hub a client talks to, when it moves to another, and how it backs off.

A hub may be served by several nodes: processes that serve the same events
because they share one backend. Today that means several URLs of one hub (a
proxy in front of it, the hub's own address, the same hub restarted); nodes on
one shared backend will answer the same way. A client is given one URL, a list,
or a comma-separated string (:func:`parse_hub_urls`); :class:`HubNodes` holds
the list and the *current* node, shared by the client's HTTP requests and its
live subscriptions. The rule:

- Every request goes to the current node, the first of the list to begin with.
  The client stays on a node while it answers, and never moves back by itself.
- The hub names itself in every answer (``Tidings-Hub-Id``, made once per data
  directory; see :mod:`tidings.server.hubid`). The client keeps the id of its
  first answer, checks the id of a node before its first request there, and
  refuses to use a node that answers another id (:class:`~tidings.errors.NotOneHub`):
  separate hubs have separate logs, and a position or resume token of one means
  other records, or none, on the other. A list of independent hubs is refused.
- A failure that blames the node moves the current node to the next of the list
  (round robin, wrapping). It is either *not sent* (no connection, no connection
  within the connect timeout, or a 503 saying the node is unavailable: storage
  unavailable, shutting down, over a limit), after which the request always goes
  to the next node; or *outcome unknown* (the connection lost after the request
  went out, no answer in time, a gateway's 502 or 504), after which it is sent
  again only if a second copy is harmless (:func:`resend_policy`): GET and PUT,
  a publish (its events carry ids, and the hub answers a repeated id from its
  dedupe window), a DELETE (where a 404 after the lost attempt counts as done).
  Anything else (fetch, ack, nack, seek, a webhook created, replayed or tested,
  a view commit) raises :class:`~tidings.errors.OutcomeUnknown` naming the node,
  and is not sent again. Anything else the hub answers, a 4xx or a 503 about the
  request (a view behind) above all, is its word on the request: it is raised,
  and no node changes.
- One request tries each node at most once: the first switch goes at once,
  each further one waits as :class:`Reconnect` says. With one node nothing is
  retried; with several, the request raises once every node failed.
- A live subscription follows the same rule for each connection it opens,
  within its own :class:`Reconnect`, and resumes on the new node from the
  resume token of the last record it handed out (subscribing is a read: it is
  always safe to do again).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from tidings.errors import NotOneHub, TidingsError, ViewBehind

__all__ = [
    "HUB_ID_HEADER",
    "UNKNOWN_STATUSES",
    "HubNodes",
    "HubUrls",
    "Reconnect",
    "Resend",
    "node_unavailable",
    "parse_hub_urls",
    "resend_policy",
]

HUB_ID_HEADER: Final = "Tidings-Hub-Id"
"""The header in which the hub names itself on every answer."""

UNKNOWN_STATUSES: Final = frozenset({502, 504})
"""Answers of a gateway that may have passed the request on before it failed:
the node is to blame, and whether the hub applied the request is unknown."""

Resend = Literal["always", "delete", "never"]
"""Whether a request whose outcome is unknown may be sent again to another node:
always; as a DELETE (a 404 then means the lost attempt did it); never."""


def resend_policy(method: str) -> Resend:
    """The rule for a request of ``method`` (a publish says ``always`` itself)."""
    if method in ("GET", "HEAD", "PUT"):
        return "always"
    return "delete" if method == "DELETE" else "never"


def node_unavailable(err: TidingsError) -> bool:
    """True for a 503 that says the node cannot serve now (its storage unavailable,
    shutting down, over a limit or budget), and so applied nothing; a 503 about
    the request itself (:class:`~tidings.errors.ViewBehind`) is the hub's answer."""
    return err.status == 503 and not isinstance(err, ViewBehind)

HubUrls = str | Iterable[str]
"""One hub URL, several as a list, or several in one comma-separated string."""


@dataclass(frozen=True, slots=True)
class Reconnect:
    """How a client comes back after a failure: the one backoff of the SDK.

    The n-th attempt in a row waits ``min(max_delay, initial_delay * 2**n)``
    seconds, less up to half of it at random so that many clients of one hub do
    not come back in step. ``max_reconnects`` bounds the attempts in a row that
    a live subscription makes without a subscription (None: no bound); one
    that starts again resets the count. Past the bound the iteration raises the
    last error. An HTTP request makes one attempt per node and waits
    ``delay(n)`` before its (n+2)-th.
    """

    initial_delay: float = 0.1
    max_delay: float = 5.0
    max_reconnects: int | None = None

    def __post_init__(self) -> None:
        if self.initial_delay <= 0 or self.max_delay < self.initial_delay:
            raise ValueError("need 0 < initial_delay <= max_delay")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ValueError("max_reconnects must be None or >= 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt ``attempt`` (0 for the first)."""
        full = min(self.max_delay, self.initial_delay * 2.0 ** min(attempt, 32))
        return full - random.uniform(0, full / 2)


def parse_hub_urls(urls: object) -> tuple[str, ...]:
    """The node URLs that ``urls`` names, checked, without a trailing slash.

    ``urls`` is one ``http(s)://HOST[:PORT][/PATH]``, a list of them, or a
    comma-separated string of them. Raises ValueError naming what is wrong: no
    URL at all, an empty entry, a scheme other than http or https, no host, a
    bad port, a query or fragment, or a node named twice.
    """
    if isinstance(urls, str):
        given = urls.split(",") if "," in urls else [urls]
    elif isinstance(urls, Iterable) and not isinstance(urls, bytes | bytearray):
        given = list(urls)
    else:
        raise ValueError(f"hub URLs must be a string or a list of strings, not {urls!r}")
    if not given:
        raise ValueError("no hub URL given: name at least one, e.g. http://127.0.0.1:8700")
    out: list[str] = []
    seen: dict[str, str] = {}
    for i, url in enumerate(given):
        where = f"hub URL {url!r}" if len(given) == 1 else f"hub URL #{i + 1} ({url!r})"
        if not isinstance(url, str):
            raise ValueError(f"{where} is not a string")
        url = url.strip()
        if not url:
            raise ValueError(f"{where} is empty (a stray comma?)")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises ValueError on a bad port)
        except ValueError as exc:
            raise ValueError(f"{where} is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            hint = "" if "://" in url else f", e.g. http://{url}"
            raise ValueError(f"{where} must start with http:// or https://{hint}")
        if not parts.hostname:
            raise ValueError(f"{where} names no host")
        if parts.query or parts.fragment or any(c.isspace() for c in url):
            raise ValueError(f"{where} must be scheme, host, port and path only")
        url = url.rstrip("/")
        key = parts._replace(netloc=parts.netloc.lower(), path=parts.path.rstrip("/")).geturl()
        if key in seen:
            raise ValueError(f"{where} names the same node as {seen[key]!r}: give each node once")
        seen[key] = url
        out.append(url)
    return tuple(out)


class HubNodes:
    """The nodes of one hub and the one requests go to now (see the module's rule).

    Shared by a client and its live subscriptions: a failure one of them meets
    moves them all. ``switches`` counts the moves; ``hub_id`` is the hub's id,
    from the first answer that named one (None before).
    """

    __slots__ = ("_current", "_epoch", "_trusted", "hub_id", "switches", "urls")

    def __init__(self, urls: HubUrls) -> None:
        self.urls = parse_hub_urls(urls)
        self._current = 0
        self._epoch = 0  # counts the moves: a failure seen on an older one moves nothing
        self._trusted: set[str] = set()  # nodes that answered with the hub's id
        self.switches = 0
        self.hub_id: str | None = None

    def __len__(self) -> int:
        return len(self.urls)

    def __repr__(self) -> str:
        return f"HubNodes({list(self.urls)!r}, current={self.current!r})"

    @property
    def current(self) -> str:
        """The URL requests go to now."""
        return self.urls[self._current]

    @property
    def several(self) -> bool:
        """True when there is another node to move to."""
        return len(self.urls) > 1

    def pick(self, tried: Iterable[str] = ()) -> tuple[str, int]:
        """The node for the next attempt of a request that already tried ``tried``
        (the current one, or if it was tried, the first untried one after it), and
        the epoch to give :meth:`failed` if it fails."""
        done = set(tried)
        n = len(self.urls)
        for step in range(n):
            url = self.urls[(self._current + step) % n]
            if url not in done:
                return url, self._epoch
        raise ValueError("every node was tried")

    def failed(self, url: str, epoch: int) -> None:
        """``url``, picked at ``epoch``, failed as a node: if it is still the current
        one and nothing moved since, move on to the next.

        Many requests in flight on a node that dies all report it; only the first
        moves, so none skips the node that took over. A late failure of a request
        sent before the client left a node and came back to it moves nothing. The
        node's hub id is asked again before its next request.
        """
        self._trusted.discard(url)  # what answers there next may be another hub: ask
        if len(self.urls) > 1 and epoch == self._epoch and self.current == url:
            self._current = (self._current + 1) % len(self.urls)
            self._epoch += 1
            self.switches += 1

    def trusts(self, url: str) -> bool:
        """True when ``url`` may be sent a request without checking its hub id first:
        no id is known yet (the first answer will set it), or it answered that id."""
        return self.hub_id is None or url in self._trusted

    def answered(self, url: str, hub_id: str | None) -> None:
        """Note that ``url`` answered as hub ``hub_id`` (None: it named none, as a
        hub from before ids or a proxy's own error page). The first id is the hub's;
        another raises :class:`~tidings.errors.NotOneHub`."""
        if hub_id is None:
            return
        if self.hub_id is None:
            self.hub_id = hub_id
        elif hub_id != self.hub_id:
            self._trusted.discard(url)
            others = [u for u in self.urls if u in self._trusted] or ["the first node"]
            raise NotOneHub(
                f"{url} answers as hub {hub_id}, but {others[0]} as hub {self.hub_id}: "
                "these URLs are not nodes of one hub (separate hubs keep separate logs, "
                "and a position of one is not a position of the other); give the URLs "
                "of one hub only",
                node=url,
                hub_id=hub_id,
                expected=self.hub_id,
            )
        self._trusted.add(url)
