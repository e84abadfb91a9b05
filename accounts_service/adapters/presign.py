"""S3 Signature V4 presigned URLs that also sign request headers (pure: no I/O, no clients).

minio's presigner signs only `host`; signing `content-type` and `content-length` as well makes
storage itself refuse an upload of another type or size (403 SignatureDoesNotMatch), which is
how a presigned PUT gets a length limit.

Temporary credentials (STS: IRSA, Pod Identity, instance roles) add their session token as
`X-Amz-Security-Token`, a signed query parameter, as minio's presigner does; the URL then works
until the earlier of its expiry and the credentials' own.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from urllib.parse import quote

_SAFE = "-_.~"


def _q(value: str, safe: str = _SAFE) -> str:
    return quote(value, safe=safe)


def presigned_url(
    *,
    method: str,
    endpoint: str,
    secure: bool,
    bucket: str,
    key: str,
    region: str,
    access_key: str,
    secret_key: str,
    now: datetime,
    expires: timedelta,
    headers: dict[str, str] | None = None,
    session_token: str | None = None,
) -> str:
    """A path-style URL for `method` on bucket/key, valid `expires` from `now` (UTC).

    `endpoint` is host[:port] as clients reach it. Every header in `headers` is signed: the
    client must send exactly these values. The payload stays unsigned, as S3 presigning does.
    `session_token` comes with temporary credentials.
    """
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{now:%Y%m%d}/{region}/s3/aws4_request"
    signed = {name.lower(): value.strip() for name, value in (headers or {}).items()}
    signed["host"] = endpoint
    names = ";".join(sorted(signed))
    path = f"/{_q(bucket)}/{_q(key, '/' + _SAFE)}"
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(int(expires.total_seconds())),
        "X-Amz-SignedHeaders": names,
    }
    if session_token:
        params["X-Amz-Security-Token"] = session_token
    query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(params.items()))
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in sorted(signed))
    canonical_request = f"{method}\n{path}\n{query}\n{canonical_headers}\n{names}\nUNSIGNED-PAYLOAD"
    string_to_sign = (
        f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
        f"{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    )
    signing_key = f"AWS4{secret_key}".encode()
    for part in (f"{now:%Y%m%d}", region, "s3", "aws4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    scheme = "https" if secure else "http"
    return f"{scheme}://{endpoint}{path}?{query}&X-Amz-Signature={signature}"
