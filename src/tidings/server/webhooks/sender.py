"""The webhook sender: POSTs over aiohttp with keep-alive, to checked addresses only.

aiohttp posts several thousand requests a second from one process here (see
docs/benchmarks.md, "Webhook delivery"), and the SDK already uses it. Its
connector takes a resolver; ours resolves the host and
refuses the answer unless every address is allowed (see
:mod:`tidings.core.webhooks.targets`), and the connector then connects to those
very addresses. Hosts given as IP literals skip resolvers in aiohttp, so they
are checked before the request. Redirects are never followed, and at most
``max_response_bytes`` of an answer is read.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.helpers import is_ip_address
from aiohttp.resolver import DefaultResolver
from multidict import CIMultiDict

from tidings.core.webhooks.targets import AddressPolicy, check_url
from tidings.errors import UrlNotAllowed

RESPONSE_KEPT = 1024
# On every request: who sends, and that the answer's body is to come unencoded
# (the sender reads at most its first bytes and does not decompress it).
_FIXED = (("user-agent", "tidings-webhooks/1"), ("accept-encoding", "identity"))


@dataclass(frozen=True, slots=True)
class SendResult:
    status: int | None  # None: no HTTP answer
    latency_ms: float
    error: str | None
    response: str  # the first KiB of the body
    retry_after: str | None = None


class Sender(Protocol):
    """The seam between delivery and the network."""

    async def send(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> SendResult: ...

    async def check(self, url: str) -> None:
        """UrlNotAllowed unless ``url`` and every address its host resolves to are allowed."""
        ...

    async def close(self) -> None: ...


class CheckedResolver(AbstractResolver):
    """Resolves, then refuses any answer that holds an address the policy forbids."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await self._inner.resolve(host, port, family)
        self.policy.check_addresses(host, [i["host"] for i in infos])
        return infos

    async def close(self) -> None:
        await self._inner.close()


def _connect_host(url: str) -> str:
    """The host as aiohttp will connect to it: yarl's ASCII form (IDNA, and digits of
    any script made plain, so "①②⑦.0.0.1" is 127.0.0.1)."""
    try:
        host = yarl.URL(url).raw_host
    except (ValueError, UnicodeError) as exc:
        raise UrlNotAllowed(f"url {url!r} has a host that cannot be encoded: {exc}",
                            field="url") from None
    if not host:
        raise UrlNotAllowed(f"url {url!r} has no host", field="url")
    return host


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host.split("%")[0])
    except OSError:
        return False
    return True


class AiohttpSender:
    def __init__(self, policy: AddressPolicy, max_response_bytes: int = 64 * 1024) -> None:
        self.policy = policy
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        # Per URL: why it is refused before any lookup (scheme, or an IP literal the
        # policy forbids), or None. The policy is fixed, so the answer is too.
        self._refused: dict[str, str | None] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._urls: dict[str, yarl.URL] = {}  # parsed once, not on every POST

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=CheckedResolver(self.policy), limit=0, limit_per_host=0, ttl_dns_cache=10
            )
            # No session-wide headers and no skipped auto headers: aiohttp merges the
            # former into, and copies the headers to check the latter, on every request.
            # Each request carries them instead (see _FIXED).
            # No cookie jar: a receiver's cookies are never sent back, to it or to
            # another endpoint on its host (and no request looks cookies up).
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def check(self, url: str) -> None:
        target = check_url(url)
        host = _connect_host(url)
        if _is_ip(host) or is_ip_address(host):
            self.policy.check_addresses(host, [host])
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, target.port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise UrlNotAllowed(f"{host!r} does not resolve: {exc}", field="url") from None
        self.policy.check_addresses(host, [str(i[4][0]) for i in infos])

    async def send(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> SendResult:
        start = time.perf_counter()
        refused = self._refused.get(url, "")
        if refused == "":
            refused = self._refused[url] = self._refusal(url)
        if refused is not None:
            return self._failed(start, f"refused: {refused}")
        timeout = self._timeouts.get(timeout_s)
        if timeout is None:
            timeout = self._timeouts[timeout_s] = aiohttp.ClientTimeout(total=timeout_s)
        target = self._urls.get(url)
        if target is None:
            if len(self._urls) > 10_000:
                self._urls.clear()
            target = self._urls[url] = yarl.URL(url)
        # A multidict, which aiohttp takes as it is (a dict it converts first).
        sent = CIMultiDict(_FIXED)
        sent.extend(headers)
        try:
            async with self._http().post(
                target, data=body, headers=sent, allow_redirects=False, timeout=timeout
            ) as resp:
                head = await self._read_capped(resp)
                return SendResult(
                    resp.status,
                    (time.perf_counter() - start) * 1000,
                    None,
                    head[:RESPONSE_KEPT].decode("utf-8", "replace"),
                    resp.headers.get("retry-after"),
                )
        except UrlNotAllowed as exc:
            return self._failed(start, f"refused: {exc.detail}")
        except TimeoutError:
            return self._failed(start, f"timed out after {timeout_s:g} s")
        except aiohttp.ClientConnectorError as exc:
            cause: Any = exc.os_error
            if isinstance(cause, UrlNotAllowed):
                return self._failed(start, f"refused: {cause.detail}")
            return self._failed(start, f"connection failed: {exc.os_error or exc}")
        except (aiohttp.ClientError, OSError) as exc:
            return self._failed(start, f"{type(exc).__name__}: {exc}")

    def _refusal(self, url: str) -> str | None:
        try:
            check_url(url)
            host = _connect_host(url)
            if _is_ip(host) or is_ip_address(host):
                self.policy.check_addresses(host, [host])
        except UrlNotAllowed as exc:
            return exc.detail
        if len(self._refused) > 10_000:
            self._refused.clear()
        return None

    @staticmethod
    def _failed(start: float, error: str) -> SendResult:
        return SendResult(None, (time.perf_counter() - start) * 1000, error, "")

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        """Up to ``max_response_bytes``; a longer answer's connection is closed, not reused."""
        length = resp.content_length
        if length is not None and length <= self.max_response_bytes:
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        while size < self.max_response_bytes:
            chunk = await resp.content.read(self.max_response_bytes - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        if not resp.content.at_eof():
            resp.close()
        return b"".join(chunks)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
