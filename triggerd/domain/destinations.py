"""Which addresses a delivery may reach (no server-side request forgery).

Users type the URLs the worker calls, so by default only public addresses are reachable;
the operator can allow more with TRIGGERD_DELIVERY_ALLOW_NETWORKS. Pure logic: the
worker applies it to the address it actually connects to (worker/destinations.py), the
API to an endpoint whose host is an IP literal.

Not public: loopback, private (RFC 1918, IPv6 unique local), link-local (cloud metadata
at 169.254.169.254 included), shared address space (CGNAT), "this network" and the
unspecified addresses, multicast, broadcast, the reserved, benchmarking and documentation
ranges, and any IPv6 address outside global unicast (2000::/3). An IPv6 address that
carries an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
`2002::/16`) is judged by the IPv4 address inside it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# (network, what it is): the first match names the refusal.
_REFUSED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("100.64.0.0/10"), "shared (carrier-grade NAT)"),
    (_V4("0.0.0.0/8"), "unspecified (this network)"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved"),
    (_V4("192.0.0.0/24"), "reserved (IETF protocol assignments)"),
    (_V4("192.88.99.0/24"), "reserved (6to4 relay)"),
    (_V4("198.18.0.0/15"), "reserved (benchmarking)"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
)
_REFUSED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::1/128"), "loopback"),
    (_V6("::/128"), "unspecified"),
    (_V6("fc00::/7"), "private (unique local)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "reserved (site-local)"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("2001::/23"), "reserved (IETF protocol assignments)"),
)
_GLOBAL_UNICAST = _V6("2000::/3")
# What inet_aton (and so a resolver) would read as an IPv4 address in a legacy form:
# `127.1`, `0x7f.1`, `2130706433`, `017700000001`.
_LEGACY_V4 = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")
_NAT64 = _V6("64:ff9b::/96")
_SIX_TO_FOUR = _V6("2002::/16")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 (well-known prefix) or 6to4 address
    carries, else None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return None


def not_public(address: IPAddress) -> str | None:
    """What kind of non-public address this is ("loopback", "private", …), or None
    when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            kind = _refused_v4(inner)
            if kind is None:
                return None
            form = ("IPv4-mapped" if address.ipv4_mapped is not None
                    else "NAT64" if address in _NAT64 else "6to4")  # fmt: skip
            return f"{kind} ({form} {inner})"
        for network, kind in _REFUSED_V6:
            if address in network:
                return kind
        if address not in _GLOBAL_UNICAST:
            return "reserved"
        return None
    return _refused_v4(address)


def _refused_v4(address: ipaddress.IPv4Address) -> str | None:
    for network, kind in _REFUSED_V4:
        if address in network:
            return kind
    return None


def parse_ip(text: str) -> IPAddress | None:
    """An address as a resolver or a URL gives it (`[…]` brackets and a `%zone` suffix
    allowed), or None when `text` is not an IP literal."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return _legacy_ipv4(text)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        address = ipaddress.IPv6Address(text.split("%", 1)[0])
    return address


def _legacy_ipv4(text: str) -> ipaddress.IPv4Address | None:
    if not _LEGACY_V4.fullmatch(text):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))  # parses only, no lookup
    except OSError:
        return None


def parse_networks(value: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """Comma-separated (or listed) CIDRs; a bare address is a /32 or /128. Raises
    ValueError naming the bad item."""
    items = value.split(",") if isinstance(value, str) else list(value)
    networks: list[IPNetwork] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not a network (like 10.0.0.0/8 or ::1/128)") from None
    return tuple(dict.fromkeys(networks))


def format_networks(networks: Iterable[IPNetwork]) -> str:
    return ",".join(str(network) for network in networks)


@dataclass(frozen=True)
class DestinationPolicy:
    """Public addresses, plus the operator's allowed networks."""

    allowed: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """Why a delivery may not connect to `address` (e.g. "127.0.0.1 is a loopback
        address"), or None when it may."""
        if self._allowed(address):
            return None
        kind = not_public(address)
        if kind is None:
            return None
        return f"{address} is a {kind} address"

    def _allowed(self, address: IPAddress) -> bool:
        if not self.allowed:
            return False
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            inner = embedded_ipv4(address)
            if inner is not None:
                candidates.append(inner)
        return any(a.version == n.version and a in n for a in candidates for n in self.allowed)

    def host_refusal(self, host: str) -> str | None:
        """For a URL's host: the refusal when it is an IP literal outside what is
        allowed; None for an allowed literal and for any host name (names are judged
        by the address they resolve to, when the worker connects)."""
        address = parse_ip(host)
        return None if address is None else self.refusal(address)
