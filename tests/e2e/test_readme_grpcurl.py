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
        "rpc WatchUser ( .accounts.v1.WatchUserRequest ) returns ( stream .accounts.v1.User );",
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    # READY once from the WatchUser stream, once from the final GetUser.
    assert out.count('"thumbnail_status": "THUMBNAIL_STATUS_READY"') == 2, out


def grpcurl(addr: str, method: str, body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "grpcurl"), "-plaintext", "-max-time", "20",
         "-d", body, addr, f"accounts.v1.AccountsService/{method}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_grpcurl_sees_status_codes_and_field_violations(
    pipeline: tuple[Service, Service],
) -> None:
    """grpcurl exits with 64 + the status code and prints google.rpc.BadRequest."""
    accounts, _ = pipeline
    bad = grpcurl(accounts.addr, "CreateUser", '{"email": "nope", "display_name": ""}')
    assert bad.returncode == 64 + 3, bad
    for field in ('"field":"email"', '"field":"display_name"', '"field":"avatar_image"'):
        assert field in bad.stderr + bad.stdout, bad
    unknown = '{"id": "6f1c2a57-0000-4000-8000-000000000000"}'
    for method in ("GetUser", "WatchUser", "DeleteUser"):
        assert grpcurl(accounts.addr, method, unknown).returncode == 64 + 5, method
    upload = grpcurl(
        accounts.addr, "CreateAvatarUpload", '{"content_type": "image/png", "content_length": 10}'
    )
    assert upload.returncode == 0 and '"uploadUrl"' not in upload.stdout, upload
    assert '"upload_url": "http' in upload.stdout, upload.stdout
