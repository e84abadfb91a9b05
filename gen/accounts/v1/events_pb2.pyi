import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ThumbnailRequested(_message.Message):
    __slots__ = ("event_id", "user_id", "avatar_object", "avatar_generation", "requested_time")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AVATAR_OBJECT_FIELD_NUMBER: _ClassVar[int]
    AVATAR_GENERATION_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_TIME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    avatar_object: str
    avatar_generation: int
    requested_time: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., avatar_object: _Optional[str] = ..., avatar_generation: _Optional[int] = ..., requested_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
