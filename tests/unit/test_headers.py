"""The header rules (workers.headers): what is copied, what never is, and the bounds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamer.settings import Settings
from workers.config import ProcessorConfig
from workers.headers import DEFAULT_ALLOW, HeaderPolicy, first_value, normalise_headers

POLICY = HeaderPolicy.parse(DEFAULT_ALLOW)


def test_the_default_allow_list_is_the_same_everywhere():
    assert Settings().headers_allow == ProcessorConfig().headers_allow == DEFAULT_ALLOW


def test_allow_listed_names_and_prefixes_are_copied_in_order_names_as_they_came():
    headers = [
        ("X-Request-ID", b"r-1"),
        ("other", b"dropped: not allow-listed"),
        ("correlation-id", b"c-1"),
        ("x-cf-tenant", b"t-9"),
        ("x-cf-", b"the bare prefix is a name too"),
    ]
    assert POLICY.copy(headers) == (
        ("X-Request-ID", b"r-1"),
        ("correlation-id", b"c-1"),
        ("x-cf-tenant", b"t-9"),
        ("x-cf-", b"the bare prefix is a name too"),
    )


def test_secrets_are_never_copied_even_when_allow_listed():
    policy = HeaderPolicy.parse(
        "authorization,cookie,x-api-key,x-cf-*,proxy-authorization,set-cookie"
    )
    headers = [
        ("Authorization", b"Bearer abc"),
        ("cookie", b"sid=1"),
        ("Set-Cookie", b"sid=1"),
        ("proxy-authorization", b"Basic x"),
        ("x-api-key", b"k"),
        ("x-cf-auth", b"a"),
        ("x-cf-access-token", b"t"),
        ("x-cf-client-secret", b"s"),
        ("x-cf-password", b"p"),
        ("x-cf-session-id", b"s"),
        ("x-cf-signature", b"s"),
        ("x-cf-tenant", b"kept"),
    ]
    assert policy.copy(headers) == (("x-cf-tenant", b"kept"),)


def test_own_and_trace_headers_are_never_copied_from_the_input():
    policy = HeaderPolicy.parse("content-type,commentflow-schema,traceparent,tracestate,x-cf-*")
    headers = [
        ("content-type", b"text/evil"),
        ("commentflow-schema", b"spoofed"),
        ("CommentFlow-Error", b"spoofed"),
        ("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"),
        ("tracestate", b"a=b"),
    ]
    assert policy.copy(headers) == ()


def test_odd_names_null_values_and_repeats_are_dropped():
    headers = [
        ("x-cf-a", None),
        ("x-cf-a b", b"space"),
        ("x-cf-\u00e9", b"not ascii"),
        ("x-cf-" + "n" * 200, b"name too long"),
        (b"x-cf-bytes", b"a bytes name"),
        ("x-cf-b", "a str value"),
        ("x-cf-c", b"first"),
        ("X-CF-C", b"second"),
    ]
    assert POLICY.copy(headers) == (("x-cf-c", b"first"),)


def test_count_and_bytes_are_bounded_and_a_header_that_does_not_fit_is_dropped_whole():
    policy = HeaderPolicy.parse("x-cf-*", max_count=3, max_bytes=40)
    headers = [
        ("x-cf-1", b"a" * 10),  # 16 bytes
        ("x-cf-2", b"b" * 30),  # 36: over the 24 left, dropped
        ("x-cf-3", b"c" * 4),  # 10
        ("x-cf-4", b""),  # 6
        ("x-cf-5", b""),  # over the count
    ]
    assert policy.copy(headers) == (("x-cf-1", b"a" * 10), ("x-cf-3", b"cccc"), ("x-cf-4", b""))


def test_an_empty_allow_list_copies_nothing():
    assert HeaderPolicy.parse("").copy([("x-cf-a", b"1"), ("correlation-id", b"2")]) == ()


def test_first_value_is_none_when_absent_null_or_repeated():
    assert first_value([("TraceParent", b"v")], "traceparent") == b"v"
    assert first_value([], "traceparent") is None
    assert first_value([("traceparent", None)], "traceparent") is None
    assert first_value([("traceparent", b"a"), ("traceparent", b"b")], "traceparent") is None


def test_normalise_headers_accepts_what_clients_hand_over():
    assert normalise_headers(None) == ()
    assert normalise_headers([("a", b"1")]) == (("a", b"1"),)
    assert normalise_headers((("a", b"1"), ("b", None))) == (("a", b"1"), ("b", None))
    assert normalise_headers({"a": b"1"}) == (("a", b"1"),)
    assert normalise_headers([("a", b"1", "extra"), "junk"]) == ()
    assert normalise_headers("junk") == ()


names = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["correlation-id", "x-request-id", "Authorization", "cookie", "x-cf-"]).map(
        lambda p: p + "x"
    ),
    st.binary(max_size=8),
    st.none(),
)
values = st.one_of(st.binary(max_size=3000), st.none(), st.text(max_size=10), st.integers())
header_lists = st.lists(st.tuples(names, values), max_size=60)


@given(
    header_lists,
    st.text(max_size=60),
    st.integers(min_value=-1, max_value=40),
    st.integers(min_value=-1, max_value=9000),
)
def test_any_header_list_never_raises_and_the_output_is_bounded(
    headers, allow, max_count, max_bytes
):
    policy = HeaderPolicy.parse(allow, max_count=max_count, max_bytes=max_bytes)
    out = policy.copy(headers)
    assert len(out) <= max(0, max_count)
    assert sum(len(n) + len(v) for n, v in out) <= max(0, max_bytes)
    lowered = [n.lower() for n, _ in out]
    assert len(set(lowered)) == len(lowered)
    for name, value in out:
        assert isinstance(name, str) and isinstance(value, bytes)
        assert (name, value) in headers
        assert "auth" not in name.lower() and "cookie" not in name.lower()
    assert normalise_headers(headers) is not None
