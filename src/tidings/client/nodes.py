"""Which node of a hub a client talks to, when it moves to another, and how it backs off.

A hub may be served by several nodes (``tidings serve`` processes that serve
the same events). A client is given one URL, a list, or a comma-separated
string (:func:`parse_hub_urls`); :class:`HubNodes` holds the list and the
*current* node, shared by the client's HTTP requests and its live
subscriptions. The rule:

- Every request goes to the current node, the first of the list to begin with.
  The client stays on a node while it answers, and never moves back by itself.
- A failure that blames the node rather than the request (no connection, no
  answer within the timeout, a connection lost mid-answer, or a 502, 503 or
  504) makes the next node of the list current (round robin, wrapping), and the
  request is sent again there. Anything else the hub answers, a 4xx above all,
  is its word on the request: it is raised, and no node changes.
- One request tries each node at most once: the first switch goes at once,
  each further one waits as :class:`Reconnect` says. With one node nothing is
  retried; with several, the request raises once every node failed.
- A live subscription follows the same rule for each connection it opens,
  within its own :class:`Reconnect`, and resumes on the new node from the
  resume token of the last record it handed out.

Sending a request again is safe where the hub makes it so: a publish goes out
under the same event ids (the client fills any missing id first when it has
several nodes), and the hub answers a repeated id from its dedupe window
instead of storing it twice. Nodes share a dedupe window only when they share a
backend; nodes on disks of their own are separate hubs.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

__all__ = ["FAILOVER_STATUSES", "HubNodes", "HubUrls", "Reconnect", "parse_hub_urls"]

FAILOVER_STATUSES: Final = frozenset({502, 503, 504})
"""Answers that blame the node (a proxy without upstream, a node unavailable or
busy, a gateway timeout): worth trying the next one."""

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
    moves them all. ``switches`` counts the moves.
    """

    __slots__ = ("_current", "switches", "urls")

    def __init__(self, urls: HubUrls) -> None:
        self.urls = parse_hub_urls(urls)
        self._current = 0
        self.switches = 0

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

    def pick(self, tried: Iterable[str] = ()) -> str:
        """The node for the next attempt of a request that already tried ``tried``:
        the current one, or if it was tried, the first untried one after it."""
        done = set(tried)
        n = len(self.urls)
        for step in range(n):
            url = self.urls[(self._current + step) % n]
            if url not in done:
                return url
        raise ValueError("every node was tried")

    def failed(self, url: str) -> None:
        """``url`` failed as a node: if it is still the current one, move on to the next.

        Many requests in flight on a node that dies all report it; only the first
        moves, so none skips the node that took over.
        """
        if len(self.urls) > 1 and self.current == url:
            self._current = (self._current + 1) % len(self.urls)
            self.switches += 1
