"""The CloudEvents 1.0 envelope (structured JSON mode) that every Arrears message uses."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model, field_validator, model_validator

_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
# The tzinfo pydantic gives a time parsed from text with an offset (never without a UTC offset).
_PARSED_TZ = type(TypeAdapter(datetime).validate_python("2000-01-01T00:00:00Z").tzinfo)
_NEEDS_OFFSET = "time must carry a UTC offset (RFC 3339), e.g. 2026-01-31T12:00:00Z"
_CORE = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema", "data"}


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 document. ``data`` is validated separately, by type (see ``v1``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=1024)
    type: str = Field(min_length=1, max_length=256)
    time: datetime
    subject: str | None = Field(default=None, min_length=1, max_length=256)
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    data: dict[str, Any]

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # Run for every event: the usual cases (already UTC, or parsed from RFC 3339 text, whose offset
        # always exists) skip the checks that cannot fail for them.
        tz = value.tzinfo
        if tz is UTC:
            return value
        if tz is None or (type(tz) is not _PARSED_TZ and value.utcoffset() is None):
            raise ValueError(_NEEDS_OFFSET)
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _extensions(self) -> CloudEvent:
        extra = self.__pydantic_extra__
        if extra:  # most events carry no extension attribute
            for name in extra:
                if name in _CORE or not _EXTENSION_NAME.match(name):
                    raise ValueError(f"extension attribute {name!r} must be 1-20 lower-case letters or digits")
        return self

    @property
    def dedupe_key(self) -> str:
        """``source`` and ``id`` together: the CloudEvents identity of this event."""
        return f"{self.source}\x1f{self.id}"

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def from_json(cls, raw: bytes | str) -> CloudEvent:
        return cls.model_validate_json(raw)


def typed_envelope(model: type[BaseModel], event_type: str | None = None) -> type[CloudEvent]:
    """The envelope with ``data`` typed as ``model``, so envelope and payload are validated in one call
    (``model_validate_json`` straight from the raw bytes, or ``model_validate``): every envelope rule
    of :class:`CloudEvent` holds, and ``data`` is the model instance instead of a dict. With
    ``event_type``, ``type`` must be exactly that (a ``Literal``, usable as a union's discriminator)."""
    fields: dict[str, Any] = {"data": (model, ...)}
    if event_type is not None:
        fields["type"] = (Literal[event_type], ...)
    name = f"{model.__name__}Event"
    return create_model(name, __base__=CloudEvent, **fields)


def new_event(
    *,
    type: str,
    source: str,
    subject: str | None,
    data: BaseModel | dict[str, Any],
    time: datetime,
    id: str | None = None,
    **extensions: str,
) -> CloudEvent:
    """Build an envelope around ``data`` (a v1 model or a plain dict)."""
    payload = data.model_dump(mode="json", exclude_none=True) if isinstance(data, BaseModel) else data
    return CloudEvent(
        specversion="1.0",
        id=id or str(uuid.uuid4()),
        source=source,
        type=type,
        time=time,
        subject=subject,
        datacontenttype="application/json",
        data=payload,
        **extensions,
    )


_TIME_JSON: TypeAdapter[datetime] = TypeAdapter(datetime)


def event_json(
    *, type: str, source: str, subject: str | None, time: datetime, id: str, data_json: str | bytes
) -> bytes:
    """The bytes ``new_event(...).to_json()`` gives, for ``data`` already dumped as a JSON object
    (``model_dump_json(exclude_none=True)``): the envelope is written around it, so a payload
    that was serialized once (for a row and the event) is neither dumped nor validated again.
    Same fields, order and formats as :meth:`CloudEvent.to_json` (``time`` in UTC, as pydantic
    writes it)."""
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError(_NEEDS_OFFSET)
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": type,
        "time": _TIME_JSON.dump_python(time.astimezone(UTC), mode="json"),
    }
    if subject is not None:
        envelope["subject"] = subject
    envelope["datacontenttype"] = "application/json"
    data = data_json.encode() if isinstance(data_json, str) else data_json
    return orjson.dumps(envelope)[:-1] + b',"data":' + data + b"}"
