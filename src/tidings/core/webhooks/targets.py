"""Which URLs a webhook may reach: the hub must not be a way into its own network.

A URL must be http or https with a host, and no user info. Every address its host
resolves to must be a public one: loopback, private (RFC 1918, ULA), link-local,
CGNAT (100.64.0.0/10, RFC 6598), multicast, reserved and unspecified addresses
are refused, unless the address lies in a network the hub was told to allow
(``--webhook-allow-net``). The check runs when an endpoint is registered and
again on every connection, against the very addresses the connection then uses,
so a name that later resolves elsewhere (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tidings.errors import BadRequest, UrlNotAllowed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_BENCHMARKING = ipaddress.ip_network("198.18.0.0/15")
_IETF_PROTOCOL = ipaddress.ip_network("192.0.0.0/24")  # RFC 6890: not for general use


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    nets = []
    for v in values:
        try:
            nets.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise BadRequest(
                f"{v!r} is not a network in CIDR notation", field="allow_net"
            ) from None
    return tuple(nets)


def check_url(url: object) -> Target:
    """The URL's scheme, host and port; UrlNotAllowed if its shape is not allowed."""
    if not isinstance(url, str) or not url:
        raise UrlNotAllowed("url must be a non-empty string", field="url")
    if len(url) > 2048:
        raise UrlNotAllowed("url is longer than 2048 characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed(f"url {url!r} is not a valid URL: {exc}", field="url") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlNotAllowed(f"url must be http or https, not {scheme or 'relative'!r}", field="url")
    if not parts.hostname:
        raise UrlNotAllowed(f"url {url!r} has no host", field="url")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("url must not hold a user name or password", field="url")
    if parts.fragment:
        raise UrlNotAllowed("url must not have a fragment", field="url")
    return Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80))


def address_class(addr: IPAddress) -> str | None:
    """Why ``addr`` is not a public address, or None if it is."""
    if isinstance(addr, ipaddress.IPv6Address):
        # IPv6 addresses that carry an IPv4 one (mapped, 6to4) reach it: judge that.
        inner = addr.ipv4_mapped or addr.sixtofour
        if inner is not None:
            return address_class(inner)
        if addr.is_site_local:
            return "site-local"
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_link_local:
        return "link-local"
    if addr.is_multicast:
        return "multicast"
    if isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT:
        return "CGNAT (shared address space)"
    if isinstance(addr, ipaddress.IPv4Address) and (
        addr in _BENCHMARKING or addr in _IETF_PROTOCOL
    ):
        return "reserved"
    if addr.is_reserved:
        return "reserved"
    if addr.is_private:
        return "private"
    if not addr.is_global:
        return "reserved"
    return None


class AddressPolicy:
    """Refuses non-public addresses unless allow-listed."""

    def __init__(self, allow: Iterable[IPNetwork] = ()) -> None:
        self.allow = tuple(allow)

    def refusal(self, address: str) -> str | None:
        """Why a connection to ``address`` is refused, or None when it may go."""
        try:
            addr = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{address!r} is not an IP address"
        why = address_class(addr)
        if why is None:
            return None
        plain = (
            addr.ipv4_mapped or addr.sixtofour if isinstance(addr, ipaddress.IPv6Address) else None
        )
        for net in self.allow:
            if addr in net or (plain is not None and plain in net):
                return None
        return f"{address} is a {why} address"

    def check_addresses(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The addresses, all allowed; UrlNotAllowed naming the first one that is not."""
        out = list(addresses)
        if not out:
            raise UrlNotAllowed(f"{host!r} resolves to no address", field="url")
        for a in out:
            why = self.refusal(a)
            if why is not None:
                raise UrlNotAllowed(
                    f"{host!r} resolves to {why}; webhooks may reach only public "
                    "addresses unless the hub allows the network (--webhook-allow-net)",
                    field="url",
                )
        return out
