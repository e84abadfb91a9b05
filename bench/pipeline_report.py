"""The tables and summary lines of bench/pipeline.py, and the results they are made of."""

from __future__ import annotations

import argparse
import math
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

# Issue 13: bare render CPU / worker CPU at least this, per class.
EFFICIENCY_TARGETS = {"12mp": 0.90, "0.3mp": 0.80}
P99_OVER_P50 = 3.0  # e2e p99 at most this many times p50, every class
LATENCY_MARGIN_MS = {"0.3mp": 50.0}  # e2e p50 at most render + this, for these classes
WORKER = ("render processes", "imaging")
SLOWEST = 5  # users listed with their timings in the latency report


@dataclass
class Run:
    avatars: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)  # group -> CPU seconds

    @property
    def rate(self) -> float:
        return self.avatars / self.seconds

    def ms(self, *groups: str) -> float:
        """CPU ms per avatar of these groups together."""
        return 1000 * sum(self.cpu[g] for g in groups) / self.avatars


@dataclass
class Latency:
    e2e_ms: list[float] = field(default_factory=list)
    create_ms: list[float] = field(default_factory=list)
    job_ms: list[float] = field(default_factory=list)
    failed: int = 0
    stages_ms: dict[str, float] = field(default_factory=dict)  # from the services' metrics
    cpu: dict[str, float] = field(default_factory=dict)
    e2e_by_user: dict[str, float] = field(default_factory=dict)
    job_by_user: dict[str, float] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)  # user -> s from the phase's start


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@dataclass
class ClassResult:
    cls: str
    bare: list[Run]  # one per round, beside the drain of the same round
    drained: list[Run]
    latency: Latency
    render_ms: float

    @property
    def render_cpu_ms(self) -> float:
        """The bare renderer's CPU per avatar over every round."""
        return _per_avatar(self.bare, ("render (bare)",))

    @property
    def worker_cpu_ms(self) -> float:
        """The worker's CPU (render processes + main process) per avatar over every drain."""
        return _per_avatar(self.drained, WORKER)

    @property
    def ratio(self) -> float:
        return self.render_cpu_ms / self.worker_cpu_ms

    def round_ratios(self) -> list[float]:
        return [
            b.ms("render (bare)") / d.ms(*WORKER)
            for b, d in zip(self.bare, self.drained, strict=True)
        ]


def _per_avatar(runs: Sequence[Run], groups: Sequence[str]) -> float:
    cpu = sum(run.cpu[g] for run in runs for g in groups)
    return 1000 * cpu / sum(run.avatars for run in runs)


CPU_ORDER = ("render processes", "imaging", "accounts", "weed", "postgres", "nats", "bench client")


def cpu_rows(cpu: dict[str, float], avatars: int) -> list[str]:
    """Cells (ms per avatar, share of the machine's busy time) for each row of CPU_ORDER, the
    rest of the machine and the whole machine."""
    busy = cpu["machine"]
    rest = busy - sum(cpu[g] for g in CPU_ORDER)
    values = [cpu[g] for g in CPU_ORDER] + [rest, busy]
    return [f"{1000 * v / avatars:.1f} | {v / busy:.0%}" for v in values]


def _total(runs: Sequence[Run]) -> tuple[dict[str, float], int, float]:
    total: Counter[str] = Counter()
    for run in runs:
        total.update(run.cpu)
    return dict(total), sum(r.avatars for r in runs), sum(r.seconds for r in runs)


def report(results: list[ClassResult], args: argparse.Namespace) -> None:
    print(
        f"\nworker efficiency: {args.processes} render processes; {args.rounds} rounds of a bare "
        "run and a drain (the worker alone on a backlog), alternating; CPU ms per avatar"
    )
    print("| class | users/drain | render (bare) | worker | ratio | rounds (ratio) "
          "| spread | drain avatars/s | bare avatars/s |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for r in results:
        ratios = r.round_ratios()
        spread = max(ratios) - min(ratios)
        print(
            f"| {r.cls} | {r.drained[0].avatars} | {r.render_cpu_ms:.1f} | {r.worker_cpu_ms:.1f} "
            f"| {r.ratio:.2f} | {', '.join(f'{x:.2f}' for x in ratios)} | {spread:.2f} "
            f"| {statistics.median(d.rate for d in r.drained):.1f} "
            f"| {statistics.median(b.rate for b in r.bare):.1f} |"
        )
    _latency_table(results, args)
    for r in results:
        _cpu_table(r, args)


def _latency_table(results: list[ClassResult], args: argparse.Namespace) -> None:
    print(f"\ne2e latency at {args.rate:g} users/s, ms: e2e = CreateUser sent to READY seen on "
          "WatchUser; create = CreateUser's answer; job = the worker's job (its log); render = "
          "the same images alone in the bench process")  # fmt: skip
    print("| class | users | e2e p50 | e2e p90 | e2e p99 | e2e max | create p50 | job p50 "
          "| job p99 | render | failed |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        lat = r.latency
        print(
            f"| {r.cls} | {len(lat.e2e_ms)} | {percentile(lat.e2e_ms, 0.5):.0f} "
            f"| {percentile(lat.e2e_ms, 0.9):.0f} | {percentile(lat.e2e_ms, 0.99):.0f} "
            f"| {max(lat.e2e_ms, default=math.nan):.0f} | {percentile(lat.create_ms, 0.5):.1f} "
            f"| {percentile(lat.job_ms, 0.5):.0f} | {percentile(lat.job_ms, 0.99):.0f} "
            f"| {r.render_ms:.0f} | {lat.failed} |"
        )
    stages = sorted({name for r in results for name in r.latency.stages_ms})
    if stages:
        print("\nthe same, as the services measure it (means of their histograms, ms)")
        print("| class | " + " | ".join(stages) + " |")
        print("| --- " + "| ---: " * len(stages) + "|")
        for r in results:
            cells = [
                f"{r.latency.stages_ms[s]:.1f}" if s in r.latency.stages_ms else "" for s in stages
            ]
            print(f"| {r.cls} | " + " | ".join(cells) + " |")
    for r in results:
        lat = r.latency
        slowest = sorted(lat.e2e_by_user.items(), key=lambda item: -item[1])[:SLOWEST]
        cells = [
            f"{ms:.0f} (sent at {lat.sent.get(user, math.nan):.1f} s, "
            f"job {lat.job_by_user.get(user, math.nan):.0f})"
            for user, ms in slowest
        ]
        print(f"{r.cls} slowest e2e ms: " + ", ".join(cells))


def _cpu_table(r: ClassResult, args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    drained, avatars, seconds = _total(r.drained)
    low_avatars = len(r.latency.e2e_ms)
    print(
        f"\nCPU per avatar, {r.cls} (ms, share of the machine's busy time): drains ({avatars} "
        f"avatars, machine {drained['machine'] / (cores * seconds):.0%} busy) | {args.rate:g}/s "
        f"({low_avatars})"
    )
    print("| process | drain | share | low rate | share |")
    print("| --- " + "| ---: " * 4 + "|")
    columns = [cpu_rows(drained, avatars), cpu_rows(r.latency.cpu, low_avatars)]
    names = [*CPU_ORDER, "rest of the machine", "machine busy"]
    for i, name in enumerate(names):
        print(f"| {name} | " + " | ".join(column[i] for column in columns) + " |")
    print(f"| bare renderer, for comparison | {r.render_cpu_ms:.1f} | | | |")


def summary(results: list[ClassResult]) -> tuple[list[str], list[str]]:
    """The summary lines (efficiency of every class, then latency of every class) and the
    targets missed."""
    lines, missed = [], []
    for r in results:
        lines.append(
            f"worker efficiency class={r.cls} render_cpu_ms={r.render_cpu_ms:.1f} "
            f"worker_cpu_ms={r.worker_cpu_ms:.1f} ratio={r.ratio:.2f}"
        )
        target = EFFICIENCY_TARGETS.get(r.cls)
        if target is not None and round(r.ratio, 2) < target:
            missed.append(f"{r.cls} worker efficiency {r.ratio:.2f} < {target}")
    for r in results:
        p50, p99 = percentile(r.latency.e2e_ms, 0.5), percentile(r.latency.e2e_ms, 0.99)
        lines.append(
            f"e2e latency class={r.cls} p50_ms={p50:.0f} p99_ms={p99:.0f} "
            f"render_ms={r.render_ms:.0f}"
        )
        if not p99 <= P99_OVER_P50 * p50:
            missed.append(f"{r.cls} e2e p99 {p99:.0f} ms > {P99_OVER_P50:g} x p50 {p50:.0f} ms")
        margin = LATENCY_MARGIN_MS.get(r.cls)
        if margin is not None and not p50 <= r.render_ms + margin:
            missed.append(
                f"{r.cls} e2e p50 {p50:.0f} ms > render {r.render_ms:.0f} ms + {margin:g}"
            )
    return lines, missed
