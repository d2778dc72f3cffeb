"""Sending one request to a hub's nodes: where it goes, and whether it goes again.

:class:`NodeRequests` is mixed into :class:`~tidings.client.async_client.AsyncClient`
and carries out the rule of :mod:`tidings.client.nodes`: each attempt goes to the
node :meth:`~tidings.client.nodes.HubNodes.pick` gives, a node not known to be
this hub is asked its id first, a failure that sent nothing goes on to the next
node, and one whose outcome is unknown goes on only where sending it twice is
harmless (else :class:`~tidings.errors.OutcomeUnknown`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final

import aiohttp

from tidings.client.nodes import (
    HUB_ID_HEADER,
    UNKNOWN_STATUSES,
    HubNodes,
    Reconnect,
    Resend,
    node_unavailable,
    resend_policy,
)
from tidings.client.problems import error_from_response
from tidings.errors import NotOneHub, OutcomeUnknown, TidingsError

__all__ = ["CONNECT_TIMEOUT_S", "NodeRequests"]

CONNECT_TIMEOUT_S: Final = 5.0  # at most, for a TCP connection to a node


class NodeRequests:
    """The request loop of a client of several nodes (see the module's docstring)."""

    nodes: HubNodes
    _timeout: float
    _reconnect: Reconnect

    def _http(self) -> aiohttp.ClientSession:
        raise NotImplementedError

    def _timeouts(self, wait: float) -> aiohttp.ClientTimeout:
        # A connection not made within the connect timeout was never sent: it may
        # go to the next node whatever it asks. Past it, silence means unknown.
        connect = min(CONNECT_TIMEOUT_S, self._timeout / 2)  # it fires before the total
        return aiohttp.ClientTimeout(total=self._timeout + wait, sock_connect=connect)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        wait: float = 0,
        skip_auto_headers: tuple[str, ...] = (),
        resend: bool | None = None,
    ) -> bytes:
        """Send a request to the current node, and to the next ones while nodes fail,
        as :mod:`tidings.client.nodes` says. ``resend`` True: the request is safe to
        send again after a lost answer (a publish with event ids); False: never;
        None: as its method says (:func:`~tidings.client.nodes.resend_policy`)."""
        timeout = self._timeouts(wait)
        policy: Resend = resend_policy(method)
        if resend is not None:
            policy = "always" if resend else "never"
        tried: list[str] = []
        failures: list[TidingsError] = []
        lost = False  # an earlier attempt's answer was lost: it may have been applied
        while True:
            node, epoch = self.nodes.pick(tried)
            tried.append(node)
            sent = False
            failure = None if self.nodes.trusts(node) else await self._check_hub(node, timeout)
            if failure is None:
                try:
                    async with self._http().request(
                        method,
                        node + path,
                        data=body,
                        headers=headers,
                        params=params,
                        timeout=timeout,
                        skip_auto_headers=skip_auto_headers,
                    ) as response:
                        raw = await response.read()
                        status = response.status
                        hub_id = response.headers.get(HUB_ID_HEADER)
                except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                    failure = _unreachable(node, exc)
                except TimeoutError as exc:
                    sent = True
                    failure = TidingsError(
                        f"no answer from the hub at {node} within {self._timeout + wait:g} s"
                    )
                    failure.__cause__ = exc
                except aiohttp.ClientError as exc:
                    sent = True
                    failure = TidingsError(f"lost the connection to the hub at {node}: {exc}")
                    failure.__cause__ = exc
                else:
                    try:
                        self.nodes.answered(node, hub_id)
                    except NotOneHub as exc:
                        exc.add_note(f"{method} {path} was answered {status} by that hub")
                        raise
                    if status < 400:
                        return raw
                    if status == 404 and lost and policy == "delete":
                        return b""  # the lost attempt deleted it
                    failure = error_from_response(status, raw, f"{method} {path}")
                    if status in UNKNOWN_STATUSES:
                        sent = True
                    elif not node_unavailable(failure):
                        raise failure
            failures.append(failure)
            self.nodes.failed(node, epoch)
            if sent:
                if policy == "never":
                    raise OutcomeUnknown(
                        f"outcome unknown on node {node}: {failure.detail}; the request "
                        f"({method} {path}) was sent and may have been applied, so it is "
                        "not sent again: check its effect before repeating it",
                        node=node,
                    ) from failure
                lost = True
            if len(tried) == len(self.nodes):
                raise _all_failed(failures)
            if len(tried) > 1:  # the first switch goes at once
                await asyncio.sleep(self._reconnect.delay(len(tried) - 2))

    async def _check_hub(self, node: str, timeout: aiohttp.ClientTimeout) -> TidingsError | None:
        """Ask ``node`` which hub it is before sending it a request: None if it is this
        client's hub, the failure (nothing was sent) if it cannot say; NotOneHub if it
        is another hub."""
        try:
            async with self._http().get(node + "/healthz", timeout=timeout) as response:
                raw = await response.read()
                status = response.status
                hub_id = response.headers.get(HUB_ID_HEADER)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _unreachable(node, exc)
        if status >= 400:
            return error_from_response(status, raw, "GET /healthz")
        if hub_id is None and self.nodes.hub_id is not None:
            # An older hub, another server, a proxy that drops the header: it cannot
            # show it is this hub, so it is not sent the request.
            return TidingsError(
                f"the node at {node} names no hub id ({HUB_ID_HEADER}), so it cannot "
                f"be told apart from another hub; this client's hub is {self.nodes.hub_id}"
            )
        self.nodes.answered(node, hub_id)
        return None


def _unreachable(node: str, exc: BaseException) -> TidingsError:
    """The failure of a request that never reached ``node``."""
    failure = TidingsError(f"cannot reach the hub at {node}: {exc or type(exc).__name__}")
    failure.__cause__ = exc
    return failure


def _all_failed(failures: list[TidingsError]) -> TidingsError:
    """The error of a request that every node failed: the one error with one node,
    the last node's answer if it gave one, else every node's reason. The earlier
    nodes' reasons are kept as notes of the answer, and the cause chains to the
    previous failure."""
    last = failures[-1]
    if len(failures) == 1:
        return last
    if type(last) is not TidingsError:
        for earlier in failures[:-1]:
            last.add_note(f"before it: {earlier.detail}")
        if last.__cause__ is None:
            last.__cause__ = failures[-2]
        return last
    err = TidingsError("no node of the hub answered: " + "; ".join(f.detail for f in failures))
    err.__cause__ = last
    return err
