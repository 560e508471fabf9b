"""Resident memory and CPU time of the server's process tree, read from Linux ``/proc``.

The tree is the ``wallet-server`` process and its descendants (worker processes when it runs
with ``--workers``). PostgreSQL is not part of it: the embedded database daemonizes, and any
``postgres`` process found in the tree is left out all the same, so the figures are the
wallet server's own, and so is the ``multiprocessing`` resource tracker of a server that
spawns workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
EXCLUDED_COMMANDS = frozenset({"postgres", "pg_ctl"})


@dataclass(frozen=True)
class Usage:
    """A snapshot of the tree: summed resident memory and CPU time so far."""

    rss_kib: int
    cpu_s: float
    processes: int

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024.0


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (field 3 onwards)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _command(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process visible now."""
    found: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            found[int(entry.name)] = int(fields[1])
    return found


def _cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _counted(pid: int) -> bool:
    return _command(pid) not in EXCLUDED_COMMANDS and "resource_tracker" not in _cmdline(pid)


def tree(root: int) -> list[int]:
    """``root`` and its live descendants, without database or helper processes."""
    parents = _parents()
    members = [root]
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        members.extend(children)
        frontier.extend(children)
    return [pid for pid in members if _counted(pid)]


def rss_kib(pid: int) -> int:
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the name: state(0) ppid(1) ... utime(11) stime(12).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_cpu_seconds(postmaster: int) -> float:
    """CPU time so far of a PostgreSQL cluster: the postmaster, its live children (backends
    and background processes) and the children it has reaped."""
    fields = _stat_fields(postmaster)
    if fields is None:
        return 0.0
    # utime(11) stime(12) cutime(13) cstime(14): the last two are reaped children's.
    own = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(pid) for pid, ppid in _parents().items() if ppid == postmaster)


def host_busy_seconds() -> float:
    """CPU time so far spent on anything but idle and I/O wait, summed over all CPUs."""
    fields = (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle, iowait
    # guest time is already counted in user and nice
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def usage(root: int) -> Usage:
    pids = tree(root)
    return Usage(
        rss_kib=sum(rss_kib(pid) for pid in pids),
        cpu_s=sum(cpu_seconds(pid) for pid in pids),
        processes=len(pids),
    )
