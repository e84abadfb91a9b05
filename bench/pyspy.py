"""py-spy on a service process during a bench phase, and the functions its samples land in.

py-spy is a bench-only tool: `make bench-profile` installs it into .venv-bench (pinned in
bench/profile-requirements.txt); it is never a dependency of the services. Samples are of
threads doing work (py-spy's default leaves idle threads out), so the shares below are shares
of the process's CPU, not of wall-clock time.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RATE = 200  # samples a second


def binary() -> str | None:
    beside = REPO / ".venv-bench" / "bin" / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


class Recording:
    """`py-spy record` of one process and its subprocesses, in collapsed-stack form."""

    def __init__(self, pid: int, out: Path, *, subprocesses: bool = False) -> None:
        exe = binary()
        if exe is None:
            raise SystemExit("py-spy not found: run `make bench-profile` (installs .venv-bench)")
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [exe, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw",
                "--nonblocking", "--output", str(out)]  # fmt: skip
        if subprocesses:
            argv.append("--subprocesses")
        self.out = out
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        """py-spy writes its file when interrupted."""
        self._process.send_signal(signal.SIGINT)
        self._process.wait(timeout=30)


def _frame_name(frame: str) -> str:
    """`function (/long/path/pkg/module.py:123)` -> `pkg/module.py:function`."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{'/'.join(path.split('/')[-2:])}:{name}" if path else name


OURS = ("accounts_service/", "imaging_service/")
# Frames that only say "the event loop / a thread was running something".
_PLUMBING = ("asyncio/", "threading.py", "runpy", "concurrent/futures", "multiprocessing/")


def top(
    path: Path, count: int = 12
) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(samples, [(function, share)] by the innermost function of ours on the stack, i.e. our
    function with the library code it calls, and by the innermost function of all)."""
    mine: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        samples = int(n)
        total += samples
        frames = [_frame_name(f) for f in stack.split(";")]
        own[frames[-1]] += samples
        ours = [f for f in frames if f.startswith(OURS) and not f.endswith(":<module>")]
        if ours:
            mine[ours[-1]] += samples
        else:
            library = [f for f in frames if not f.startswith(_PLUMBING) and "<" not in f]
            mine[f"(no frame of ours) {library[0] if library else frames[-1]}"] += samples
    if not total:
        return 0, [], []
    return total, _shares(mine, total, count), _shares(own, total, count)


def _shares(counter: Counter[str], total: int, count: int) -> list[tuple[str, float]]:
    return [(name, n / total) for name, n in counter.most_common(count)]


def print_top(title: str, path: Path, count: int = 12) -> None:
    total, mine, own = top(path, count)
    print(f"\n{title}: {total} samples of busy threads at {RATE} Hz ({path})")
    print("  by our innermost function (with the library code it calls):")
    for name, share in mine:
        print(f"    {100 * share:5.1f}%  {name}")
    print("  by innermost function:")
    for name, share in own:
        print(f"    {100 * share:5.1f}%  {name}")
