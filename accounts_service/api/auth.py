"""The accounts methods that take the internal credential, guarded by grpc_guard.auth."""

from __future__ import annotations

from grpc_guard.auth import InternalTokenInterceptor

UPDATE_THUMBNAILS = "/accounts.v1.AccountsService/UpdateThumbnails"
INTERNAL_METHODS = frozenset({UPDATE_THUMBNAILS})


def internal_token_guard(token: str) -> InternalTokenInterceptor:
    """The interceptor that refuses INTERNAL_METHODS without ``Bearer <token>``."""
    return InternalTokenInterceptor(token, INTERNAL_METHODS)
