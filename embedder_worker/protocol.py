"""The frame format between the gateway's client and an embedding worker, over a Unix socket.

Every frame is a 16-byte little-endian header then ``body_len`` bytes of body::

    magic  b"EW" | version u8 | type u8 | request_id u32 | count u32 | body_len u32

=========  =========  ==================================================================
type       count      body
=========  =========  ==================================================================
EMBED      n texts    n x u32 byte lengths, then the n UTF-8 texts back to back
RESULT     n vectors  dim u32, n x u32 token counts, then n x dim float32 (row-major)
PING/PONG  0          empty
INFO       0          request: empty; reply: UTF-8 JSON (name, dim, max_length, ...)
ERROR      code       UTF-8 message (codes in ``ErrorCode``)
=========  =========  ==================================================================

Replies carry the request id of the frame they answer; many requests may be in flight on one
connection and replies come back in any order. A frame whose header is unreadable (bad magic or
version, body over ``MAX_BODY_BYTES``) loses the framing: the reader answers ERROR with request id 0
and closes the connection. A well-framed but bad request gets an ERROR and the connection lives.
Value types, pure encoders and decoders, ``read_frame`` over a given stream, and ``FrameReader``
for code that is handed bytes as they arrive (an ``asyncio.Protocol``).
"""

from __future__ import annotations

import asyncio
import enum
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

MAGIC = b"EW"
VERSION = 1
HEADER = struct.Struct("<2sBBIII")
HEADER_SIZE = HEADER.size
_U32_STRUCT = struct.Struct("<I")
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_TEXTS = 4096
_U32 = np.dtype("<u4")
_F32 = np.dtype("<f4")


class FrameType(enum.IntEnum):
    EMBED = 1
    RESULT = 2
    PING = 3
    PONG = 4
    INFO = 5
    ERROR = 6


class ErrorCode(enum.IntEnum):
    BAD_FRAME = 1  # framing lost: the connection is closed after this
    BAD_REQUEST = 2  # this request was malformed; the connection lives
    TOO_LARGE = 3
    SHUTTING_DOWN = 4  # the worker is draining: retry elsewhere
    INTERNAL = 5


class ProtocolError(Exception):
    """A frame or body that does not follow this format; ``code`` says how bad."""

    def __init__(self, code: ErrorCode, message: str, request_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id

    @property
    def framing_lost(self) -> bool:
        return self.code in (ErrorCode.BAD_FRAME, ErrorCode.TOO_LARGE)


@dataclass(frozen=True, slots=True)
class Header:
    type_code: int
    request_id: int
    count: int
    body_len: int


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    request_id: int
    count: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Result:
    """The body of a RESULT frame: one vector and one token count per text."""

    vectors: npt.NDArray[np.float32]
    token_counts: tuple[int, ...]


def parse_header(
    data: bytes | bytearray, max_body: int = MAX_BODY_BYTES, offset: int = 0
) -> Header:
    """Decode the 16-byte header at ``offset``; raises ProtocolError(BAD_FRAME / TOO_LARGE) if
    framing is lost.

    An unknown frame type keeps the framing (the body length is known), so it is returned as is
    and rejected by ``read_frame`` after the body has been consumed.
    """
    magic, version, type_code, request_id, count, body_len = HEADER.unpack_from(data, offset)
    if magic != MAGIC or version != VERSION or body_len > max_body:
        _lost_framing(magic, version, body_len, max_body)
    return Header(type_code, request_id, count, body_len)


def _lost_framing(magic: bytes, version: int, body_len: int, max_body: int) -> None:
    if magic != MAGIC or version != VERSION:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"bad magic/version {magic!r}/{version}")
    raise ProtocolError(ErrorCode.TOO_LARGE, f"body of {body_len} bytes > {max_body}")


_FRAME_TYPES = {int(frame_type): frame_type for frame_type in FrameType}


def _frame(type_code: int, request_id: int, count: int, body: bytes) -> Frame:
    frame_type = _FRAME_TYPES.get(type_code)
    if frame_type is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown frame type {type_code}", request_id)
    return Frame(frame_type, request_id, count, body)


async def read_frame(reader: asyncio.StreamReader, max_body: int = MAX_BODY_BYTES) -> Frame:
    """The next frame from ``reader``.

    Raises ``asyncio.IncompleteReadError`` at end of stream, ``ProtocolError`` with
    ``framing_lost`` set when the stream cannot be trusted any more, or without it (and with the
    frame's request id) for an unknown frame type whose body was skipped.
    """
    header = parse_header(await reader.readexactly(HEADER_SIZE), max_body)
    body = await reader.readexactly(header.body_len) if header.body_len else b""
    return _frame(header.type_code, header.request_id, header.count, body)


class FrameReader:
    """Frames out of bytes fed in pieces as they arrive, without a task per stream.

    ``feed`` the bytes an ``asyncio.Protocol`` receives, then call ``next_frame`` until it returns
    None (no complete frame left). It raises ``ProtocolError`` as ``read_frame`` does: once with
    ``framing_lost`` set nothing more can be read; without it (unknown type) the bad frame was
    skipped and reading goes on. A header is checked as soon as it is in, before its body.
    """

    def __init__(self, max_body: int = MAX_BODY_BYTES) -> None:
        # The bytes fed and not returned yet start at _start. Usually a chunk holds whole frames
        # and is parsed where it is; only a frame split across chunks is copied to a bytearray.
        self._buffer: bytes | bytearray = b""
        self._start = 0
        self._max_body = max_body

    def feed(self, data: bytes) -> None:
        buffer, start = self._buffer, self._start
        if start == len(buffer):
            self._buffer = data
        elif isinstance(buffer, bytearray):
            del buffer[:start]
            buffer += data
        else:
            self._buffer = bytearray(memoryview(buffer)[start:]) + data
        self._start = 0

    def next_frame(self) -> Frame | None:
        buffer, start = self._buffer, self._start
        if len(buffer) - start < HEADER_SIZE:
            return None
        magic, version, type_code, request_id, count, size = HEADER.unpack_from(buffer, start)
        if magic != MAGIC or version != VERSION or size > self._max_body:
            _lost_framing(magic, version, size, self._max_body)
        start += HEADER_SIZE
        end = start + size
        if len(buffer) < end:
            return None
        self._start = end
        body = buffer[start:end]
        return _frame(type_code, request_id, count, body if type(body) is bytes else bytes(body))


def encode_frame(
    frame_type: FrameType, request_id: int, count: int = 0, body: bytes = b""
) -> bytes:
    return HEADER.pack(MAGIC, VERSION, frame_type, request_id, count, len(body)) + body


def encode_embed(request_id: int, texts: Sequence[str]) -> bytes:
    encoded = [text.encode("utf-8") for text in texts]
    table = struct.pack(f"<{len(encoded)}I", *map(len, encoded))
    size = len(table) + sum(map(len, encoded))
    header = HEADER.pack(MAGIC, VERSION, FrameType.EMBED, request_id, len(encoded), size)
    return b"".join((header, table, *encoded))


def decode_embed(frame: Frame) -> list[str]:
    """Texts of an EMBED frame; ProtocolError(BAD_REQUEST) when the body does not add up."""
    count = frame.count
    if count == 0 or count > MAX_TEXTS:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"EMBED needs 1..{MAX_TEXTS} texts, got {count}")
    table = count * _U32.itemsize
    body = frame.body
    if len(body) < table:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "EMBED body shorter than its length table")
    lengths = struct.unpack_from(f"<{count}I", body)
    if sum(lengths) != len(body) - table:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "EMBED lengths do not match the body")
    texts: list[str] = []
    offset = table
    try:
        for length in lengths:
            texts.append(body[offset : offset + length].decode("utf-8"))
            offset += length
    except UnicodeDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"EMBED text is not UTF-8: {exc}") from exc
    return texts


def encode_result(
    request_id: int, vectors: npt.NDArray[np.float32], token_counts: Sequence[int]
) -> bytes:
    count, dim = vectors.shape
    size = 4 + count * (4 + dim * 4)
    return b"".join(
        (
            HEADER.pack(MAGIC, VERSION, FrameType.RESULT, request_id, count, size),
            _U32_STRUCT.pack(dim),
            struct.pack(f"<{count}I", *token_counts),
            np.ascontiguousarray(vectors, dtype=_F32).tobytes(),
        )
    )


def decode_result(frame: Frame) -> Result:
    count = frame.count
    if len(frame.body) < 4:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "RESULT body too short")
    (dim,) = _U32_STRUCT.unpack_from(frame.body)
    expected = 4 + count * _U32.itemsize + count * dim * _F32.itemsize
    if len(frame.body) != expected:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"RESULT body {len(frame.body)} != {expected}")
    counts = struct.unpack_from(f"<{count}I", frame.body, 4)
    vectors = np.frombuffer(frame.body, dtype=_F32, offset=4 + count * _U32.itemsize)
    # A copy: writable, and not keeping the frame's body alive.
    return Result(vectors=vectors.reshape(count, dim).astype(np.float32), token_counts=counts)


def encode_info(request_id: int, info: Mapping[str, object]) -> bytes:
    return encode_frame(FrameType.INFO, request_id, 0, json.dumps(info).encode("utf-8"))


def decode_info(frame: Frame) -> dict[str, object]:
    try:
        data = json.loads(frame.body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"INFO body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "INFO body is not a JSON object")
    return cast(dict[str, object], data)


def encode_error(request_id: int, code: ErrorCode, message: str) -> bytes:
    return encode_frame(FrameType.ERROR, request_id, int(code), message.encode("utf-8"))


def decode_error(frame: Frame) -> tuple[ErrorCode, str]:
    try:
        code = ErrorCode(frame.count)
    except ValueError:
        code = ErrorCode.INTERNAL
    return code, frame.body.decode("utf-8", errors="replace")
