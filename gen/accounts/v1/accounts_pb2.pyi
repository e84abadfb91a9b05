import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ThumbnailStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    THUMBNAIL_STATUS_UNSPECIFIED: _ClassVar[ThumbnailStatus]
    THUMBNAIL_STATUS_PENDING: _ClassVar[ThumbnailStatus]
    THUMBNAIL_STATUS_READY: _ClassVar[ThumbnailStatus]
    THUMBNAIL_STATUS_FAILED: _ClassVar[ThumbnailStatus]
THUMBNAIL_STATUS_UNSPECIFIED: ThumbnailStatus
THUMBNAIL_STATUS_PENDING: ThumbnailStatus
THUMBNAIL_STATUS_READY: ThumbnailStatus
THUMBNAIL_STATUS_FAILED: ThumbnailStatus

class User(_message.Message):
    __slots__ = ("id", "email", "display_name", "avatar", "thumbnail_status", "thumbnails", "failure_code", "failure_reason", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_STATUS_FIELD_NUMBER: _ClassVar[int]
    THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CODE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    email: str
    display_name: str
    avatar: Avatar
    thumbnail_status: ThumbnailStatus
    thumbnails: Thumbnails
    failure_code: str
    failure_reason: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., email: _Optional[str] = ..., display_name: _Optional[str] = ..., avatar: _Optional[_Union[Avatar, _Mapping]] = ..., thumbnail_status: _Optional[_Union[ThumbnailStatus, str]] = ..., thumbnails: _Optional[_Union[Thumbnails, _Mapping]] = ..., failure_code: _Optional[str] = ..., failure_reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Avatar(_message.Message):
    __slots__ = ("object", "content_type", "generation")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    object: str
    content_type: str
    generation: int
    def __init__(self, object: _Optional[str] = ..., content_type: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class Thumbnails(_message.Message):
    __slots__ = ("small", "medium", "large")
    SMALL_FIELD_NUMBER: _ClassVar[int]
    MEDIUM_FIELD_NUMBER: _ClassVar[int]
    LARGE_FIELD_NUMBER: _ClassVar[int]
    small: Thumbnail
    medium: Thumbnail
    large: Thumbnail
    def __init__(self, small: _Optional[_Union[Thumbnail, _Mapping]] = ..., medium: _Optional[_Union[Thumbnail, _Mapping]] = ..., large: _Optional[_Union[Thumbnail, _Mapping]] = ...) -> None: ...

class Thumbnail(_message.Message):
    __slots__ = ("object", "url", "width", "height", "size_bytes")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    object: str
    url: str
    width: int
    height: int
    size_bytes: int
    def __init__(self, object: _Optional[str] = ..., url: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("email", "display_name", "avatar_image", "avatar_object", "request_id")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    AVATAR_IMAGE_FIELD_NUMBER: _ClassVar[int]
    AVATAR_OBJECT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    email: str
    display_name: str
    avatar_image: bytes
    avatar_object: str
    request_id: str
    def __init__(self, email: _Optional[str] = ..., display_name: _Optional[str] = ..., avatar_image: _Optional[bytes] = ..., avatar_object: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users", "next_page_token")
    USERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[User]
    next_page_token: str
    def __init__(self, users: _Optional[_Iterable[_Union[User, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateAvatarRequest(_message.Message):
    __slots__ = ("id", "avatar_image", "avatar_object")
    ID_FIELD_NUMBER: _ClassVar[int]
    AVATAR_IMAGE_FIELD_NUMBER: _ClassVar[int]
    AVATAR_OBJECT_FIELD_NUMBER: _ClassVar[int]
    id: str
    avatar_image: bytes
    avatar_object: str
    def __init__(self, id: _Optional[str] = ..., avatar_image: _Optional[bytes] = ..., avatar_object: _Optional[str] = ...) -> None: ...

class RegenerateThumbnailsRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CreateAvatarUploadRequest(_message.Message):
    __slots__ = ("content_type", "content_length")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    content_length: int
    def __init__(self, content_type: _Optional[str] = ..., content_length: _Optional[int] = ...) -> None: ...

class CreateAvatarUploadResponse(_message.Message):
    __slots__ = ("object", "upload_url", "expire_time")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    object: str
    upload_url: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, object: _Optional[str] = ..., upload_url: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchUserRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class UpdateThumbnailsRequest(_message.Message):
    __slots__ = ("user_id", "avatar_generation", "thumbnails", "failure")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AVATAR_GENERATION_FIELD_NUMBER: _ClassVar[int]
    THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    avatar_generation: int
    thumbnails: Thumbnails
    failure: Failure
    def __init__(self, user_id: _Optional[str] = ..., avatar_generation: _Optional[int] = ..., thumbnails: _Optional[_Union[Thumbnails, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: str
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
