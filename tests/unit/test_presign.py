"""SigV4 presigned URLs with signed headers (pure; checked against minio's own presigner)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from minio import Minio

from accounts_service.adapters.presign import presigned_url

NOW = datetime(2026, 11, 27, 12, 30, 5, tzinfo=UTC)
ARGS = {
    "endpoint": "127.0.0.1:9000",
    "secure": False,
    "bucket": "avatars",
    "key": "uploads/0b8e3c1e-5f0e-4a43-9d9c-7e0f2d5e8a10",
    "region": "us-east-1",
    "access_key": "minioadmin",
    "secret_key": "minio-secret",
    "now": NOW,
    "expires": timedelta(hours=1),
}


def test_without_extra_headers_it_is_exactly_minios_url() -> None:
    minio = Minio("127.0.0.1:9000", "minioadmin", "minio-secret", secure=False, region="us-east-1")
    expected = minio.get_presigned_url(
        "PUT", "avatars", ARGS["key"], expires=timedelta(hours=1), request_date=NOW
    )
    assert presigned_url(method="PUT", **ARGS) == expected


def test_content_type_and_length_are_signed_headers() -> None:
    url = presigned_url(
        method="PUT",
        headers={"Content-Type": "image/png", "Content-Length": "1234"},
        **ARGS,
    )
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-SignedHeaders"] == ["content-length;content-type;host"]
    assert query["X-Amz-Expires"] == ["3600"]
    other = presigned_url(
        method="PUT",
        headers={"Content-Type": "image/png", "Content-Length": "1235"},
        **ARGS,
    )
    assert parse_qs(urlsplit(other).query)["X-Amz-Signature"] != query["X-Amz-Signature"]
