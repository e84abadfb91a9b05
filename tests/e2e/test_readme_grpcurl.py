"""The README's grpcurl commands, run as written against the running services."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import REPO, Service

MARKER = "<!-- tested by tests/e2e/test_readme_grpcurl.py -->"


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    after = text.split(MARKER, 1)[1]
    match = re.search(r"```sh\n(.*?)```", after, re.S)
    assert match, "no sh block after the marker"
    return match.group(1)


def test_readme_grpcurl_commands_work_as_written(pipeline: tuple[Service, Service]) -> None:
    accounts, _ = pipeline
    script = readme_block()
    assert "localhost:50051" in script
    script = script.replace("localhost:50051", accounts.addr)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, f"{result.stderr}\n{out}"
    for expected in (
        "accounts.v1.AccountsService\n",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "rpc CreateUser ( .accounts.v1.CreateUserRequest ) returns ( .accounts.v1.User );",
        '"status": "SERVING"',
        '"thumbnail_status": "THUMBNAIL_STATUS_PENDING"',
        '"thumbnail_status": "THUMBNAIL_STATUS_READY"',
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"
