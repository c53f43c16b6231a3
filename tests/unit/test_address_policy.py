"""The SSRF policy: a table of addresses and URL spellings, allowed or refused with their reason."""

from __future__ import annotations

import ipaddress

import pytest

from commentflow.errors import CommentflowError
from workers.address_policy import (
    MEDIA_ERROR_REASONS,
    AddressPolicy,
    BlockedURL,
    MediaError,
    is_deterministic,
    parse_legacy_ipv4,
    registrable_domain,
)
from workers.media_fetch import PolicyResolver, StaticResolver, parse_resolve

STRICT = AddressPolicy()

REFUSED_IPS = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "172.16.5.4",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "192.0.0.8",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "::",
    "::1",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456:789a::1",  # ULA
    "fec0::1",  # site-local
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "::10.0.0.1",
    "::8.8.8.8",  # IPv4-compatible is deprecated: refused whatever it embeds
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",
    "64:ff9b:1::1",  # local-use NAT64
    "2001::1",  # Teredo
    "2001:db8::1",
]

ALLOWED_IPS = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.1",  # just above CGNAT
    "172.32.0.1",  # just above 172.16/12
    "2606:4700:4700::1111",
    "2a00:1450:4001::200e",
    "::ffff:8.8.8.8",  # mapped public
    "2002:808:808::1",  # 6to4 of a public address
    "64:ff9b::808:808",  # NAT64 of a public address
]


@pytest.mark.parametrize("ip", REFUSED_IPS)
def test_check_ip_refuses_internal_addresses(ip: str) -> None:
    with pytest.raises(BlockedURL) as info:
        STRICT.check_ip(ip)
    assert info.value.reason == "blocked_address"
    assert not STRICT.is_ip_allowed(ip)


@pytest.mark.parametrize("ip", ALLOWED_IPS)
def test_check_ip_allows_public_addresses(ip: str) -> None:
    STRICT.check_ip(ip)
    STRICT.check_ip(ipaddress.ip_address(ip))
    assert STRICT.is_ip_allowed(ip)


def test_check_ip_rejects_garbage() -> None:
    with pytest.raises(BlockedURL, match="blocked_address"):
        STRICT.check_ip("not-an-ip")


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [
        ("10.0.0.1", True),
        ("127.0.0.1", True),
        ("100.64.0.1", True),
        ("fd00::1", True),
        ("169.254.169.254", False),  # metadata stays refused
        ("fe80::1", False),
        ("224.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("::ffff:169.254.169.254", False),
    ],
)
def test_allow_private_never_opens_link_local_multicast_unspecified(ip: str, allowed: bool) -> None:
    assert AddressPolicy(allow_private=True).is_ip_allowed(ip) is allowed


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # numeric spellings of internal addresses (inet_aton semantics)
        ("http://2130706433/", "blocked_address"),  # 127.0.0.1 as one decimal
        ("http://0x7f000001/", "blocked_address"),
        ("http://0x7f.1/", "blocked_address"),
        ("http://0177.0.0.1/", "blocked_address"),  # octal
        ("http://127.1/", "blocked_address"),
        ("http://127.0.1/", "blocked_address"),
        ("http://0/", "blocked_address"),
        ("http://017700000001/", "blocked_address"),
        ("http://0xA9.0xFE.0xA9.0xFE/", "blocked_address"),  # 169.254.169.254
        ("http://2852039166/", "blocked_address"),  # 169.254.169.254
        ("http://167772161/", "blocked_address"),  # 10.0.0.1
        ("http://134744072/", "invalid_url"),  # 8.8.8.8, but ambiguous spellings are refused
        ("http://4294967296/", "invalid_url"),  # out of range
        ("http://256.1.1.1/", "invalid_url"),
        # canonical literals
        ("http://127.0.0.1/", "blocked_address"),
        ("http://127.0.0.1.:8080/", "blocked_address"),  # trailing dot
        ("http://10.0.0.1/x", "blocked_address"),
        ("http://169.254.169.254/latest/meta-data/", "blocked_address"),
        ("http://[::1]/", "blocked_address"),
        ("http://[::ffff:127.0.0.1]/", "blocked_address"),
        ("http://[::ffff:7f00:1]/", "blocked_address"),
        ("http://[::ffff:10.0.0.1]/", "blocked_address"),
        ("http://[fe80::1%25eth0]/", "blocked_address"),
        ("http://[fd00::1]:8080/", "blocked_address"),
        ("http://[0:0:0:0:0:ffff:a9fe:a9fe]/", "blocked_address"),
        # schemes
        ("ftp://example.com/a.png", "blocked_scheme"),
        ("file:///etc/passwd", "blocked_scheme"),
        ("gopher://example.com/", "blocked_scheme"),
        ("data:image/png;base64,AAAA", "blocked_scheme"),
        ("javascript:alert(1)", "blocked_scheme"),
        ("//example.com/a.png", "blocked_scheme"),
        # malformed
        ("http://", "invalid_url"),
        ("http:///a.png", "invalid_url"),
        ("http://user:pw@example.com/a.png", "invalid_url"),
        ("http://user@example.com/a.png", "invalid_url"),
        ("http://example.com:99999/", "invalid_url"),
        ("http://exa mple.com/", "invalid_url"),
        ("http://%31%32%37.0.0.1/", "invalid_url"),
        ("http://example.com\\@127.0.0.1/", "invalid_url"),
        ("http://a..b/", "invalid_url"),
        ("http://example..", "invalid_url"),
        ("http://-bad-.com/", "invalid_url"),
        ("http://1.2.3.4.5/", "invalid_url"),
        ("http://[::1/", "invalid_url"),
        ("http://example.com/" + "a" * 3000, "invalid_url"),
    ],
)
def test_check_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(BlockedURL) as info:
        STRICT.check_url(url)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a.png",
        "https://cdn.example.com:8443/x/y.jpg?sig=abc#frag",
        "HTTPS://EXAMPLE.COM/A.PNG",
        "https://example.com./a.png",
        "https://xn--bcher-kva.de/a.png",
        "https://bücher.de/a.png",
        "http://8.8.8.8/a.png",
        "http://[2606:4700:4700::1111]/a.png",
        "http://[::ffff:8.8.8.8]/a.png",
        "https://under_score.example.com/a.png",
    ],
)
def test_check_url_allows_public(url: str) -> None:
    checked = STRICT.check_url(url)
    assert checked.host == checked.host.lower()
    assert not checked.host.endswith(".")
    assert not checked.exempt


def test_checked_url_fields() -> None:
    c = STRICT.check_url("https://Example.COM.:8443/p")
    assert (c.host, c.port, c.ip) == ("example.com", 8443, None)
    c = STRICT.check_url("http://[::ffff:8.8.8.8]/")
    assert c.ip == ipaddress.ip_address("::ffff:8.8.8.8")


def test_host_lists() -> None:
    p = AddressPolicy(
        allowed_hosts=frozenset({"cdn.example.com", ".media.example.net"}),
        denied_hosts=frozenset({"bad.media.example.net", "EVIL.example."}),
    )
    p.check_url("https://cdn.example.com/a.png")
    p.check_url("https://img.media.example.net/a.png")
    for url in (
        "https://example.com/a.png",  # not listed
        "https://media.example.net/a.png",  # ".x" matches subdomains only
        "https://bad.media.example.net/a.png",  # denied wins
        "https://cdn.example.com.evil.org/a.png",
        "https://8.8.8.8/a.png",
    ):
        with pytest.raises(BlockedURL, match="blocked_host"):
            p.check_url(url)
    with pytest.raises(BlockedURL, match="blocked_host"):
        AddressPolicy(denied_hosts=frozenset({"evil.example"})).check_url("http://EVIL.example./")


def test_allow_hosts_any_address_exempts_only_those_hosts() -> None:
    p = AddressPolicy(
        allowed_hosts=frozenset({"cdn.example.com"}),
        allow_hosts_any_address=frozenset({"media.test", "127.0.0.1", "[::1]"}),
    )
    assert p.check_url("http://media.test:8080/a.png").exempt
    assert p.check_url("http://127.0.0.1:8080/a.png").exempt  # implicitly an allowed host
    assert p.check_url("http://[::1]:8080/a.png").exempt
    assert p.is_exempt("MEDIA.test.")
    assert not p.is_exempt("other.test")
    with pytest.raises(BlockedURL, match="blocked_address"):
        AddressPolicy(allow_hosts_any_address=frozenset({"media.test"})).check_url(
            "http://127.0.0.2/"
        )
    with pytest.raises(BlockedURL, match="blocked_address"):  # spelling tricks stay refused
        p.check_url("http://2130706433/")


def test_schemes_and_ports() -> None:
    p = AddressPolicy(allowed_schemes=frozenset({"HTTPS"}), allowed_ports=frozenset({443}))
    p.check_url("https://example.com/a.png")
    with pytest.raises(BlockedURL, match="blocked_scheme"):
        p.check_url("http://example.com/a.png")
    with pytest.raises(BlockedURL, match="blocked_address"):
        p.check_url("https://example.com:8443/a.png")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.2", "10.1.0.2"),
        ("0X0A.0", "10.0.0.0"),
        ("0", "0.0.0.0"),
        ("1.2.3.4", "1.2.3.4"),
        ("example.com", None),
        ("0x7g.1", None),
        ("08.1.1.1", None),  # 08 is not octal: a name, refused later as a numeric TLD
    ],
)
def test_parse_legacy_ipv4(host: str, expected: str | None) -> None:
    got = parse_legacy_ipv4(host)
    assert (None if got is None else str(got)) == expected


def test_error_tree() -> None:
    err = BlockedURL("blocked_host", "x")
    assert isinstance(err, MediaError)
    assert isinstance(err, CommentflowError)
    assert err.reason == "blocked_host"
    assert not err.retriable
    assert {"timeout", "blocked_address", "decode_error", "invalid_url"} <= set(MEDIA_ERROR_REASONS)
    new = {"busy", "batch_limit", "request_limit", "unsupported_sample_rate"}
    assert new <= set(MEDIA_ERROR_REASONS)


# -- wildcard host lists, media_resolve


def test_wildcard_allow_hosts_match_subdomains_not_the_apex() -> None:
    policy = AddressPolicy(allow_hosts_any_address=frozenset({"*.hostile.test", "Exact.Test."}))
    assert policy.is_exempt("a1.hostile.test") and policy.is_exempt("x.y.hostile.test")
    assert not policy.is_exempt("hostile.test") and not policy.is_exempt("evilhostile.test")
    assert policy.is_exempt("exact.test") and not policy.is_exempt("sub.exact.test")
    denied = AddressPolicy(denied_hosts=frozenset({"*.bad.test"}))
    with pytest.raises(BlockedURL, match="blocked_host"):
        denied.check_url("http://cdn.bad.test/a.png")


def test_parse_resolve() -> None:
    table = parse_resolve(" media.test=127.0.0.1, *.Hostile.test=127.0.0.1,v6.test=[::1],"
                          "two.test=1.2.3.4,two.test=5.6.7.8,")
    assert table == {
        "media.test": ("127.0.0.1",),
        "*.hostile.test": ("127.0.0.1",),
        "v6.test": ("::1",),
        "two.test": ("1.2.3.4", "5.6.7.8"),
    }
    assert parse_resolve("") == {}
    for bad in ("media.test", "=1.2.3.4", "media.test=not-an-ip", "*=1.2.3.4"):
        with pytest.raises(ValueError):
            parse_resolve(bad)


async def test_static_resolver_most_specific_entry_wins() -> None:
    r = StaticResolver(parse_resolve("*.test=9.9.9.9,*.b.test=8.8.8.8,a.b.test=7.7.7.7"))
    assert r.lookup("a.b.test") == ("7.7.7.7",)
    assert r.lookup("x.a.b.test") == ("8.8.8.8",)
    assert r.lookup("b.test") == ("9.9.9.9",)  # the apex of *.b.test is not in it
    assert r.lookup("test") is None
    assert [i["host"] for i in await r.resolve("Z.B.test.", 80)] == ["8.8.8.8"]


async def test_resolved_addresses_still_pass_the_policy() -> None:
    table = parse_resolve(
        "*.hostile.test=127.0.0.1,meta.test=169.254.169.254,ok.test=93.184.215.14"
    )
    strict = PolicyResolver(AddressPolicy(), StaticResolver(table))
    for host in ("a.hostile.test", "meta.test"):
        with pytest.raises(BlockedURL, match="blocked_address"):
            await strict.resolve(host, 80)
    assert [i["host"] for i in await strict.resolve("ok.test", 80)] == ["93.184.215.14"]
    # Loopback only where the allow-list says so (local tests, soak); metadata never is.
    allowed = PolicyResolver(
        AddressPolicy(allow_hosts_any_address=frozenset({"*.hostile.test"})), StaticResolver(table)
    )
    assert [i["host"] for i in await allowed.resolve("a.hostile.test", 80)] == ["127.0.0.1"]
    with pytest.raises(BlockedURL, match="blocked_address"):
        await allowed.resolve("meta.test", 80)


# -- registrable domains, failure classes


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("a1.evil.test", "evil.test"),
        ("x.y.evil.test", "evil.test"),
        ("evil.test", "evil.test"),
        ("cdn.Example.COM.", "example.com"),
        ("img.example.co.uk", "example.co.uk"),
        ("shop.example.com.au", "example.com.au"),
        ("a.b.example.co.jp", "example.co.jp"),
        ("10.0.0.1", "10.0.0.1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("localhost", "localhost"),
    ],
)
def test_registrable_domain(host: str, domain: str) -> None:
    assert registrable_domain(host) == domain


@pytest.mark.parametrize(
    ("reason", "remembered"),
    [
        ("http_404", True), ("http_403", True), ("http_410", True), ("too_large", True),
        ("decode_error", True), ("unsupported_type", True), ("blocked_address", True),
        ("unsupported_sample_rate", True), ("too_many_redirects", True),
        ("http_408", False), ("http_429", False), ("http_500", False), ("http_503", False),
        ("timeout", False), ("connection_error", False), ("busy", False),
        ("batch_limit", False), ("request_limit", False),
    ],
)
def test_only_deterministic_failures_are_remembered(reason: str, remembered: bool) -> None:
    assert is_deterministic(reason) is remembered
