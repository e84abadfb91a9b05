from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RenderThumbnailsRequest(_message.Message):
    __slots__ = ("image", "sizes")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SIZES_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    sizes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, image: _Optional[bytes] = ..., sizes: _Optional[_Iterable[int]] = ...) -> None: ...

class RenderThumbnailsResponse(_message.Message):
    __slots__ = ("thumbnails",)
    THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    thumbnails: _containers.RepeatedCompositeFieldContainer[RenderedThumbnail]
    def __init__(self, thumbnails: _Optional[_Iterable[_Union[RenderedThumbnail, _Mapping]]] = ...) -> None: ...

class RenderedThumbnail(_message.Message):
    __slots__ = ("size", "width", "height", "content_type", "data")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    size: int
    width: int
    height: int
    content_type: str
    data: bytes
    def __init__(self, size: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., content_type: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class GetQueueStatsResponse(_message.Message):
    __slots__ = ("pending", "ack_pending", "redelivered", "dead_lettered", "processed", "failed")
    PENDING_FIELD_NUMBER: _ClassVar[int]
    ACK_PENDING_FIELD_NUMBER: _ClassVar[int]
    REDELIVERED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    pending: int
    ack_pending: int
    redelivered: int
    dead_lettered: int
    processed: int
    failed: int
    def __init__(self, pending: _Optional[int] = ..., ack_pending: _Optional[int] = ..., redelivered: _Optional[int] = ..., dead_lettered: _Optional[int] = ..., processed: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class ReplayDeadLettersRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ReplayDeadLettersResponse(_message.Message):
    __slots__ = ("replayed",)
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    replayed: int
    def __init__(self, replayed: _Optional[int] = ...) -> None: ...
