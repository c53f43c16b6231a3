"""TLS for tests: certificates made with the ``openssl`` CLI, and the embedded broker behind
Debian's ``stunnel`` (a TLS terminator), advertising the TLS port.

:func:`make_pki` writes a CA, a server certificate (for the given DNS names / IPs) and a client
certificate signed by it, plus an unrelated CA (for "wrong CA" tests). :class:`TlsBroker` runs
``tansu`` on a plaintext loopback port that advertises ``tcp://<host>:<tls_port>``, and ``stunnel``
accepting TLS on ``tls_port`` and forwarding to tansu; with ``require_client_cert`` stunnel
refuses a client without a certificate signed by the CA (mTLS). Every Kafka client must then go
through TLS: the metadata names only the TLS port.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from commentflow.processes import Child, StackError, free_port, poll_until_ready
from commentflow.stack import find_tansu, tansu_env

__all__ = ["Pki", "TlsBroker", "find_stunnel", "make_pki"]

@dataclass(frozen=True, slots=True)
class Pki:
    """PEM files: ``ca`` signs ``server_cert`` and ``client_cert``; ``other_ca`` signs nothing."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(cwd: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip


def _leaf(cwd: Path, name: str, ca: str, ext: str) -> None:
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", f"{name}.key", "-out", f"{name}.csr",
        cwd=cwd,
    )  # fmt: skip
    (cwd / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip


def make_pki(directory: Path, *, server_names: tuple[str, ...] = ("DNS:localhost",)) -> Pki:
    """A CA, a server certificate for ``server_names`` (subjectAltName entries), a client
    certificate, and an unrelated CA, all in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _leaf(
        directory,
        "server",
        "ca",
        f"subjectAltName={','.join(server_names)}\nextendedKeyUsage=serverAuth\n",
    )
    _leaf(directory, "client", "ca", "extendedKeyUsage=clientAuth\n")
    return Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
    )


def find_stunnel() -> str | None:
    """Debian's ``stunnel4`` ships ``stunnel4`` (and usually a ``stunnel`` link)."""
    return shutil.which("stunnel4") or shutil.which("stunnel")


class TlsBroker:
    """tansu on a plaintext port advertising ``<advertised_host>:<tls_port>``, stunnel on
    ``tls_port`` in front of it. ``bootstrap`` is the TLS address clients use."""

    def __init__(
        self,
        pki: Pki,
        log_dir: Path,
        *,
        advertised_host: str = "localhost",
        require_client_cert: bool = True,
        start_timeout_s: float = 20.0,
    ) -> None:
        self.pki = pki
        self.log_dir = log_dir
        self.advertised_host = advertised_host
        self.require_client_cert = require_client_cert
        self.start_timeout_s = start_timeout_s
        self.kafka_port = 0
        self.tls_port = 0
        self._children: list[Child] = []

    @property
    def bootstrap(self) -> str:
        return f"{self.advertised_host}:{self.tls_port}"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()

    async def start(self) -> None:
        stunnel = find_stunnel()
        if stunnel is None:
            raise StackError("stunnel is not installed: apt-get install -y stunnel4")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.kafka_port = free_port()
        self.tls_port = free_port()
        while self.tls_port == self.kafka_port:
            self.tls_port = free_port()
        env = tansu_env()
        tansu = Child(
            "tansu",
            [
                str(find_tansu()),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.kafka_port}",
                "--advertised-listener-url",
                f"tcp://{self.advertised_host}:{self.tls_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            self.log_dir / "tansu-tls.log",
            env,
        )
        conf = self.log_dir / "stunnel.conf"
        verify = f"verifyChain = yes\nCAfile = {self.pki.ca}\n" if self.require_client_cert else ""
        conf.write_text(
            "foreground = yes\n"
            f"pid =\n"
            "debug = notice\n"
            "[kafka]\n"
            f"accept = 127.0.0.1:{self.tls_port}\n"
            f"connect = 127.0.0.1:{self.kafka_port}\n"
            f"cert = {self.pki.server_cert}\n"
            f"key = {self.pki.server_key}\n"
            f"{verify}"
        )
        proxy = Child("stunnel", [stunnel, str(conf)], self.log_dir / "stunnel.log", env)
        self._children = [tansu, proxy]
        deadline = time.monotonic() + self.start_timeout_s
        tansu.spawn()
        proxy.spawn()
        try:
            await poll_until_ready(
                tansu, f"127.0.0.1:{self.kafka_port}", _port_open(self.kafka_port), deadline
            )
            await poll_until_ready(
                proxy, f"127.0.0.1:{self.tls_port}", _port_open(self.tls_port), deadline
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for child in reversed(self._children):
            child.stop(5.0)
        self._children = []

    def log_tail(self) -> str:
        return "\n".join(c.log_tail(1500) for c in self._children)


def _port_open(port: int):  # noqa: ANN202 - a probe for poll_until_ready
    async def probe() -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()

    return probe
