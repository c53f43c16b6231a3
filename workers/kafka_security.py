"""How every Kafka client of commentflow authenticates and encrypts: one config, one mapping.

:class:`KafkaSecurity` holds the ``kafka_security_protocol``, ``kafka_sasl_*`` and
``kafka_ssl_*`` settings (named as in :class:`~streamer.settings.Settings`, so
:meth:`KafkaSecurity.of` reads them from the settings). :meth:`KafkaSecurity.client_kwargs`
turns them into the keyword arguments of any aiokafka client (producer, consumer, admin); the
Faust app gets the same SSL context and SASL values through ``streamer.app.broker_credentials``.
The worker, the producer CLI, the readiness probe and the local tools connect the same way.

Secrets (the SASL password, the client key's password) are fields with ``repr=False``: they never
show in a ``repr``, a log line or an exception message of this module.

:func:`check_tls` is the worker's pre-flight: one TLS handshake with each bootstrap address, so a
certificate that does not verify (wrong CA, hostname mismatch) stops the worker with one clear
line instead of an endless reconnect loop inside the Kafka client. Connection errors (a broker
that is not up yet) are left to the client's own retries.

OAUTHBEARER takes its token from a file that something outside the worker keeps fresh
(:mod:`workers.kafka_oauth`): fetching tokens is identity-provider specific (OIDC client
credentials, MSK IAM, a cloud workload identity) and stays out of the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field, fields
from typing import Any, Self

__all__ = [
    "PROTOCOLS",
    "SASL_MECHANISMS",
    "PLAINTEXT",
    "KafkaSecurity",
    "KafkaSecurityError",
    "TlsCheckFailed",
    "check_tls",
]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")


class KafkaSecurityError(ValueError):
    """A security setting, or a combination of them, that cannot work (one line, no secret)."""


class TlsCheckFailed(Exception):
    """A broker's certificate did not verify (or it refused ours): configuration, not transient."""


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """The Kafka client security settings; validated on construction."""

    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_sasl_oauth_token_file: str = ""
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    kafka_ssl_key_password: str = field(default="", repr=False)
    kafka_ssl_check_hostname: bool = True

    @classmethod
    def of(cls, settings: Any) -> Self:
        """This config's fields, read by name from ``settings`` (any object that has them)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    def __post_init__(self) -> None:
        protocol = self.kafka_security_protocol
        if protocol not in PROTOCOLS:
            raise KafkaSecurityError(
                f"kafka_security_protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}"
            )
        if self.uses_sasl:
            if self.kafka_sasl_mechanism not in SASL_MECHANISMS:
                raise KafkaSecurityError(
                    f"kafka_sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}, "
                    f"not {self.kafka_sasl_mechanism!r}"
                )
            if self.uses_oauth:
                if not self.kafka_sasl_oauth_token_file:
                    raise KafkaSecurityError("OAUTHBEARER needs kafka_sasl_oauth_token_file")
                if self.kafka_sasl_username or self.kafka_sasl_password:
                    raise KafkaSecurityError(
                        "OAUTHBEARER takes a token file, not a SASL username or password"
                    )
            else:
                if not self.kafka_sasl_username:
                    raise KafkaSecurityError(f"{protocol} needs kafka_sasl_username")
                if not self.kafka_sasl_password:
                    raise KafkaSecurityError(
                        f"{protocol} needs a SASL password: COMMENTFLOW_KAFKA_SASL_PASSWORD or "
                        "COMMENTFLOW_KAFKA_SASL_PASSWORD_FILE"
                    )
                if self.kafka_sasl_oauth_token_file:
                    raise KafkaSecurityError(
                        "kafka_sasl_oauth_token_file needs kafka_sasl_mechanism OAUTHBEARER"
                    )
        elif (
            self.kafka_sasl_username or self.kafka_sasl_password or self.kafka_sasl_oauth_token_file
        ):
            raise KafkaSecurityError(
                f"SASL credentials are set but kafka_security_protocol is {protocol}: "
                "use SASL_SSL (or SASL_PLAINTEXT)"
            )
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not self.uses_tls and any(tls_files):
            raise KafkaSecurityError(
                f"kafka_ssl_* files are set but kafka_security_protocol is {protocol}: "
                "use SSL or SASL_SSL"
            )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise KafkaSecurityError("kafka_ssl_keyfile needs kafka_ssl_certfile (mTLS)")
        if self.kafka_ssl_key_password and not self.kafka_ssl_certfile:
            raise KafkaSecurityError("a client key password is set without kafka_ssl_certfile")

    @property
    def uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def uses_oauth(self) -> bool:
        return self.uses_sasl and self.kafka_sasl_mechanism == "OAUTHBEARER"

    def oauth_token_provider(self) -> Any:
        """The ``AbstractTokenProvider`` of OAUTHBEARER (``None`` otherwise)."""
        if not self.uses_oauth:
            return None
        from workers.kafka_oauth import FileTokenProvider

        return FileTokenProvider(self.kafka_sasl_oauth_token_file)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context (``None`` without TLS): the CA (or the system's trust store),
        the client certificate for mTLS, hostname verification as configured.

        Raises :class:`KafkaSecurityError` naming the file that cannot be read.
        """
        if not self.uses_tls:
            return None
        from aiokafka.helpers import create_ssl_context

        try:
            context = create_ssl_context(
                cafile=self.kafka_ssl_cafile or None,
                certfile=self.kafka_ssl_certfile or None,
                keyfile=self.kafka_ssl_keyfile or None,
                password=self.kafka_ssl_key_password or None,
            )
        except (OSError, ssl.SSLError) as exc:
            # strerror / reason only: never the password, and the paths are settings, not secrets
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc)
            raise KafkaSecurityError(
                f"cannot load the Kafka TLS files (ca={self.kafka_ssl_cafile or 'system'}, "
                f"cert={self.kafka_ssl_certfile or '-'}, key={self.kafka_ssl_keyfile or '-'}): "
                f"{reason}"
            ) from None
        context.check_hostname = self.kafka_ssl_check_hostname
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        kwargs: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.uses_oauth:
            kwargs.update(
                sasl_mechanism="OAUTHBEARER",
                sasl_oauth_token_provider=self.oauth_token_provider(),
            )
        elif self.uses_sasl:
            kwargs.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password,
            )
        return kwargs

    def describe(self) -> str:
        """One loggable line: protocol, mechanism, user and files; never a secret."""
        parts = [self.kafka_security_protocol]
        if self.uses_oauth:
            parts.append(f"OAUTHBEARER token from {self.kafka_sasl_oauth_token_file}")
        elif self.uses_sasl:
            parts.append(f"{self.kafka_sasl_mechanism} as {self.kafka_sasl_username}")
        if self.uses_tls:
            parts.append(f"ca={self.kafka_ssl_cafile or 'system'}")
            if self.kafka_ssl_certfile:
                parts.append(f"client cert={self.kafka_ssl_certfile}")
            if not self.kafka_ssl_check_hostname:
                parts.append("hostname NOT verified")
        return " ".join(parts)


#: How long check_tls listens after the handshake for the server's refusal of our certificate.
_ALERT_WAIT_S = 0.5

#: No TLS, no SASL: the embedded dev stack, and the default.
PLAINTEXT = KafkaSecurity()


async def check_tls(bootstrap: str, security: KafkaSecurity, timeout_s: float = 10.0) -> None:
    """One TLS handshake with each ``host:port`` of ``bootstrap``; a no-op without TLS.

    Raises :class:`TlsCheckFailed` when a certificate does not verify or the broker refuses the
    handshake (our client certificate, a protocol mismatch). Unreachable brokers and timeouts
    pass: the Kafka client retries those, and a broker starting after the worker is normal.
    """
    context = security.ssl_context()
    if context is None:
        return
    for address in [a.strip() for a in bootstrap.split(",") if a.strip()]:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port), ssl=context, server_hostname=host),
                timeout_s,
            )
        except ssl.SSLError as exc:
            raise TlsCheckFailed(f"TLS handshake with {address} failed: {_reason(exc)}") from None
        except (OSError, TimeoutError):
            continue  # not reachable (yet): the client's retries handle it
        try:
            # TLS 1.3: a server refuses our client certificate only after the handshake, with an
            # alert; a Kafka broker never speaks first, so a short read sees either that or nothing
            await asyncio.wait_for(reader.read(1), _ALERT_WAIT_S)
        except ssl.SSLError as exc:
            raise TlsCheckFailed(f"{address} refused the TLS session: {_reason(exc)}") from None
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _reason(exc: ssl.SSLError) -> str:
    verify = getattr(exc, "verify_message", None)
    if verify:
        return f"{exc.reason}: {verify}" if exc.reason else str(verify)
    return str(exc.reason or exc)
