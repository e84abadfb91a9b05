"""Refusing a bomb costs no memory: every reject file, rendered in a fresh process that measures
its own peak resident memory (Pillow's pixel buffers are C allocations, which tracemalloc does
not see; the kernel's high-water mark, VmHWM, does. Not ru_maxrss: after fork and exec it starts
from the parent's size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.corpus import CODES, REPO_ROOT, manifest, read

CONTROL = "geom_exactly_50mp_10000x5000.png"  # 50 MP, at the limit: it must render
CHILD = """
import json, sys
from pathlib import Path
from imaging_service.render import ImageRejected, render

def peak_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

folder = Path(sys.argv[1])
files = {path.name: path.read_bytes() for path in sorted(folder.iterdir())}
control = files.pop(sys.argv[2])
render(files.pop("warm-up.png"))  # plugins and caches loaded before the baseline
before = peak_kib()
codes = {}
for name, data in files.items():
    try:
        render(data)
        codes[name] = "rendered"
    except ImageRejected as exc:
        codes[name] = exc.code
after_rejects = peak_kib()
render(control)
print(json.dumps({"codes": codes, "rejects_kib": after_rejects - before,
                  "control_kib": peak_kib() - after_rejects}))
"""


def run_child(tmp_path: Path, entries: list[dict[str, Any]]) -> dict[str, Any]:
    for entry in entries:
        (tmp_path / entry["name"]).write_bytes(read(entry["name"]))
    (tmp_path / "warm-up.png").write_bytes(read("geom_64x64.png"))
    (tmp_path / CONTROL).write_bytes(read(CONTROL))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), CONTROL],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_every_reject_file_is_refused_without_allocating_its_pixels(tmp_path: Path) -> None:
    rejects = [e for e in manifest()["files"] if e["expected"] == "reject"]
    assert any(e["reason"] == "too_many_pixels" for e in rejects)
    result = run_child(tmp_path, rejects)
    for entry in rejects:
        assert result["codes"][entry["name"]] in {CODES[r] for r in entry["accept_reasons"]}
    # The smallest bomb, 52 MP, would need 52 MB for its pixels at one byte each; refusing all
    # of them (and decoding the cut and corrupt files as far as they go) stays far below.
    assert result["rejects_kib"] < 12 * 1024
    # The measurement does see a decode: the 50 MP file at the limit takes more than 40 MB.
    assert result["control_kib"] > 40 * 1024
