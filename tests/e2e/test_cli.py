"""The command-line client against the running services: create, get, list, watch, demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import REPO, Service
from tests.e2e.support import unique_email

SAMPLE = REPO / "docs" / "sample-avatar.jpg"


def cli(addr: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "accounts_service.cli", "--addr", addr, *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_create_wait_prints_each_state_with_progress_then_get_list_watch(
    pipeline: tuple[Service, Service],
) -> None:
    accounts, _ = pipeline
    email = unique_email("cli")
    created = cli(accounts.addr, "create", "--email", email, "--name", "CLI", str(SAMPLE), "--wait")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    user_id = lines[0].split()[0]
    assert lines[0].endswith("PENDING")
    progress = [line for line in lines[1:] if line.strip().startswith("[")]
    assert progress and progress[-1].endswith("READY"), created.stdout
    assert all(" s] " in line for line in progress)

    got = cli(accounts.addr, "get", user_id)
    assert got.returncode == 0 and "THUMBNAIL_STATUS_READY" in got.stdout
    listed = cli(accounts.addr, "list", "--all", "--page-size", "7")
    assert listed.returncode == 0 and f"{user_id} {email}" in listed.stdout
    watched = cli(accounts.addr, "watch", user_id)
    assert watched.returncode == 0 and watched.stdout.strip().endswith("READY")
    missing = cli(accounts.addr, "get", "6f1c2a57-0000-4000-8000-000000000000")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_demo_saves_three_thumbnails(pipeline: tuple[Service, Service], tmp_path: Path) -> None:
    accounts, _ = pipeline
    result = cli(accounts.addr, "demo", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "READY after" in result.stdout
    for name in ("small", "medium", "large"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
