"""Which callback hosts the vendor refuses (internal/private addresses), without DNS.

The emulator never resolves names (no network here): it refuses IP literals in private,
loopback, link-local, reserved or multicast ranges and the usual local host names.
"""

from __future__ import annotations

import ipaddress

_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")


def is_internal_host(host: str) -> bool:
    """True when ``host`` names this machine or a private network."""
    name = host.strip("[]").lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return _is_numeric_shorthand(name)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return bool(
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def is_loopback_host(host: str) -> bool:
    """True for names the emulator may deliver callbacks to without leaving the machine."""
    name = host.strip("[]").lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_numeric_shorthand(name: str) -> bool:
    """``2130706433`` or ``0x7f.1`` style hosts: refused, they hide addresses."""
    parts = name.split(".")
    return all(part.isdigit() or part.startswith("0x") for part in parts if part)
