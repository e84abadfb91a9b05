"""CPU time of process trees, read from /proc: a cheap, honest breakdown of where a run went.

A tree's time is the sum over its live processes of their own time and the time of the children
they have reaped (a render process that was recycled, a PostgreSQL backend that ended), so it
counts every process that ran in the tree during an interval, whether or not it is still there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _Stat:
    ppid: int
    own: float  # seconds: utime + stime
    reaped: float  # seconds: cutime + cstime


def _stat(pid: int) -> _Stat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the name may contain spaces and parentheses
    ticks = [int(v) for v in fields[11:15]]  # utime stime cutime cstime
    return _Stat(int(fields[1]), (ticks[0] + ticks[1]) / _TICKS, (ticks[2] + ticks[3]) / _TICKS)


def _all() -> dict[int, _Stat]:
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    return stats


def _descendants(root: int, stats: Mapping[int, _Stat]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def snapshot(groups: Mapping[str, tuple[int | None, bool]]) -> dict[str, float]:
    """CPU seconds so far of each group: name -> (pid, with its descendants or not)."""
    stats = _all()
    out: dict[str, float] = {}
    for name, (pid, tree) in groups.items():
        if pid is None or pid not in stats:
            out[name] = 0.0
            continue
        if tree:
            out[name] = sum(stats[p].own + stats[p].reaped for p in _descendants(pid, stats))
        else:
            out[name] = stats[pid].own
    return out


def machine_busy() -> float:
    """CPU seconds the whole machine has spent not idle (all cores), from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in first]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / _TICKS


def delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}
