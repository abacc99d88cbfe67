"""COBS framing: round trips, resynchronisation after damage, and a fuzz of the decoder."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import frames as fr
from protocol.cobs import cobs_decode, cobs_encode
from protocol.errors import FormatError


@given(st.binary(max_size=2000))
def test_cobs_round_trips_and_never_emits_zero(data):
    enc = cobs_encode(data)
    assert 0 not in enc
    assert cobs_decode(enc) == data
    assert len(enc) <= len(data) + len(data) // 254 + 1


def test_cobs_known_vectors():
    # from the COBS paper / Wikipedia examples
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x00\x00") == b"\x01\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs_encode(bytes(range(1, 255))) == b"\xff" + bytes(range(1, 255)) + b"\x01"


frames_st = st.builds(
    fr.Frame,
    st.sampled_from(sorted(fr.NAMES)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=300),
)


@given(st.lists(frames_st, max_size=8), st.lists(st.integers(1, 50), min_size=1))
def test_frames_survive_any_split_of_the_byte_stream(frames, cuts):
    stream = b"".join(fr.encode_frame(f) for f in frames)
    dec, got, at, i = fr.FrameDecoder(), [], 0, 0
    while at < len(stream):
        n = cuts[i % len(cuts)]
        got += dec.push(stream[at : at + n])
        at, i = at + n, i + 1
    assert [(f.kind, f.session, f.offset, f.payload) for f in got] == [
        (f.kind, f.session, f.offset, f.payload) for f in frames
    ]
    assert dec.dropped == 0


def test_garbage_and_a_damaged_frame_are_skipped_and_the_next_frame_decodes():
    good = [fr.Frame(fr.DATA, 7, 1024 * i, bytes([i]) * 100) for i in range(3)]
    enc = [fr.encode_frame(f) for f in good]
    damaged = bytearray(enc[1])
    damaged[10] ^= 0x40
    stream = b"\x13\x37noise\x00" + enc[0] + bytes(damaged) + enc[2][:5] + b"\x00" + enc[2]
    dec = fr.FrameDecoder()
    got = dec.push(stream)
    assert [f.offset for f in got] == [0, 2048]
    assert dec.dropped == 3  # the noise, the damaged frame, the cut-off frame


def test_a_run_without_delimiters_longer_than_any_frame_is_dropped():
    dec = fr.FrameDecoder()
    assert dec.push(b"\x01" * (fr.MAX_ENCODED + 10)) == []
    frame = fr.Frame(fr.ACK, 1, 5, b"")
    assert [f.offset for f in dec.push(b"\x00" + fr.encode_frame(frame))] == [5]
    assert dec.dropped == 1


def test_decode_frame_names_what_is_wrong():
    enc = fr.encode_frame(fr.Frame(fr.HELLO, 1, 0, b"{}"))[:-1]
    with pytest.raises(FormatError, match="CRC32"):
        fr.decode_frame(enc[:-1] + bytes([enc[-1] ^ 1 or 1]))
    with pytest.raises(FormatError, match="shorter than a header"):
        fr.decode_frame(cobs_encode(b"abc"))


@settings(max_examples=400)
@given(st.binary(max_size=3000))
def test_decoder_fuzz_never_raises_and_yields_only_valid_frames(data):
    for f in fr.FrameDecoder().push(data):
        assert f.kind in fr.NAMES
        assert fr.decode_frame(fr.encode_frame(f)[:-1]).payload == f.payload
