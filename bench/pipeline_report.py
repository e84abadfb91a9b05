"""The tables and summary lines of bench/pipeline.py, and the results they are made of."""

from __future__ import annotations

import argparse
import math
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

EFFICIENCY_TARGET = 0.85
LATENCY_MARGIN_MS = 50.0


@dataclass
class Run:
    avatars: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)  # group -> CPU seconds

    @property
    def rate(self) -> float:
        return self.avatars / self.seconds


@dataclass
class Latency:
    e2e_ms: list[float] = field(default_factory=list)
    create_ms: list[float] = field(default_factory=list)
    job_ms: list[float] = field(default_factory=list)
    failed: int = 0
    stages_ms: dict[str, float] = field(default_factory=dict)  # from the services' metrics
    cpu: dict[str, float] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@dataclass
class ClassResult:
    cls: str
    bare: list[Run]  # one per round, beside the pipeline run of the same round
    piped: list[Run]
    drained: Run
    drain_bare: Run
    latency: Latency
    render_ms: float

    @property
    def efficiency(self) -> float:
        return statistics.median(
            p.rate / b.rate for p, b in zip(self.piped, self.bare, strict=True)
        )

    @property
    def rate(self) -> float:
        return statistics.median(p.rate for p in self.piped)


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
        f"\nthroughput: {args.processes} render processes; pipeline/bare of each of "
        f"{args.rounds} rounds, efficiency = their median; drain = the worker alone on a backlog"
    )
    print("| class | users/run | bare avatars/s | pipeline avatars/s | efficiency | rounds "
          "| drain avatars/s | drain/bare |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for r in results:
        rounds = ", ".join(
            f"{p.rate:.1f}/{b.rate:.1f}" for p, b in zip(r.piped, r.bare, strict=True)
        )
        print(
            f"| {r.cls} | {r.piped[0].avatars} | {statistics.median(b.rate for b in r.bare):.1f} "
            f"| {r.rate:.1f} | {r.efficiency:.2f} | {rounds} | {r.drained.rate:.1f} "
            f"| {r.drained.rate / r.drain_bare.rate:.2f} |"
        )
    _latency_table(results, args)
    for r in results:
        _cpu_table(r, args)


def _latency_table(results: list[ClassResult], args: argparse.Namespace) -> None:
    print(f"\ne2e latency at {args.rate:g} users/s, ms: e2e = CreateUser sent to READY seen on "
          "WatchUser; create = CreateUser's answer; job = the worker's job (its log); render = "
          "the same images alone in the bench process")  # fmt: skip
    print("| class | users | e2e p50 | e2e p99 | create p50 | job p50 | render | failed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        lat = r.latency
        print(
            f"| {r.cls} | {len(lat.e2e_ms)} | {percentile(lat.e2e_ms, 0.5):.0f} "
            f"| {percentile(lat.e2e_ms, 0.99):.0f} | {percentile(lat.create_ms, 0.5):.1f} "
            f"| {percentile(lat.job_ms, 0.5):.0f} | {r.render_ms:.0f} | {lat.failed} |"
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


def _cpu_table(r: ClassResult, args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    piped, avatars, seconds = _total(r.piped)
    drained, drain_avatars, drain_seconds = _total([r.drained])
    low_avatars = len(r.latency.e2e_ms)
    bare_cpu = sum(b.cpu["render (bare)"] for b in r.bare) / sum(b.avatars for b in r.bare)
    print(
        f"\nCPU per avatar, {r.cls} (ms, share of the machine's busy time): pipeline runs "
        f"({avatars} avatars, machine {piped['machine'] / (cores * seconds):.0%} busy) | drain "
        f"({drain_avatars}, {drained['machine'] / (cores * drain_seconds):.0%}) | "
        f"{args.rate:g}/s ({low_avatars})"
    )
    print("| process | pipeline | share | drain | share | low rate | share |")
    print("| --- " + "| ---: " * 6 + "|")
    columns = [cpu_rows(piped, avatars), cpu_rows(drained, drain_avatars),
               cpu_rows(r.latency.cpu, low_avatars)]  # fmt: skip
    names = [*CPU_ORDER, "rest of the machine", "machine busy"]
    for i, name in enumerate(names):
        print(f"| {name} | " + " | ".join(column[i] for column in columns) + " |")
    worker = (piped["render processes"] + piped["imaging"]) / avatars
    print(
        f"bare renderer {1000 * bare_cpu:.1f} ms/avatar; in the pipeline runs it is "
        f"{bare_cpu * avatars / piped['machine']:.0%} of the machine's busy time and "
        f"{bare_cpu / worker:.0%} of the worker's (render processes + imaging)"
    )


def summary(results: list[ClassResult]) -> tuple[list[str], list[str]]:
    r = results[0]
    p50, p99 = percentile(r.latency.e2e_ms, 0.5), percentile(r.latency.e2e_ms, 0.99)
    lines = [
        f"pipeline efficiency={r.efficiency:.2f} avatars_per_s={r.rate:.1f}",
        f"e2e latency p50_ms={p50:.0f} p99_ms={p99:.0f} render_ms={r.render_ms:.0f}",
    ]
    missed = []
    if r.efficiency < EFFICIENCY_TARGET:
        missed.append(f"{r.cls} pipeline efficiency {r.efficiency:.2f} < {EFFICIENCY_TARGET}")
    if not p50 <= r.render_ms + LATENCY_MARGIN_MS:
        missed.append(
            f"{r.cls} e2e p50 {p50:.0f} ms > render {r.render_ms:.0f} ms + {LATENCY_MARGIN_MS:g}"
        )
    return lines, missed
