"""gRPC AccountsService: proto in, one use-case call, proto out; errors mapped by status.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from google.protobuf import empty_pb2

from accounts_service.adapters import db
from accounts_service.adapters.storage import Storage
from accounts_service.api.status import translated, translated_stream
from accounts_service.results import RenderedThumbnail
from accounts_service.users import Users
from accounts_service.watch import Watcher
from object_keys import SIZES

_STATUS = {
    "PENDING": accounts_pb2.THUMBNAIL_STATUS_PENDING,
    "READY": accounts_pb2.THUMBNAIL_STATUS_READY,
    "FAILED": accounts_pb2.THUMBNAIL_STATUS_FAILED,
}


def avatar_of(request: Any) -> bytes | str | None:
    kind = request.WhichOneof("avatar")
    return None if kind is None else getattr(request, kind)


class AccountsServicer(accounts_pb2_grpc.AccountsServiceServicer):
    def __init__(self, users: Users, watcher: Watcher, storage: Storage) -> None:
        self._users = users
        self._watcher = watcher
        self._storage = storage

    @translated
    async def CreateUser(self, request: Any, context: Any) -> accounts_pb2.User:
        user = await self._users.create(
            request.email, request.display_name, avatar_of(request), request.request_id
        )
        return self._user(user)

    @translated
    async def GetUser(self, request: Any, context: Any) -> accounts_pb2.User:
        return self._user(await self._users.get(request.id))

    @translated
    async def ListUsers(self, request: Any, context: Any) -> accounts_pb2.ListUsersResponse:
        rows, token = await self._users.list_page(request.page_size, request.page_token)
        return accounts_pb2.ListUsersResponse(
            users=[self._user(r) for r in rows], next_page_token=token
        )

    @translated
    async def UpdateAvatar(self, request: Any, context: Any) -> accounts_pb2.User:
        return self._user(await self._users.update_avatar(request.id, avatar_of(request)))

    @translated
    async def RegenerateThumbnails(self, request: Any, context: Any) -> accounts_pb2.User:
        return self._user(await self._users.regenerate(request.id))

    @translated
    async def CreateAvatarUpload(
        self, request: Any, context: Any
    ) -> accounts_pb2.CreateAvatarUploadResponse:
        upload = await self._users.create_upload(request.content_type, request.content_length)
        reply = accounts_pb2.CreateAvatarUploadResponse(object=upload.object, upload_url=upload.url)
        reply.expire_time.FromDatetime(upload.expire_time)
        return reply

    @translated
    async def UpdateThumbnails(self, request: Any, context: Any) -> accounts_pb2.User:
        kind = request.WhichOneof("result")
        thumbnails = None
        if kind == "thumbnails":
            thumbnails = [
                _rendered(name, getattr(request.thumbnails, name))
                for name in SIZES
                if request.thumbnails.HasField(name)
            ]
        failure = (request.failure.code, request.failure.reason) if kind == "failure" else None
        user = await self._users.update_thumbnails(
            request.user_id, request.avatar_generation, thumbnails, failure
        )
        return self._user(user)

    @translated
    async def DeleteUser(self, request: Any, context: Any) -> empty_pb2.Empty:
        await self._users.delete(request.id)
        return empty_pb2.Empty()

    @translated_stream
    async def WatchUser(
        self, request: Any, context: Any
    ) -> AsyncGenerator[accounts_pb2.User, None]:
        async with contextlib.aclosing(self._watcher.watch(request.id)) as rows:
            async for row in rows:
                yield self._user(row)

    def _user(self, row: db.UserRow) -> accounts_pb2.User:
        user = accounts_pb2.User(
            id=str(row.id),
            email=row.email,
            display_name=row.display_name,
            avatar=accounts_pb2.Avatar(
                object=row.avatar_object,
                content_type=row.avatar_content_type,
                generation=row.avatar_generation,
            ),
            thumbnail_status=_STATUS[row.thumbnail_status],
            failure_code=row.failure_code,
            failure_reason=row.failure_reason,
        )
        user.create_time.FromDatetime(row.create_time)
        user.update_time.FromDatetime(row.update_time)
        if row.thumbnail_status == "READY" and row.thumbnails:
            for name, t in row.thumbnails.items():
                getattr(user.thumbnails, name).CopyFrom(
                    accounts_pb2.Thumbnail(
                        object=t["object"],
                        url=self._storage.url(t["object"]),
                        width=t["width"],
                        height=t["height"],
                        size_bytes=t["size_bytes"],
                    )
                )
        else:  # placeholders: every size points at the original avatar
            url = self._storage.url(row.avatar_object)
            for name, size in SIZES.items():
                getattr(user.thumbnails, name).CopyFrom(
                    accounts_pb2.Thumbnail(
                        object=row.avatar_object, url=url, width=size, height=size
                    )
                )
        return user


def _rendered(name: str, t: Any) -> RenderedThumbnail:
    return RenderedThumbnail(
        name=name, object=t.object, width=t.width, height=t.height, size_bytes=t.size_bytes
    )
