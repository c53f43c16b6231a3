"""Which URLs and addresses the media fetcher may reach (the SSRF policy), and the media error root.

A URL is checked twice: :meth:`AddressPolicy.check_url` before every hop (scheme, credentials,
host lists, IP-literal hosts in any spelling) and :meth:`AddressPolicy.check_ip` on every address
DNS returns, at connect time (``media_fetch.PolicyResolver``), so DNS rebinding and redirects to
internal hosts are refused before a socket is opened.

Every media failure is a :class:`MediaError` with a ``reason`` from :data:`MEDIA_ERROR_REASONS`
(plus ``http_<status>``). A media failure never drops its comment: the prediction lists it in
``media_errors``. This module is the lowest layer of the media stack (stdlib and yarl only), so the
error tree lives here::

    CommentflowError
    └── MediaError                 one media item failed; the comment goes on without it
        ├── BlockedURL             policy refusal: blocked_scheme, blocked_host, blocked_address,
        │                          invalid_url (never retried)
        ├── FetchFailed            timeout, too_large, http_<status>, too_many_redirects,
        │                          connection_error (the fetcher retried what was retriable)
        ├── DecodeFailed           unsupported_type, decode_error, too_large,
        │                          unsupported_sample_rate (media_decode)
        └── MediaBusy              busy, batch_limit, request_limit: a worker limit, not the
                                   media's fault (transient, never remembered)

Which failures are remembered per URL (the negative cache) is decided here too:
:func:`is_deterministic` is true only for what would fail the same way on the next try.

:func:`registrable_domain` groups hosts for the fetcher's per-domain connection limit.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

import yarl

from schemas.errors import CommentflowError

__all__ = [
    "MEDIA_ERROR_REASONS",
    "AddressPolicy",
    "BlockedURL",
    "CheckedURL",
    "DecodeFailed",
    "FetchFailed",
    "MediaBusy",
    "MediaError",
    "is_deterministic",
    "parse_legacy_ipv4",
    "registrable_domain",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Every ``media_errors[].reason`` with its meaning; ``http_<status>`` stands for any HTTP status.
MEDIA_ERROR_REASONS: dict[str, str] = {
    "timeout": "the item did not arrive (and decode) before its deadline",
    "too_large": "the body, the declared Content-Length or the decoded pixels are over the limit",
    "blocked_address": "the host is, or resolves to, an address the policy refuses (internal)",
    "blocked_scheme": "the URL scheme is not allowed (only http/https by default)",
    "blocked_host": "the host is denied, or not in the allow-list",
    "unsupported_type": "the content is not a supported image/audio format of the asked type",
    "decode_error": "the content is truncated or corrupt",
    "http_<status>": "the server answered with this non-success status (e.g. http_404)",
    "too_many_redirects": "more redirects than the fetcher follows",
    "connection_error": "the connection failed or broke, after retries",
    "invalid_url": "the URL cannot be parsed, has credentials, or an ambiguous host spelling",
    "unsupported_sample_rate": "the audio sample rate is not one of the common rates we resample",
    "busy": "no media budget (bytes in flight, decode slot) was free before the deadline",
    "batch_limit": "the micro-batch already had media_max_items_per_batch items; not fetched",
    "request_limit": "the comment used up media_max_requests_per_comment HTTP requests",
}

# Reasons that never enter the negative cache: the next try may well succeed.
_TRANSIENT: Final = frozenset(
    {"timeout", "connection_error", "busy", "batch_limit", "request_limit", "http_408",
     "http_429"}
)


def is_deterministic(reason: str) -> bool:
    """Whether ``reason`` would recur on an immediate retry (so it may be remembered per URL).

    Deterministic: 4xx statuses but 408/429, policy refusals, too_large, too_many_redirects,
    unsupported_type, unsupported_sample_rate, decode_error. Transient: timeouts, connection
    errors, 5xx (and any other non-4xx status), and the worker's own limits (busy, batch_limit,
    request_limit).
    """
    if reason in _TRANSIENT:
        return False
    if reason.startswith("http_"):
        return reason[5:6] == "4" and len(reason) == 8
    return True


class MediaError(CommentflowError):
    """One media item could not be used; :attr:`reason` is the code reported in ``media_errors``."""

    retriable = False  # for the comment: it is published without the item, never retried as a whole

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason


class BlockedURL(MediaError):
    """The policy refused the URL or an address it resolves to; nothing was sent."""


class FetchFailed(MediaError):
    """The fetch failed: timeout, too_large, http_<status>, too_many_redirects, connection_error."""


class DecodeFailed(MediaError):
    """The body is not a usable image/audio: unsupported_type, decode_error, too_large,
    unsupported_sample_rate."""


class MediaBusy(MediaError):
    """A worker limit, not the media: busy, batch_limit, request_limit (never remembered)."""


# Ranges refused whatever Python's ``is_global`` says (it changed across 3.11.x/3.12.x).
_BLOCKED_V4: Final = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", includes 0.0.0.0 (reaches localhost on Linux)
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes broadcast
    )
)
_BLOCKED_V6: Final = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible ::a.b.c.d
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, includes Teredo 2001::/32
        "2001:db8::/32",
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
_LINK_LOCAL: Final = (ipaddress.IPv4Network("169.254.0.0/16"), ipaddress.IPv6Network("fe80::/10"))
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_HOST_LABEL: Final = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_LEGACY_PART: Final = re.compile(r"^(0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*)$")


def parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Read ``host`` as ``inet_aton`` does: ``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``.

    Returns ``None`` when ``host`` is not a numeric spelling at all (a DNS name). Raises
    :class:`BlockedURL` ``invalid_url`` for a numeric spelling out of range.
    """
    parts = host.lower().split(".")
    if not 1 <= len(parts) <= 4 or not all(_LEGACY_PART.match(p) for p in parts):
        return None
    values = []
    for p in parts:
        if p.startswith("0x"):
            values.append(int(p[2:] or "0", 16))
        elif len(p) > 1 and p.startswith("0"):
            values.append(int(p, 8))
        else:
            values.append(int(p))
    # The last part fills all the remaining bytes: a.b.c.d, a.b.(16 bits), a.(24 bits), (32 bits).
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        raise BlockedURL("invalid_url", "numeric host out of range")
    number = last
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


@dataclass(frozen=True, slots=True)
class CheckedURL:
    """A URL that passed :meth:`AddressPolicy.check_url`; ``ip`` is set for IP-literal hosts."""

    url: yarl.URL
    host: str  # normalised: lower case, IDNA, no trailing dot, IPv6 without brackets
    port: int
    ip: IPAddress | None
    exempt: bool  # host is in allow_hosts_any_address: the address checks are skipped


def _norm_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _norm_pattern(pattern: str) -> str:
    """``*.example.com`` (curl/TLS style) is the same pattern as ``.example.com``."""
    host = _norm_host(pattern).strip("[]")
    return host[1:] if host.startswith("*.") else host


def _host_matches(host: str, patterns: frozenset[str]) -> bool:
    """``example.com`` matches itself; ``.example.com`` and ``*.example.com`` match every
    subdomain (not the apex)."""
    if host in patterns:
        return True
    return any(p.startswith(".") and host.endswith(p) for p in patterns)


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The SSRF policy: immutable, shared by every hop and every connection of a fetcher.

    ``allowed_hosts`` empty means any host; otherwise only those (``.example.com`` or
    ``*.example.com`` = every subdomain, not the apex; the same for the other host lists).
    ``allow_hosts_any_address`` names hosts that may resolve anywhere, loopback included (local
    development and tests); they are implicitly allowed hosts. ``allow_private`` lets private,
    loopback and CGNAT addresses through but never link-local (cloud metadata), multicast or
    unspecified ones.
    """

    allow_private: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    denied_hosts: frozenset[str] = frozenset()
    allowed_schemes: frozenset[str] = frozenset({"http", "https"})
    allow_hosts_any_address: frozenset[str] = frozenset()
    allowed_ports: frozenset[int] | None = None  # None: any port
    max_url_length: int = 2048

    def __post_init__(self) -> None:
        # Normalised once (frozen: hence object.__setattr__), so matching is a set lookup.
        for name in ("allowed_hosts", "denied_hosts", "allow_hosts_any_address"):
            hosts = frozenset(_norm_pattern(h) for h in getattr(self, name))
            object.__setattr__(self, name, hosts)
        schemes = frozenset(s.lower() for s in self.allowed_schemes)
        object.__setattr__(self, "allowed_schemes", schemes)

    # -- hosts

    def is_exempt(self, host: str) -> bool:
        """Whether ``host`` (a name or an IP literal) skips the address checks."""
        exempt = self.allow_hosts_any_address
        return bool(exempt) and _host_matches(_norm_host(host).strip("[]"), exempt)

    def check_host(self, host: str) -> None:
        """Apply the deny- and allow-lists to a normalised host; raise ``blocked_host``."""
        if _host_matches(host, self.denied_hosts):
            raise BlockedURL("blocked_host", "host is denied")
        if self.allowed_hosts and not (
            _host_matches(host, self.allowed_hosts) or self.is_exempt(host)
        ):
            raise BlockedURL("blocked_host", "host is not in the allow-list")

    # -- addresses

    def check_ip(self, ip: str | IPAddress) -> None:
        """Raise :class:`BlockedURL` ``blocked_address`` unless ``ip`` is a public unicast address.

        IPv4-mapped (``::ffff:a.b.c.d``), 6to4 (``2002::/16``) and NAT64 (``64:ff9b::/96``)
        addresses are judged by the IPv4 address they embed.
        """
        try:
            addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        except ValueError as exc:
            raise BlockedURL("blocked_address", "not an IP address") from exc
        reason = self._refusal(addr)
        if reason:
            raise BlockedURL("blocked_address", reason)

    def is_ip_allowed(self, ip: str | IPAddress) -> bool:
        try:
            self.check_ip(ip)
        except BlockedURL:
            return False
        return True

    def _refusal(self, addr: IPAddress) -> str | None:
        if isinstance(addr, ipaddress.IPv6Address):
            if addr.scope_id:
                addr = ipaddress.IPv6Address(addr.compressed.split("%")[0])
            embedded = addr.ipv4_mapped or addr.sixtofour
            if embedded is None and addr in _NAT64:
                embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
            if embedded is not None:
                inner = self._refusal(embedded)
                return f"embeds {inner}" if inner else None
        if addr.is_unspecified:
            return "unspecified address"
        if addr.is_multicast:
            return "multicast address"
        if any(addr in net for net in _LINK_LOCAL if net.version == addr.version):
            return "link-local address (metadata)"
        if self.allow_private:
            return None
        nets = _BLOCKED_V4 if addr.version == 4 else _BLOCKED_V6
        if any(addr in net for net in nets):  # type: ignore[operator]
            return "internal address"
        if addr.is_loopback or addr.is_private or addr.is_reserved or not addr.is_global:
            return "non-global address"
        return None

    # -- URLs

    def check_url(self, url: str | yarl.URL) -> CheckedURL:
        """Check one hop's URL before connecting; raise :class:`BlockedURL` with its reason.

        IP-literal hosts in any spelling (``[::ffff:10.0.0.1]``, ``2130706433``, ``0x7f.1``) are
        normalised and checked here, because the connector does not resolve them; DNS names are
        checked on every resolved address at connect time.
        """
        text = str(url)
        if len(text) > self.max_url_length:
            raise BlockedURL("invalid_url", "URL too long")
        try:
            parsed = url if isinstance(url, yarl.URL) else yarl.URL(text)
            raw_host = parsed.raw_host
            port = parsed.port
        except (ValueError, TypeError, UnicodeError) as exc:
            raise BlockedURL("invalid_url", "unparsable URL") from exc
        scheme = (parsed.scheme or "").lower()
        if scheme not in self.allowed_schemes:
            raise BlockedURL("blocked_scheme", f"scheme {scheme or '(none)'!r}")
        if not parsed.is_absolute() or not raw_host:
            raise BlockedURL("invalid_url", "no host")
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise BlockedURL("invalid_url", "credentials in URL")
        if port is None:
            raise BlockedURL("invalid_url", "no port")
        if self.allowed_ports is not None and port not in self.allowed_ports:
            raise BlockedURL("blocked_address", "port not allowed")
        if raw_host.endswith(".."):
            raise BlockedURL("invalid_url", "empty host label")
        host = _norm_host(raw_host)
        ip = self._literal_ip(host)
        exempt = self.is_exempt(host)
        self.check_host(host if ip is None else ip.compressed)
        if ip is not None and not exempt:
            self.check_ip(ip)
        return CheckedURL(url=parsed, host=host, port=port, ip=ip, exempt=exempt)

    @staticmethod
    def _literal_ip(host: str) -> IPAddress | None:
        if ":" in host:  # yarl has already removed the brackets
            try:
                return ipaddress.IPv6Address(host)
            except ValueError as exc:
                raise BlockedURL("invalid_url", "bad IPv6 literal") from exc
        legacy = parse_legacy_ipv4(host)
        if legacy is not None:
            if legacy.compressed != host:
                # Refused even when public: only resolvers with inet_aton semantics read these,
                # so a checker and a connector could disagree on where they point.
                probe = AddressPolicy().is_ip_allowed(legacy)
                raise BlockedURL(
                    "invalid_url" if probe else "blocked_address",
                    "non-canonical numeric IPv4 host",
                )
            return legacy
        labels = host.split(".")
        if not all(_HOST_LABEL.match(label) for label in labels):
            raise BlockedURL("invalid_url", "host is not a valid DNS name")
        if labels[-1].isdigit():
            raise BlockedURL("invalid_url", "numeric top-level label")
        return None


# -- registrable domains (the per-domain connection limit)

# Second-level labels under which registrations happen (co.uk, com.au, ...): a small offline
# stand-in for the Public Suffix List, enough to keep unrelated sites apart in the fairness limit.
_SECOND_LEVEL: Final = frozenset(
    {"ac", "co", "com", "edu", "gov", "govt", "gob", "go", "ltd", "me", "mil", "ne", "net", "nic",
     "nom", "or", "org", "plc", "sch"}
)


def _psl_private_suffix() -> object | None:
    try:  # optional: the full Public Suffix List (an offline copy ships with the package)
        from publicsuffixlist import PublicSuffixList  # type: ignore[import-not-found]
    except ImportError:
        return None
    return PublicSuffixList().privatesuffix


_PSL: Final = _psl_private_suffix()


def registrable_domain(host: str) -> str:
    """The registrable domain ("eTLD+1") of ``host``: ``a1.evil.test`` -> ``evil.test``.

    With the ``publicsuffixlist`` package installed, its offline Public Suffix List decides.
    Without it: the last two labels, or the last three when the second-to-last is a common
    second-level suffix label of a two-letter country code (``x.example.co.uk`` ->
    ``example.co.uk``, ``shop.example.com.au`` -> ``example.com.au``). An IP literal is its
    own domain. Never raises: a host it cannot split is returned as it is.
    """
    host = _norm_host(host).strip("[]")
    if ":" in host or _is_numeric_ipv4(host):
        return host
    if _PSL is not None:
        found = _PSL(host)  # type: ignore[operator]
        if isinstance(found, str) and found:
            return found
    labels = host.split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _is_numeric_ipv4(host: str) -> bool:
    """Whether ``host`` is some numeric IPv4 spelling (in range or not)."""
    try:
        return parse_legacy_ipv4(host) is not None
    except BlockedURL:
        return True
