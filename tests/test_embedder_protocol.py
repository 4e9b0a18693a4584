"""embedder_worker.protocol: frames encode and decode, and bad frames are told apart."""

from __future__ import annotations

import asyncio
import json
import struct

import numpy as np
import pytest

from embedder_worker import protocol
from embedder_worker.protocol import ErrorCode, FrameType, ProtocolError


def reader_of(*chunks: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    return reader


async def test_embed_frame_round_trips_unicode_and_empty_texts() -> None:
    texts = ["hello", "", "naïve café — 東京", "x" * 10_000]
    frame = await protocol.read_frame(reader_of(protocol.encode_embed(7, texts)))
    assert (frame.type, frame.request_id, frame.count) == (FrameType.EMBED, 7, 4)
    assert protocol.decode_embed(frame) == texts


async def test_result_frame_round_trips_vectors_and_token_counts() -> None:
    vectors = np.random.default_rng(0).standard_normal((3, 384)).astype(np.float32)
    data = protocol.encode_result(2**32 - 1, vectors, [5, 9, 256])
    frame = await protocol.read_frame(reader_of(data))
    result = protocol.decode_result(frame)
    assert frame.request_id == 2**32 - 1
    assert np.array_equal(result.vectors, vectors)
    assert result.vectors.flags.writeable
    assert result.token_counts == (5, 9, 256)


async def test_info_and_error_frames_round_trip() -> None:
    info = await protocol.read_frame(reader_of(protocol.encode_info(3, {"name": "m", "dim": 4})))
    assert protocol.decode_info(info) == {"name": "m", "dim": 4}
    error = await protocol.read_frame(
        reader_of(protocol.encode_error(4, ErrorCode.SHUTTING_DOWN, "bye"))
    )
    assert protocol.decode_error(error) == (ErrorCode.SHUTTING_DOWN, "bye")


async def test_frames_split_across_reads_are_reassembled() -> None:
    data = protocol.encode_embed(1, ["split me"]) + protocol.encode_frame(FrameType.PING, 2)
    reader = reader_of(*(data[i : i + 3] for i in range(0, len(data), 3)))
    first = await protocol.read_frame(reader)
    second = await protocol.read_frame(reader)
    assert protocol.decode_embed(first) == ["split me"]
    assert (second.type, second.request_id) == (FrameType.PING, 2)


def test_bad_magic_loses_the_framing() -> None:
    header = struct.pack("<2sBBIII", b"XX", 1, 1, 1, 0, 0)
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_header(header)
    assert caught.value.framing_lost
    assert caught.value.code is ErrorCode.BAD_FRAME


def test_body_over_the_limit_is_refused_before_reading_it() -> None:
    header = protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, 1, 1, 1, 2**31)
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_header(header)
    assert caught.value.code is ErrorCode.TOO_LARGE
    assert caught.value.framing_lost


async def test_unknown_type_is_skipped_and_the_next_frame_still_reads() -> None:
    unknown = protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, 99, 5, 0, 3) + b"abc"
    reader = reader_of(unknown + protocol.encode_frame(FrameType.PING, 6))
    with pytest.raises(ProtocolError) as caught:
        await protocol.read_frame(reader)
    assert (caught.value.request_id, caught.value.framing_lost) == (5, False)
    assert (await protocol.read_frame(reader)).request_id == 6


@pytest.mark.parametrize(
    "body, count",
    [
        (struct.pack("<I", 10) + b"short", 1),  # lengths do not add up
        (struct.pack("<I", 2) + b"\xff\xfe", 1),  # not UTF-8
        (b"\x01", 1),  # shorter than the length table
        (b"", 0),  # no texts
    ],
)
def test_malformed_embed_bodies_are_bad_requests(body: bytes, count: int) -> None:
    frame = protocol.Frame(FrameType.EMBED, 1, count, body)
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_embed(frame)
    assert caught.value.code is ErrorCode.BAD_REQUEST
    assert not caught.value.framing_lost


def test_result_with_a_wrong_length_is_refused() -> None:
    frame = protocol.Frame(FrameType.RESULT, 1, 2, struct.pack("<I", 4) + b"\x00" * 8)
    with pytest.raises(ProtocolError):
        protocol.decode_result(frame)


def test_info_that_is_not_a_json_object_is_refused() -> None:
    frame = protocol.Frame(FrameType.INFO, 1, 0, json.dumps([1, 2]).encode())
    with pytest.raises(ProtocolError):
        protocol.decode_info(frame)


def frames_of(reader: protocol.FrameReader) -> list[protocol.Frame]:
    frames = []
    while (frame := reader.next_frame()) is not None:
        frames.append(frame)
    return frames


@pytest.mark.parametrize("piece", [1, 3, 16, 17, 1000])
def test_frame_reader_reassembles_frames_fed_in_any_pieces(piece: int) -> None:
    texts = ["split me", "naïve café — 東京", ""]
    data = (
        protocol.encode_embed(1, texts)
        + protocol.encode_frame(FrameType.PING, 2)
        + protocol.encode_result(3, np.ones((2, 4), dtype=np.float32), [7, 8])
    )
    reader = protocol.FrameReader()
    frames = []
    for i in range(0, len(data), piece):
        reader.feed(data[i : i + piece])
        frames.extend(frames_of(reader))
    assert [(f.type, f.request_id) for f in frames] == [
        (FrameType.EMBED, 1), (FrameType.PING, 2), (FrameType.RESULT, 3),
    ]  # fmt: skip
    assert protocol.decode_embed(frames[0]) == texts
    assert frames[1].body == b""
    result = protocol.decode_result(frames[2])
    assert result.token_counts == (7, 8)
    assert np.array_equal(result.vectors, np.ones((2, 4), dtype=np.float32))
    assert all(type(f.body) is bytes for f in frames)


def test_frame_reader_refuses_a_too_large_header_before_its_body_arrives() -> None:
    reader = protocol.FrameReader(max_body=100)
    reader.feed(protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, 1, 9, 1, 101))
    with pytest.raises(ProtocolError) as caught:
        reader.next_frame()
    assert (caught.value.code, caught.value.framing_lost) == (ErrorCode.TOO_LARGE, True)
    garbage = protocol.FrameReader()
    garbage.feed(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ProtocolError) as caught:
        garbage.next_frame()
    assert (caught.value.code, caught.value.framing_lost) == (ErrorCode.BAD_FRAME, True)


def test_frame_reader_skips_an_unknown_type_and_reads_on() -> None:
    unknown = protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, 99, 5, 0, 3) + b"abc"
    reader = protocol.FrameReader()
    reader.feed(unknown + protocol.encode_frame(FrameType.PING, 6)[:10])
    with pytest.raises(ProtocolError) as caught:
        reader.next_frame()
    assert (caught.value.request_id, caught.value.framing_lost) == (5, False)
    assert reader.next_frame() is None  # the PING is not complete yet
    reader.feed(protocol.encode_frame(FrameType.PING, 6)[10:])
    assert [f.request_id for f in frames_of(reader)] == [6]
