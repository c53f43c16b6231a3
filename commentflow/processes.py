"""Child processes of the embedded stack and of local workers: spawn, wait until ready, stop.

A :class:`Child` runs in its own process group with its output in a log file and, on Linux, dies
with its parent (``PR_SET_PDEATHSIG``). :func:`poll_until_ready` is the one wait for a child to
answer (it fails early when the child exits); :func:`stop_process` the one terminate-then-kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

from commentflow.errors import CommentflowError

__all__ = [
    "Child",
    "ChildExited",
    "StackError",
    "check_alive",
    "free_port",
    "poll_until_ready",
    "port_is_free",
    "stop_process",
]


class StackError(CommentflowError):
    """The embedded stack (or one of its children) could not be found, started or used."""


class ChildExited(StackError):
    """A child exited while it was starting (its port taken, a bad flag): the log tail says why."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the usual race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


async def poll_until_ready(
    child: Child, address: str, probe: Callable[[], Awaitable[object]], deadline: float
) -> None:
    """Await ``probe`` until it returns without raising; fail if ``child`` exits first
    (:class:`ChildExited`) or ``deadline`` passes (:class:`StackError`, with the log tail)."""
    while True:
        check_alive(child)
        try:
            await probe()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise StackError(
                    f"{child.name} on {address} did not answer in time ({exc!r}); "
                    f"log {child.log_path}:\n{child.log_tail()}"
                ) from exc
        await asyncio.sleep(0.05)


def stop_process(
    proc: subprocess.Popen[bytes] | None, timeout: float, *, kill: bool = False
) -> int | None:
    """SIGTERM (SIGKILL with ``kill``), wait up to ``timeout``, then SIGKILL; blocking.

    Returns the exit code (``None`` when there was no process). Safe on a process that is gone.
    """
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if kill:
                proc.kill()
            else:
                proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    return proc.returncode


def check_alive(child: Child) -> None:
    assert child.process is not None
    code = child.process.poll()
    if code is not None:
        raise ChildExited(
            f"{child.name} exited with code {code} while starting; "
            f"log {child.log_path}:\n{child.log_tail()}"
        )


def die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class Child:
    """One child process with its log file; stopping is synchronous and bounded."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def spawn(self) -> subprocess.Popen[bytes]:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
        self._log.flush()
        # Spawned on the event loop's thread on purpose: PDEATHSIG fires when the forking
        # *thread* exits, so never from a short-lived worker thread.
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # own process group: a terminal's Ctrl-C reaches only us
            preexec_fn=die_with_parent(os.getpid()),  # only prctl: safe between fork and exec
        )
        return self.process

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float, *, kill: bool = False) -> None:
        stop_process(self.process, timeout, kill=kill)
        if self._log is not None:
            self._log.close()
            self._log = None
