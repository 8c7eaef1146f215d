"""Which addresses deliveries may reach (domain/destinations.py)."""

from __future__ import annotations

import ipaddress

import pytest

from triggerd.domain.destinations import (
    DestinationPolicy,
    embedded_ipv4,
    not_public,
    parse_ip,
    parse_networks,
)

REFUSED = [
    "127.0.0.1", "127.255.255.254", "::1",
    "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "fc00::1", "fd12:3456::1",
    "169.254.169.254", "169.254.0.1", "fe80::1",
    "100.64.0.1", "100.127.255.254",
    "0.0.0.0", "0.1.2.3", "::",
    "224.0.0.1", "239.255.255.250", "ff02::1", "255.255.255.255", "240.0.0.1",
    "192.0.2.10", "198.51.100.7", "203.0.113.9", "2001:db8::1", "198.18.0.1", "192.0.0.8",
    # the IPv4-carrying IPv6 forms of refused addresses
    "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    "64:ff9b::a00:1", "64:ff9b::127.0.0.1", "2002:a00:1::1", "2002:7f00:1::",
    # outside global unicast, or reserved inside it
    "100::1", "2001::1", "fec0::1",
]  # fmt: skip
PUBLIC = ["1.1.1.1", "8.8.8.8", "93.184.216.34", "2606:4700:4700::1111",
          "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "172.32.0.1",
          "100.128.0.1"]  # fmt: skip


@pytest.mark.parametrize("text", REFUSED)
def test_not_public(text: str) -> None:
    address = parse_ip(text)
    assert address is not None
    assert not_public(address) is not None
    assert DestinationPolicy().refusal(address) is not None


@pytest.mark.parametrize("text", PUBLIC)
def test_public(text: str) -> None:
    address = parse_ip(text)
    assert address is not None
    assert not_public(address) is None
    assert DestinationPolicy().refusal(address) is None


def test_refusal_names_the_address_and_its_kind() -> None:
    policy = DestinationPolicy()
    assert policy.host_refusal("169.254.169.254") == "169.254.169.254 is a link-local address"
    reason = policy.host_refusal("::ffff:10.0.0.1")
    assert reason is not None and "private" in reason and "10.0.0.1" in reason


def test_embedded_ipv4_forms() -> None:
    v6 = ipaddress.IPv6Address
    assert embedded_ipv4(v6("::ffff:1.2.3.4")) == ipaddress.IPv4Address("1.2.3.4")
    assert embedded_ipv4(v6("64:ff9b::102:304")) == ipaddress.IPv4Address("1.2.3.4")
    assert embedded_ipv4(v6("2002:102:304::")) == ipaddress.IPv4Address("1.2.3.4")
    assert embedded_ipv4(v6("2606:4700::1")) is None


def test_allowed_networks_open_exactly_what_they_name() -> None:
    policy = DestinationPolicy(parse_networks("127.0.0.0/8,::1/128,10.1.0.0/16"))
    for text in ("127.0.0.1", "::1", "10.1.2.3", "::ffff:127.0.0.1", "::ffff:10.1.0.9"):
        assert policy.host_refusal(text) is None, text
    for text in ("10.2.0.1", "192.168.0.1", "169.254.169.254", "::ffff:10.2.0.1"):
        assert policy.host_refusal(text) is not None, text


def test_host_names_are_not_judged_but_ip_literals_in_any_form_are() -> None:
    policy = DestinationPolicy()
    assert policy.host_refusal("localhost") is None  # judged at connect, after DNS
    assert policy.host_refusal("example.com") is None
    assert policy.host_refusal("1e100.net") is None
    for text in ("[::1]", "fe80::1%eth0", "127.1", "0x7f.0.0.1", "2130706433", "017700000001"):
        assert policy.host_refusal(text) is not None, text


def test_parse_networks() -> None:
    assert parse_networks("") == ()
    assert parse_networks(" 10.0.0.0/8 , ::1 ") == (ipaddress.ip_network("10.0.0.0/8"),
                                                    ipaddress.ip_network("::1/128"))  # fmt: skip
    assert parse_networks(["10.0.0.1/8"]) == (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(ValueError, match="'nope' is not a network"):
        parse_networks("10.0.0.0/8,nope")


@pytest.mark.parametrize("endpoint", [
    "http://169.254.169.254./latest", "http://127.0.0.1.:8080/", "http://10.0.0.1./",
    "http://[::1]./", "http://\uff11\uff12\uff17.0.0.1/", "http://2130706433./",
])  # fmt: skip
def test_the_api_refuses_every_form_the_worker_reads_as_a_refused_address(
    endpoint: str,
) -> None:
    from triggerd.api.destinations import check_endpoint
    from triggerd.domain.errors import ValidationError

    with pytest.raises(ValidationError) as refused:
        check_endpoint(endpoint, DestinationPolicy())
    assert "destination not allowed" in str(refused.value)
    for fine in ("http://example.com./", "http://8.8.8.8./", "https://localhost/"):
        check_endpoint(fine, DestinationPolicy())
