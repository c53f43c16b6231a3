"""Where the cores went during a measurement: CPU time by role, from ``/proc`` (Linux).

``commentflow bench`` takes a :func:`snapshot` before and after its end-to-end flood and asks
:func:`cores_by_role` how many cores, on average, the worker's inference lanes, the rest of the
worker, the broker, Redis and the bench itself used, and how many stayed idle. From that and the
model's own CPU per comment it derives the most that end-to-end throughput can be next to the
model alone on the same cores (:func:`throughput_bound`).

A thread is counted by its operating-system name: the worker names its lanes
``inference-lane<N>`` (:mod:`workers.os_thread`). Without ``/proc`` (not Linux) there is no
snapshot and the bench leaves the breakdown out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "LANE_PREFIX",
    "TICKS_PER_S",
    "CpuSnapshot",
    "cores_by_role",
    "snapshot",
    "stat_ticks",
    "throughput_bound",
]

#: Clock ticks per second of ``/proc``'s CPU times.
TICKS_PER_S = int(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100
#: The operating-system name prefix of the worker's inference lanes (``workers.inference``).
LANE_PREFIX = "inference-lane"


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """Clock ticks at one moment: the machine's busy and idle, and each thread's of ``pids``."""

    wall_s: float
    busy_ticks: int  # every CPU, all but idle and iowait
    idle_ticks: int  # every CPU, idle + iowait
    threads: Mapping[tuple[int, int], tuple[str, int]]  # (pid, tid) -> (name, utime + stime)


def _machine_ticks() -> tuple[int, int]:
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    fields = (fields + [0] * 8)[:8]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, idle


def stat_ticks(path: str) -> tuple[str, int]:
    """A process's or thread's name and CPU ticks (utime + stime) from its ``/proc`` ``stat``
    file (``/proc/PID/stat``, ``/proc/PID/task/TID/stat``). Raises OSError when it is gone."""
    with open(path, encoding="utf-8", errors="replace") as f:
        stat = f.read()
    # the name is between the first "(" and the last ")": it may hold spaces and ")"
    rest = stat[stat.rindex(")") + 2 :].split()
    return stat[stat.index("(") + 1 : stat.rindex(")")], int(rest[11]) + int(rest[12])


def _thread_ticks(pid: int) -> dict[tuple[int, int], tuple[str, int]]:
    out: dict[tuple[int, int], tuple[str, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # gone, or no /proc
        return out
    for tid in tids:
        try:
            out[(pid, int(tid))] = stat_ticks(f"/proc/{pid}/task/{tid}/stat")
        except OSError:  # the thread ended meanwhile
            continue
    return out


def snapshot(pids: Mapping[str, int | None]) -> CpuSnapshot | None:
    """Ticks now, of the machine and of every thread of the processes in ``pids`` (role ->
    pid; ``None`` pids are skipped); ``None`` where there is no ``/proc``."""
    if not os.path.exists("/proc/stat"):
        return None
    busy, idle = _machine_ticks()
    threads: dict[tuple[int, int], tuple[str, int]] = {}
    for pid in {p for p in pids.values() if p}:
        threads.update(_thread_ticks(pid))
    return CpuSnapshot(time.monotonic(), busy, idle, threads)


def cores_by_role(
    before: CpuSnapshot, after: CpuSnapshot, roles: Mapping[str, int | None], *, worker: str
) -> dict[str, float]:
    """Average cores used between two snapshots by each role of ``roles`` (role -> pid), the
    ``worker`` role split into ``lanes`` (threads named :data:`LANE_PREFIX`...) and
    ``<worker>_other``; plus ``idle`` (the machine's), ``elsewhere`` (busy, but none of
    ``roles``: other processes, and threads of ``roles`` that ended between the snapshots) and
    ``cores`` (the machine's, busy + idle)."""
    hz = TICKS_PER_S
    dt = max(after.wall_s - before.wall_s, 1e-9)
    pid_role = {pid: role for role, pid in roles.items() if pid}
    used: dict[str, float] = {r: 0.0 for r in roles if r != worker}
    used |= {"lanes": 0.0, f"{worker}_other": 0.0}
    for key, (name, ticks) in after.threads.items():
        role = pid_role.get(key[0])
        if role is None:
            continue
        spent = ticks - before.threads.get(key, (name, 0))[1]
        if role == worker:
            role = "lanes" if name.startswith(LANE_PREFIX) else f"{worker}_other"
        used[role] += spent / hz / dt
    busy = (after.busy_ticks - before.busy_ticks) / hz / dt
    idle = (after.idle_ticks - before.idle_ticks) / hz / dt
    used["elsewhere"] = max(0.0, busy - sum(used.values()))
    used["idle"] = idle
    used["cores"] = busy + idle
    return used


def throughput_bound(model_cpu_ms: float, other_cpu_ms: float) -> float:
    """The most end-to-end throughput can be, as a share of the model alone's, when every
    comment costs the model ``model_cpu_ms`` of CPU and the rest of the pipeline
    ``other_cpu_ms`` on the same cores: ``model / (model + other)``.

    The model alone turns all the CPU it gets into comments; end to end, each comment also
    takes ``other_cpu_ms`` from the same cores, so at best (nothing idle that the model alone
    would have used) the ratio is the model's share of each comment's CPU.
    """
    if model_cpu_ms <= 0 or other_cpu_ms < 0:
        raise ValueError("CPU per comment must be positive (model) and not negative (rest)")
    return model_cpu_ms / (model_cpu_ms + other_cpu_ms)
