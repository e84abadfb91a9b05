"""SigV4 presigned URLs: signed headers and session tokens (checked against minio's own
presigner), and thumbnail URLs that stay the same for a window of time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from minio import Minio

from accounts_service.adapters.presign import presigned_url
from accounts_service.adapters.storage import Storage, signing_window
from accounts_service.settings import SettingsError, from_env

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


SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+session/token="


def test_a_session_token_is_signed_exactly_as_minio_signs_it() -> None:
    minio = Minio(
        "127.0.0.1:9000",
        "ASIAEXAMPLE",
        "temporary-secret",
        session_token=SESSION_TOKEN,
        secure=False,
        region="us-east-1",
    )
    args = ARGS | {"access_key": "ASIAEXAMPLE", "secret_key": "temporary-secret"}
    for method in ("GET", "PUT"):
        expected = urlsplit(
            minio.get_presigned_url(
                method, "avatars", ARGS["key"], expires=timedelta(hours=1), request_date=NOW
            )
        )
        ours = urlsplit(presigned_url(method=method, session_token=SESSION_TOKEN, **args))
        # minio writes the token first in the URL; the signed (canonical) query is sorted, so
        # the order in the URL is free: the same parameters, signature included, is the test.
        assert ours._replace(query="") == expected._replace(query="")
        assert parse_qs(ours.query) == parse_qs(expected.query)
    query = parse_qs(expected.query)
    assert query["X-Amz-Security-Token"] == [SESSION_TOKEN]
    without = parse_qs(urlsplit(presigned_url(method="PUT", **args)).query)
    assert "X-Amz-Security-Token" not in without
    assert without["X-Amz-Signature"] != query["X-Amz-Signature"]


def test_a_session_token_is_signed_with_the_headers_too() -> None:
    headers = {"Content-Type": "image/png", "Content-Length": "1234"}
    with_token = presigned_url(method="PUT", headers=headers, session_token="tok-1", **ARGS)
    other = presigned_url(method="PUT", headers=headers, session_token="tok-2", **ARGS)
    signature = parse_qs(urlsplit(with_token).query)["X-Amz-Signature"]
    assert parse_qs(urlsplit(other).query)["X-Amz-Signature"] != signature
    assert parse_qs(urlsplit(with_token).query)["X-Amz-Security-Token"] == ["tok-1"]


def test_thumbnail_urls_are_the_same_within_a_window_aligned_to_the_clock() -> None:
    env = {
        "INTERNAL_TOKEN": "t",
        "S3_ACCESS_KEY": "AKIAEXAMPLE",
        "S3_SECRET_KEY": "secret",
        "URL_WINDOW_SECONDS": "600",
        "URL_EXPIRY_SECONDS": "3600",
    }
    reads = [
        datetime(2026, 11, 27, 12, 30, 0, tzinfo=UTC),
        datetime(2026, 11, 27, 12, 39, 59, 999999, tzinfo=UTC),
        datetime(2026, 11, 27, 12, 40, 0, tzinfo=UTC),
    ]
    storage = Storage(from_env(env), clock=lambda: reads.pop(0))
    key = "thumbnails/0b8e3c1e-5f0e-4a43-9d9c-7e0f2d5e8a10/1/small.png"
    first, second, third = (storage.url(key) for _ in range(3))
    assert first == second  # byte-identical: a browser or CDN cache hits
    query = parse_qs(urlsplit(first).query)
    assert query["X-Amz-Date"] == ["20261127T123000Z"]
    assert query["X-Amz-Expires"] == ["4200"]  # the window, then URL_EXPIRY_SECONDS past it
    assert third != first
    assert parse_qs(urlsplit(third).query)["X-Amz-Date"] == ["20261127T124000Z"]


def test_windows_are_counted_from_the_epoch_so_every_replica_agrees() -> None:
    at = datetime(2026, 11, 27, 12, 34, 56, 789, tzinfo=UTC)
    assert signing_window(at, 3600) == datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert signing_window(at, 1) == datetime(2026, 11, 27, 12, 34, 56, tzinfo=UTC)
    assert signing_window(at, 86400) == datetime(2026, 11, 27, tzinfo=UTC)


def test_a_window_and_expiry_past_seven_days_are_refused() -> None:
    env = {"INTERNAL_TOKEN": "t", "S3_ACCESS_KEY": "a", "S3_SECRET_KEY": "s"}
    assert from_env(env).url_window_seconds == 3600
    with pytest.raises(SettingsError, match="URL_EXPIRY_SECONDS \\+ URL_WINDOW_SECONDS"):
        from_env(env | {"URL_WINDOW_SECONDS": "604800"})
    with pytest.raises(SettingsError, match="URL_WINDOW_SECONDS must be at least 1"):
        from_env(env | {"URL_WINDOW_SECONDS": "0"})
