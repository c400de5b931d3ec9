"""Address classification and IP-literal parsing: the tables both guards rely on."""

from __future__ import annotations

import ipaddress

import pytest

from nanobanana_queue.workers.security.addresses import (
    address_problem,
    ends_in_number,
    parse_ip_host,
)


@pytest.mark.parametrize(
    ("address", "reason", "listable"),
    [
        ("127.0.0.1", "loopback", True),
        ("127.255.0.9", "loopback", True),
        ("10.0.0.1", "private", True),
        ("172.16.5.4", "private", True),
        ("192.168.1.1", "private", True),
        ("100.100.100.200", "carrier-grade NAT", True),
        ("169.254.169.254", "link-local", False),
        ("0.0.0.0", "unspecified", False),
        ("224.0.0.1", "multicast", False),
        ("255.255.255.255", "broadcast", False),
        ("240.0.0.1", "reserved", False),
        ("192.0.2.10", "documentation", False),
        ("::1", "loopback", True),
        ("::", "unspecified", False),
        ("::ffff:127.0.0.1", "loopback", True),
        ("::ffff:169.254.169.254", "link-local", False),
        ("64:ff9b::a9fe:a9fe", "link-local", False),
        ("::7f00:1", "transition", False),
        ("2002:7f00:1::1", "transition", False),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved", False),
        ("fd00::1", "private", True),
        ("fc12:3456::1", "private", True),
        ("fe80::1", "link-local", False),
        ("ff02::1", "multicast", False),
        ("2001:db8::1", "documentation", False),
    ],
)
def test_non_public_addresses_are_classified_with_a_reason(
    address: str, reason: str, listable: bool
) -> None:
    problem = address_problem(ipaddress.ip_address(address))

    assert problem is not None
    assert reason in problem.reason
    assert problem.listable is listable


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_have_no_problem(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "address", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("2130706433", "127.0.0.1", False),
        ("0177.0.0.1", "127.0.0.1", False),
        ("0x7f.1", "127.0.0.1", False),
        ("0x7f000001", "127.0.0.1", False),
        ("127.1", "127.0.0.1", False),
        ("127.0.1", "127.0.0.1", False),
        ("127.0.0.1.", "127.0.0.1", False),
        ("[::1]", "::1", True),
        ("::ffff:127.0.0.1", "::ffff:7f00:1", True),
    ],
)
def test_every_spelling_of_an_ip_literal_is_recognised(
    host: str, address: str, canonical: bool
) -> None:
    assert parse_ip_host(host) == (ipaddress.ip_address(address), canonical)


@pytest.mark.parametrize("host", ["example.com", "0x7g.1", "1.2.3.4.5", "256.1.1.1", "09.1.1.1"])
def test_names_and_invalid_numbers_are_not_ip_literals(host: str) -> None:
    assert parse_ip_host(host) is None


def test_a_host_ending_in_a_number_is_flagged() -> None:
    assert ends_in_number("foo.123")
    assert ends_in_number("1.2.3.4.5")
    assert not ends_in_number("cdn.example.com")
