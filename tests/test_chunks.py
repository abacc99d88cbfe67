"""The one chunk-hash walk (protocol.chunks): in-order bytes in any split, a tampered chunk, a
resumed transfer, and a written file checked up to a prefix."""

import hashlib
import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import manifest as mf
from protocol.chunks import ChunkVerifier, chunk_start, good_prefix
from protocol.errors import FormatError

PAYLOAD = bytes(random.Random(7).randrange(256) for _ in range(10_000))
ENDS = [1000, 4096, 4097, 9000, 10_000]


def chunks_of(data: bytes, ends: list) -> list:
    starts = [0] + ends[:-1]
    return [(e, hashlib.sha256(data[s:e]).hexdigest()) for s, e in zip(starts, ends, strict=True)]


CHUNKS = chunks_of(PAYLOAD, ENDS)


def feed_all(verifier: ChunkVerifier, data: bytes, sizes) -> "tuple[bytes, list]":
    kept, done, at = b"", [], 0
    pieces = iter(sizes)
    while at < len(data):
        block = data[at : at + next(pieces, len(data))]
        while block:
            take, finished = verifier.feed(block)
            kept += block[:take]
            block = block[take:]
            at += take
            if finished is not None:
                done.append(finished)
    return kept, done


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=40))
def test_bytes_in_any_split_complete_every_chunk_in_order(sizes):
    verifier = ChunkVerifier(CHUNKS)
    kept, done = feed_all(verifier, PAYLOAD, sizes)
    assert kept == PAYLOAD and done == [0, 1, 2, 3, 4] and verifier.offset == len(PAYLOAD)


def test_a_tampered_chunk_raises_and_is_received_again_from_its_start():
    verifier = ChunkVerifier(CHUNKS)
    assert verifier.feed(PAYLOAD[:1000]) == (1000, 0)
    bad = bytearray(PAYLOAD[1000:4096])
    bad[5] ^= 1
    with pytest.raises(FormatError, match="chunk ending at byte 4096 fails its hash"):
        verifier.feed(bytes(bad))
    assert verifier.start == verifier.offset == 1000
    assert verifier.feed(PAYLOAD[1000:4096]) == (3096, 1)


def test_a_resumed_transfer_counts_the_pending_bytes_of_its_chunk():
    assert [chunk_start(CHUNKS, o) for o in (0, 999, 1000, 2500, 4096, 9999, 10_000)] == [
        0,
        0,
        1000,
        1000,
        4096,
        9000,
        9000,
    ]
    verifier = ChunkVerifier(CHUNKS, offset=2500, pending=PAYLOAD[1000:2500])
    assert verifier.start == 1000 and verifier.end == 4096
    kept, done = feed_all(verifier, PAYLOAD[2500:], [700])
    assert done == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        ChunkVerifier(CHUNKS, offset=2500, pending=b"")
    wrong = ChunkVerifier(CHUNKS, offset=2500, pending=bytes(1500))
    with pytest.raises(FormatError):
        wrong.feed(PAYLOAD[2500:4096])


def test_bytes_past_the_last_chunk_are_an_error_not_a_loop():
    verifier = ChunkVerifier(CHUNKS)
    feed_all(verifier, PAYLOAD, [4000])
    with pytest.raises(FormatError, match="more bytes"):
        verifier.feed(b"x")


def test_good_prefix_stops_at_the_first_bad_chunk_and_at_the_limit():
    assert good_prefix(CHUNKS, io.BytesIO(PAYLOAD), len(PAYLOAD)) == (10_000, None)
    assert good_prefix(CHUNKS, io.BytesIO(PAYLOAD), 5000) == (4097, None)
    damaged = bytearray(PAYLOAD)
    damaged[4096] ^= 0x80  # the one-byte chunk
    assert good_prefix(CHUNKS, io.BytesIO(bytes(damaged)), 10_000) == (4096, 4097)
    assert good_prefix(CHUNKS, io.BytesIO(bytes(damaged)), 4096) == (4096, None)


def test_the_manifests_own_chunking_verifies():
    ends = mf.fixed_chunk_ends(len(PAYLOAD))
    verifier = ChunkVerifier(chunks_of(PAYLOAD, ends))
    kept, done = feed_all(verifier, PAYLOAD, [333])
    assert kept == PAYLOAD and done == list(range(len(ends)))
