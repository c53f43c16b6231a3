"""Name resolution for media fetching: the SSRF check at connect time, and static answers.

:class:`PolicyResolver` refuses a host if ANY address DNS returns is internal (checked at connect
time, so redirects and DNS rebinding cannot reach internal networks). :class:`StaticResolver`
answers from a ``host=ip`` table (:func:`parse_resolve`, setting ``media_resolve``, like curl
``--resolve``); its answers still pass :class:`PolicyResolver`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from workers.address_policy import AddressPolicy

__all__ = ["PolicyResolver", "StaticResolver", "parse_resolve"]

class PolicyResolver(AbstractResolver):
    """Resolves with ``inner`` (aiohttp's default resolver when ``None``), then refuses the host
    with ``blocked_address`` if ANY returned address breaks the policy (a mixed answer is a
    rebinding attempt). Hosts in ``allow_hosts_any_address`` pass unchecked."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = aiohttp.DefaultResolver()
        infos = await self._inner.resolve(host, port, family)
        if not self._policy.is_exempt(host):
            for info in infos:
                self._policy.check_ip(info["host"])
        return infos

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def parse_resolve(spec: str) -> dict[str, tuple[str, ...]]:
    """``"host=ip,*.domain=ip"`` -> ``{host: (ip, ...)}`` (a host given twice gets both).

    ``*.domain`` matches every subdomain, at any depth, not the apex. Raises ``ValueError`` on
    an entry without ``=``, an empty host or an address that is not an IP literal.
    """
    table: dict[str, tuple[str, ...]] = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        host, sep, ip = (part.strip() for part in entry.partition("="))
        host = host.lower().rstrip(".")
        if not sep or not host or host in ("*", "*."):
            raise ValueError(f"media_resolve entry {entry!r}: expected host=ip")
        addr = ipaddress.ip_address(ip.strip("[]")).compressed  # ValueError if not an IP
        table[host] = (*table.get(host, ()), addr)
    return table


class StaticResolver(AbstractResolver):
    """Answers from a fixed table (:func:`parse_resolve`); other hosts go to ``fallback``
    (aiohttp's default resolver when ``None``). The most specific entry wins: ``a.b.test``,
    then ``*.b.test``, then ``*.test``. Wrap it in :class:`PolicyResolver`: a table does not
    make an address acceptable."""

    def __init__(
        self, table: Mapping[str, Iterable[str]], fallback: AbstractResolver | None = None
    ) -> None:
        self._table = {h.lower().rstrip("."): tuple(ips) for h, ips in table.items()}
        self._fallback = fallback

    def lookup(self, host: str) -> tuple[str, ...] | None:
        host = host.lower().rstrip(".")
        found = self._table.get(host)
        labels = host.split(".")
        for i in range(1, len(labels)):
            if found is not None:
                break
            found = self._table.get("*." + ".".join(labels[i:]))
        return found

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        ips = self.lookup(host)
        if ips is None:
            if self._fallback is None:
                self._fallback = aiohttp.DefaultResolver()
            return await self._fallback.resolve(host, port, family)
        return [
            {
                "hostname": host,
                "host": ip,
                "port": port,
                "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for ip in ips
        ]

    async def close(self) -> None:
        if self._fallback is not None:
            await self._fallback.close()


