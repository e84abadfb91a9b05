"""S3 credentials from AWS' chain against real local servers: a container-credentials endpoint
(what ECS and EKS Pod Identity serve) and an STS answering AssumeRoleWithWebIdentity (IRSA),
both plain HTTP servers on 127.0.0.1, and SeaweedFS for requests signed with what they hand out.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from accounts_service.adapters.storage import Storage
from accounts_service.errors import Unavailable
from accounts_service.settings import from_env
from devstack.s3 import S3Server
from imaging_service.errors import StorageUnavailable
from imaging_service.storage import Storage as ImagingStorage

UPLOAD = "uploads/0b8e3c1e-5f0e-4a43-9d9c-7e0f2d5e8a10"
JWT = "eyJhbGciOiJSUzI1NiJ9.c2VydmljZWFjY291bnQ.c2lnbmF0dXJl"  # what the token file holds


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class Endpoint:
    """A local HTTP server answering each request with the next of `answers` (the last one
    again once they run out), recording what it was asked."""

    answers: list[Answer]
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def answer(self, method: str, path: str, headers: dict[str, str]) -> Answer:
        self.requests.append((method, path, headers))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint(answers=[])

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            answer = state.answer(self.command, self.path, dict(self.headers.items()))
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def container_answer(access_key: str, secret_key: str, token: str, lives: timedelta) -> Answer:
    """The JSON of ECS' and EKS Pod Identity's credential endpoints."""
    expiration = datetime.now(UTC) + lives
    body = {
        "AccessKeyId": access_key,
        "SecretAccessKey": secret_key,
        "Token": token,
        "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return Answer(200, json.dumps(body).encode())


def sts_answer(access_key: str, secret_key: str, token: str) -> Answer:
    expiration = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = (
        '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        "<AssumeRoleWithWebIdentityResult><Credentials>"
        f"<AccessKeyId>{access_key}</AccessKeyId><SecretAccessKey>{secret_key}</SecretAccessKey>"
        f"<SessionToken>{token}</SessionToken><Expiration>{expiration}</Expiration>"
        "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
    )
    return Answer(200, body.encode(), "text/xml")


def pod_identity_env(
    endpoint: Endpoint, token_file: Path, s3: S3Server, bucket: str
) -> dict[str, str]:
    """What EKS Pod Identity injects, with the agent's address replaced by the local server."""
    return {
        "INTERNAL_TOKEN": "t",
        "S3_ENDPOINT": s3.endpoint,
        "S3_BUCKET": bucket,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{endpoint.url}/v1/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
    }


def signed_with(url: str) -> tuple[str, str]:
    """(access key, session token) a presigned URL was signed with."""
    query = parse_qs(urlsplit(url).query)
    return query["X-Amz-Credential"][0].split("/")[0], query.get("X-Amz-Security-Token", [""])[0]


def presign_upload(storage: Storage) -> str:
    return storage.upload_url(UPLOAD, timedelta(minutes=5), "image/png", 100)


def test_expiring_container_credentials_are_fetched_again_and_sign_the_next_url(
    endpoint: Endpoint,
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # os.environ is not read: only the settings' mapping says where credentials come from.
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(tmp_path / "nowhere"))
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/unused")
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text("pod-token-1")
    # Both expire within the refresh margin: every use fetches again.
    endpoint.answers = [
        container_answer("ASIAFIRST", "first-secret", "first/session+token=", timedelta(minutes=2)),
        container_answer("ASIASECOND", "second-secret", "second-token", timedelta(minutes=2)),
    ]
    storage = Storage(from_env(pod_identity_env(endpoint, token_file, s3_server, s3_bucket)))

    assert signed_with(presign_upload(storage)) == ("ASIAFIRST", "first/session+token=")
    token_file.write_text("pod-token-2")  # the kubelet rotates the projected token
    assert signed_with(presign_upload(storage)) == ("ASIASECOND", "second-token")
    assert [(m, p, h.get("Authorization")) for m, p, h in endpoint.requests] == [
        ("GET", "/v1/credentials", "pod-token-1"),
        ("GET", "/v1/credentials", "pod-token-2"),
    ]
    # A thumbnail URL is signed with what the provider holds now, too.
    assert signed_with(storage.url("thumbnails/a.png")) == ("ASIASECOND", "second-token")


def test_credentials_far_from_expiry_are_fetched_once(
    endpoint: Endpoint, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("pod-token")
    endpoint.answers = [container_answer("ASIALONG", "long-secret", "tok", timedelta(hours=6))]
    storage = Storage(from_env(pod_identity_env(endpoint, token_file, s3_server, s3_bucket)))
    urls = {presign_upload(storage) for _ in range(3)}
    assert {signed_with(u) for u in urls} == {("ASIALONG", "tok")}
    assert len(endpoint.requests) == 1


def test_a_failed_early_refresh_keeps_the_held_credentials_until_they_expire(
    endpoint: Endpoint, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """As the AWS SDKs' advisory refresh: within the margin a failure is not an error while the
    held credentials are valid, and the next attempt waits RETRY_EARLY_AFTER (30 s)."""
    token_file = tmp_path / "token"
    token_file.write_text("pod-token")
    endpoint.answers = [
        container_answer("ASIAHELD", "held-secret", "held-token", timedelta(minutes=2)),
        Answer(403, b'{"Code": "AccessDenied", "Message": "no"}'),
    ]
    storage = Storage(from_env(pod_identity_env(endpoint, token_file, s3_server, s3_bucket)))
    assert signed_with(presign_upload(storage)) == ("ASIAHELD", "held-token")
    assert signed_with(presign_upload(storage)) == ("ASIAHELD", "held-token")
    assert len(endpoint.requests) == 2  # the early refresh was tried, and failed
    assert signed_with(presign_upload(storage)) == ("ASIAHELD", "held-token")
    assert len(endpoint.requests) == 2  # and rests


async def test_requests_to_s3_use_the_refreshed_keys(
    endpoint: Endpoint, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """SeaweedFS refuses the first (expiring) keys and accepts the next ones, for both
    services' clients. SeaweedFS has no STS: the real keys come without a session token."""
    token_file = tmp_path / "token"
    token_file.write_text("pod-token")
    env = pod_identity_env(endpoint, token_file, s3_server, s3_bucket)
    good = container_answer(s3_server.access_key, s3_server.secret_key, "", timedelta(hours=6))

    endpoint.answers = [container_answer("AKIAWRONG", "wrong", "", timedelta(minutes=1)), good]
    accounts = Storage(from_env(env))
    with pytest.raises(
        Unavailable,
        match=r"object storage error: (InvalidAccessKeyId|AccessDenied|SignatureDoesNotMatch)",
    ):
        await accounts.check()
    await accounts.check()

    endpoint.answers = [container_answer("AKIAWRONG", "wrong", "", timedelta(minutes=1)), good]
    imaging = ImagingStorage.connect(
        s3_server.endpoint,
        "",
        "",
        s3_bucket,
        False,
        "us-east-1",
        auth=from_env(env).s3_auth,
    )
    with pytest.raises(StorageUnavailable):
        await imaging.check()
    await imaging.check()


async def test_web_identity_goes_through_sts_and_its_failure_quotes_no_token(
    endpoint: Endpoint, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    token_file = tmp_path / "irsa-token"
    token_file.write_text(JWT)
    env = {
        "INTERNAL_TOKEN": "t",
        "S3_ENDPOINT": s3_server.endpoint,
        "S3_BUCKET": s3_bucket,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/avatars",
        "AWS_ROLE_SESSION_NAME": "accounts",
        "AWS_ENDPOINT_URL_STS": endpoint.url,
    }
    endpoint.answers = [
        Answer(403, b"<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>"),
        sts_answer("ASIAIRSA", "irsa-secret", "irsa-session-token"),
    ]
    storage = Storage(from_env(env))
    with pytest.raises(Unavailable) as refused:
        presign_upload(storage)
    message = str(refused.value)
    assert "AWS_WEB_IDENTITY_TOKEN_FILE" in message and "403" in message
    assert JWT not in message and refused.value.__cause__ is not None
    assert JWT not in str(refused.value.__cause__) and refused.value.__cause__.__cause__ is None

    assert signed_with(presign_upload(storage)) == ("ASIAIRSA", "irsa-session-token")
    query = parse_qs(urlsplit(endpoint.requests[-1][1]).query)
    assert endpoint.requests[-1][0] == "POST"
    assert query["Action"] == ["AssumeRoleWithWebIdentity"]
    assert query["WebIdentityToken"] == [JWT]
    assert query["RoleArn"] == [env["AWS_ROLE_ARN"]]
    assert query["RoleSessionName"] == ["accounts"]


def test_a_thumbnail_url_dated_at_the_start_of_its_window_is_served(
    s3_server: S3Server, s3_bucket: str
) -> None:
    """S3 accepts an X-Amz-Date up to a window in the past (valid window + expiry from it)."""
    key = "thumbnails/window-test/1/small.png"
    s3_server.client().put_object(s3_bucket, key, io.BytesIO(b"png bytes"), 9)
    env = {
        "INTERNAL_TOKEN": "t",
        "S3_ENDPOINT": s3_server.endpoint,
        "S3_BUCKET": s3_bucket,
        "S3_ACCESS_KEY": s3_server.access_key,
        "S3_SECRET_KEY": s3_server.secret_key,
        "URL_WINDOW_SECONDS": "86400",  # signed at the last midnight UTC
        "URL_EXPIRY_SECONDS": "60",
    }
    storage = Storage(from_env(env))
    url = storage.url(key)
    assert parse_qs(urlsplit(url).query)["X-Amz-Date"][0].endswith("T000000Z")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        assert response.read() == b"png bytes"
