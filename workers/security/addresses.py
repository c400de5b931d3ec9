"""IP literal parsing and address classification, shared by the URL guard and the socket guard.

Why our own tables instead of ``ipaddress.is_global``: its answers changed between Python
patch releases (IPv4-compatible, NAT64 and 6to4 addresses count as "global" on 3.11), and
an address that *embeds* an IPv4 address must be judged by the embedded address, or
``[::ffff:169.254.169.254]`` reaches the cloud metadata service.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = [
    "AddressProblem",
    "IPAddress",
    "address_problem",
    "ends_in_number",
    "parse_ip_host",
]


@dataclass(frozen=True)
class AddressProblem:
    """Why an address is not public. ``listable``: an explicit allowlist entry may permit it."""

    reason: str
    listable: bool


_LOOPBACK = AddressProblem("loopback address", listable=True)
_PRIVATE = AddressProblem("private address", listable=True)
_SHARED = AddressProblem("shared (carrier-grade NAT) address", listable=True)
_BENCHMARK = AddressProblem("benchmarking address", listable=True)
_LINK_LOCAL = AddressProblem("link-local address (cloud metadata range)", listable=False)
_MULTICAST = AddressProblem("multicast address", listable=False)
_UNSPECIFIED = AddressProblem("unspecified address", listable=False)
_BROADCAST = AddressProblem("broadcast address", listable=False)
_RESERVED = AddressProblem("reserved address", listable=False)
_DOCUMENTATION = AddressProblem("documentation address", listable=False)
_TRANSITION = AddressProblem("deprecated IPv6 transition address", listable=False)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*pairs: tuple[str, AddressProblem]) -> list[tuple[IPNetwork, AddressProblem]]:
    return [(ipaddress.ip_network(net), problem) for net, problem in pairs]


# Order matters only for readability: the blocks do not overlap within a family.
_V4_BLOCKS = _nets(
    ("0.0.0.0/8", _UNSPECIFIED),
    ("10.0.0.0/8", _PRIVATE),
    ("100.64.0.0/10", _SHARED),
    ("127.0.0.0/8", _LOOPBACK),
    ("169.254.0.0/16", _LINK_LOCAL),
    ("172.16.0.0/12", _PRIVATE),
    ("192.0.0.0/24", _RESERVED),
    ("192.0.2.0/24", _DOCUMENTATION),
    ("192.88.99.0/24", _RESERVED),
    ("192.168.0.0/16", _PRIVATE),
    ("198.18.0.0/15", _BENCHMARK),
    ("198.51.100.0/24", _DOCUMENTATION),
    ("203.0.113.0/24", _DOCUMENTATION),
    ("224.0.0.0/4", _MULTICAST),
    ("255.255.255.255/32", _BROADCAST),
    ("240.0.0.0/4", _RESERVED),
)

# Prefixes that carry an IPv4 address in their low 32 bits: judged by that address.
_V6_EMBEDDING = [
    ipaddress.IPv6Network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64 well-known prefix
]

_V6_BLOCKS = _nets(
    ("::/128", _UNSPECIFIED),
    ("::1/128", _LOOPBACK),
    ("::/96", _TRANSITION),  # IPv4-compatible (deprecated)
    ("::/8", _RESERVED),
    ("64:ff9b:1::/48", _PRIVATE),  # local-use NAT64
    ("100::/64", _RESERVED),  # discard-only
    ("2001:db8::/32", _DOCUMENTATION),
    ("2001::/23", _RESERVED),  # IETF protocol assignments, Teredo
    ("2002::/16", _TRANSITION),  # 6to4
    ("3fff::/20", _DOCUMENTATION),
    ("fc00::/7", _PRIVATE),  # unique-local
    ("fe80::/10", _LINK_LOCAL),
    ("fec0::/10", _PRIVATE),  # site-local (deprecated)
    ("ff00::/8", _MULTICAST),
)

_NON_GLOBAL = AddressProblem("address that is not globally routable", listable=False)


def address_problem(address: IPAddress) -> AddressProblem | None:
    """Why ``address`` must not be contacted by default, or ``None`` when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return AddressProblem("IPv6 address with a zone id", listable=False)
        for prefix in _V6_EMBEDDING:
            if address in prefix:
                embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
                inner = address_problem(embedded)
                if inner is None:
                    return None
                return AddressProblem(f"{inner.reason} ({embedded} embedded)", inner.listable)
        blocks = _V6_BLOCKS
    else:
        blocks = _V4_BLOCKS
    for network, problem in blocks:
        if address in network:
            return problem
    if not address.is_global:  # a safety net for blocks added to the registry later
        return _NON_GLOBAL
    return None


_NUMBER = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")


def _parse_ipv4_part(part: str) -> int | None:
    """One dotted part as the BSD ``inet_aton`` (and WHATWG) parsers read it."""
    if not _NUMBER.match(part):
        return None
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if all(c in "01234567" for c in part) else None
    return int(part)


def _parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``127.1``, ``0x7f.1``, ``0177.0.0.1``, ``2130706433``: all mean 127.0.0.1 to libc."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_parse_ipv4_part(part) for part in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        return None
    value = values[-1]
    for index, n in enumerate(values[:-1]):
        value += n << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def parse_ip_host(host: str) -> tuple[IPAddress, bool] | None:
    """Read a URL host as an IP address: ``(address, canonical)`` or ``None`` for a name.

    ``canonical`` is false for any spelling other than plain dotted-quad IPv4 or a valid
    IPv6 literal (decimal, octal, hex, short forms, a trailing dot): no legitimate link
    uses those, and the guards refuse them whatever address they spell.
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in bare:
        try:
            return ipaddress.IPv6Address(bare), "%" not in bare
        except ValueError:
            return None
    address = _parse_legacy_ipv4(bare)
    if address is None:
        return None
    return address, str(address) == bare


def ends_in_number(host: str) -> bool:
    """True when the last label looks numeric: such a host is an IPv4 literal or invalid."""
    label = host.rstrip(".").rsplit(".", 1)[-1]
    return bool(label) and bool(_NUMBER.match(label))
