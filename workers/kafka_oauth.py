"""SASL/OAUTHBEARER with a token kept fresh outside the worker, in a file.

aiokafka asks an ``AbstractTokenProvider`` for a token at every SASL login (every new broker
connection). How a token is obtained differs per identity provider (client credentials against an
OIDC endpoint, MSK IAM signing, a cloud workload identity), so commentflow does not fetch tokens
itself: a sidecar, an init container or a Kubernetes projected service-account token writes the
current one to a file, and :class:`FileTokenProvider` reads that file at each login. A broker
that expires sessions (``connections.max.reauth.ms``) closes the connection; the client reconnects
and logs in again with whatever the file holds then.

Imported only when OAUTHBEARER is configured (it imports aiokafka).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.abc import AbstractTokenProvider

__all__ = ["FileTokenProvider", "TokenFileError"]


class TokenFileError(Exception):
    """The token file is missing, unreadable or empty (the message never contains a token)."""


class FileTokenProvider(AbstractTokenProvider):
    """The token in ``path`` (surrounding whitespace stripped), read again at every login."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def token(self) -> str:
        return await asyncio.to_thread(self.read)

    def read(self) -> str:
        """The current token (blocking: a small file read)."""
        try:
            value = Path(self.path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokenFileError(f"OAUTHBEARER token file {self.path}: {exc.strerror}") from None
        if not value:
            raise TokenFileError(f"OAUTHBEARER token file {self.path} is empty")
        return value

    def __repr__(self) -> str:
        return f"<FileTokenProvider {self.path}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileTokenProvider) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)
