"""Pure checks of request fields; each failure names the proto field it concerns."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import unicodedata
import uuid
from datetime import datetime

from accounts_service.errors import InvalidArgument

MAX_EMAIL = 254
MAX_DISPLAY_NAME = 100
MAX_REQUEST_ID = 128
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def has_control(value: str) -> bool:
    """Control characters (NUL, newlines, ...): never meant, and PostgreSQL refuses NUL."""
    return any(unicodedata.category(c) == "Cc" for c in value)


def email_problem(email: str) -> str | None:
    if not email:
        return "is required"
    if len(email) > MAX_EMAIL:
        return f"must be at most {MAX_EMAIL} characters"
    if has_control(email):
        return "must not contain control characters"
    if email.count("@") != 1:
        return "must contain exactly one '@'"
    local, domain = email.split("@")
    if not local:
        return "needs a non-empty part before '@'"
    labels = domain.split(".")
    if len(labels) < 2 or not all(labels):
        return "needs a dotted domain after '@', like example.com"
    if any(c.isspace() for c in email):
        return "must not contain whitespace"
    return None


def display_name_problem(name: str) -> str | None:
    if not name.strip():
        return "is required"
    if len(name) > MAX_DISPLAY_NAME:
        return f"must be at most {MAX_DISPLAY_NAME} characters"
    if has_control(name):
        return "must not contain control characters"
    return None


def new_user_violations(email: str, display_name: str, request_id: str) -> list[tuple[str, str]]:
    """Every (field, problem) of a CreateUser request's plain fields."""
    violations = []
    if problem := email_problem(email):
        violations.append(("email", problem))
    if problem := display_name_problem(display_name):
        violations.append(("display_name", problem))
    if len(request_id) > MAX_REQUEST_ID:
        violations.append(("request_id", f"must be at most {MAX_REQUEST_ID} characters"))
    elif has_control(request_id):
        violations.append(("request_id", "must not contain control characters"))
    return violations


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    try:
        # uuid.UUID lets int() skip whitespace: "...0000\t" would parse as another UUID.
        if any(c.isspace() or unicodedata.category(c) == "Cc" for c in value):
            raise ValueError("whitespace or control characters")
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, f"must be a UUID, got {value[:60]!r}") from None


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(key: bytes, create_time: datetime, user_id: uuid.UUID) -> str:
    body = json.dumps([create_time.isoformat(), str(user_id)]).encode()
    mac = hmac.new(key, body, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac + body).decode()


def decode_page_token(key: bytes, token: str) -> tuple[datetime, uuid.UUID]:
    """Raises InvalidArgument for any token this server did not issue."""
    if has_control(token):  # base64 decoding would skip them and accept the rest
        raise InvalidArgument("page_token", "must not contain control characters")
    try:
        raw = base64.urlsafe_b64decode(token.encode())
        mac, body = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()[:16]):
            raise ValueError("bad signature")
        when, user_id = json.loads(body)
        return datetime.fromisoformat(when), uuid.UUID(user_id)
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise InvalidArgument("page_token", "was not issued by this server") from None


def request_fingerprint(email: str, display_name: str, avatar: bytes | str) -> str:
    """Identifies a CreateUser body, to tell a retry from a different request with the same id."""
    digest = hashlib.sha256()
    for part in (email.lower(), display_name):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(avatar if isinstance(avatar, bytes) else avatar.encode())
    return digest.hexdigest()
