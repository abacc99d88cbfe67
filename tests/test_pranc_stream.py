"""`.pranc` streams: host packing and edge reconstruction agree byte for byte, every chunk
boundary is a usable model, and damaged streams give clean errors without losing the last good
prefix."""

import struct

import numpy as np
import pytest
import torch

from edge.engine import NumpyEngine
from edge.engine.stream import PrancDecoder, read_pranc
from host.pack_pranc import pack_pranc, pack_pranc_bnn
from host.pranc import PrancNet, split_budget
from host.reference import reference_scores
from protocol import bnn
from protocol import pranc as fmt
from protocol.errors import FormatError
from tests.conftest import LABELS, checkpoint_for, random_inputs, randomise_batchnorm


def random_pranc(arch="tiny", basis="fastfood", alphas=700, chunks=8, seed=5) -> PrancNet:
    """An untrained PRANC net with random alphas and BatchNorm statistics."""
    torch.manual_seed(seed)
    model = PrancNet(arch, len(LABELS), alphas, basis, seed=seed, split="sqrt", chunks=chunks)
    return randomise_batchnorm(model)


@pytest.fixture(scope="module")
def stream():
    model = random_pranc()
    images = random_inputs(40, 32, seed=2)
    truth = np.arange(40) % len(LABELS)
    data = pack_pranc(checkpoint_for("tiny"), model, (images, truth))
    return model, data, images


def records(data: bytes) -> list:
    """(tag, start, end) of every record."""
    out, at = [], struct.calcsize(fmt.HEADER)
    while at < len(data):
        tag, length = struct.unpack_from(fmt.RECORD, data, at)
        end = at + 8 + length + 4
        out.append((tag, at, end))
        at = end
    return out


def test_edge_rebuilds_byte_identical_layers_and_scores(stream):
    model, data, images = stream
    edge_model, dec = read_pranc(data)
    assert dec.done and dec.chunks == 8
    host = bnn.read_bnn(pack_pranc_bnn(checkpoint_for("tiny"), model))
    assert len(host.layers) == len(edge_model.layers)
    for a, b in zip(host.layers, edge_model.layers, strict=True):
        assert bnn.layer_payload(a) == bnn.layer_payload(b)
    scores = NumpyEngine(edge_model).scores(images)
    assert np.array_equal(scores, reference_scores(edge_model, images))
    assert NumpyEngine(host).self_test() == []


def test_every_chunk_boundary_is_a_model_with_the_recorded_accuracy(stream):
    model, data, images = stream
    truth = np.arange(40) % len(LABELS)
    chunk_ends = [end for tag, _, end in records(data) if tag == b"ACHK"]
    assert len(chunk_ends) == 8
    seen = set()
    for c, end in enumerate(chunk_ends, start=1):
        m, dec = read_pranc(data[:end])
        assert dec.chunks == c and not dec.done
        scores = NumpyEngine(m).scores(images)
        assert float((scores.argmax(1) == truth).mean()) == pytest.approx(
            dec.last_chunk.accuracy, abs=1e-4
        )
        seen.add(bytes(m.layers[1].weights))
    assert len(seen) > 1  # later chunks change the model
    # a byte budget between boundaries uses the last whole chunk
    m, dec = read_pranc(data, prefix_bytes=chunk_ends[2] + 5)
    assert dec.chunks == 3 and dec.bytes_used == chunk_ends[2]


def test_stream_fed_in_small_pieces_activates_each_prefix(stream):
    _, data, _ = stream
    dec = PrancDecoder(build="each")
    completed = []
    for i in range(0, len(data), 97):
        completed += dec.feed(data[i : i + 97])
    assert completed == list(range(8)) and dec.done
    assert dec.good_chunks == 8


def test_prefix_holds_only_its_chunks_alphas(stream):
    model, data, _ = stream
    ends = [end for tag, _, end in records(data) if tag == b"ACHK"]
    _, dec = read_pranc(data[: ends[1]])
    ints = model.int_alphas()
    for i, k in enumerate(model.ks):
        got = dec.layer_alphas(i)
        assert len(got) == fmt.chunk_end(k, 8, 2)
        assert got.tolist() == ints[i][: len(got)].tolist()


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


def test_corrupted_chunk_is_refused_and_the_last_good_prefix_stays(stream):
    _, data, _ = stream
    recs = records(data)
    chunk4 = [r for r in recs if r[0] == b"ACHK"][4]
    bad = _flip(data, chunk4[1] + 20)
    dec = PrancDecoder(build="each")
    with pytest.raises(FormatError, match="CRC mismatch"):
        dec.feed(bad)
    assert dec.good_chunks == 4 and dec.model() is dec.good
    with pytest.raises(FormatError, match="CRC mismatch"):
        dec.feed(b"")  # nothing after damage is trusted
    with pytest.raises(FormatError, match="CRC mismatch"):
        read_pranc(bad)


def test_truncated_stream_file_is_refused_but_its_prefix_can_be_asked_for(stream):
    _, data, _ = stream
    cut = [r for r in records(data) if r[0] == b"ACHK"][3][1] + 30
    with pytest.raises(FormatError, match="truncated inside a record after 3 complete chunks"):
        read_pranc(data[:cut])
    _, dec = read_pranc(data, prefix_bytes=cut)
    assert dec.chunks == 3
    with pytest.raises(FormatError, match="before its fixed part"):
        read_pranc(data[:40], prefix_bytes=40)


def _with_head(data: bytes, edit) -> bytes:
    """The stream with its HEAD JSON edited (CRC and the final SHA-256 rewritten)."""
    import json

    recs = records(data)
    tag, start, end = recs[0]
    head = json.loads(data[start + 8 : end - 4])
    edit(head)
    out = fmt.header() + fmt.head_record(head) + data[end:]
    done = records(out)[-1]
    return out[: done[1]] + fmt.done_record(out[: done[1]])


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda h: h["hash"].update(id="xorshift"), "unknown basis hash 'xorshift'"),
        (lambda h: h["hash"].update(version=2), "unknown basis hash"),
        (lambda h: h.update(basis="gaussian"), "unknown basis 'gaussian'"),
        (lambda h: h["layers"][1].update(kind="ternary_conv"), "cannot run"),
        (lambda h: h["layers"][2].update(cin=40), "cannot run"),
        (lambda h: h["layers"][1].update(alphas=h["layers"][1]["alphas"] + 3), "alpha bytes"),
        (lambda h: h.update(chunks=9), "HEAD says 9"),
        (lambda h: h.pop("seed"), "seed"),
    ],
)
def test_bad_headers_give_clean_errors(stream, edit, message):
    _, data, _ = stream
    with pytest.raises(FormatError, match=message):
        read_pranc(_with_head(data, edit))


def test_a_head_nested_past_the_recursion_limit_is_a_format_error(stream):
    """JSON nested deeper than the parser's recursion limit raises RecursionError (a
    RuntimeError, in MicroPython too), which is not a ValueError: it must not escape."""
    _, data, _ = stream
    recs = records(data)
    deep = fmt.record(b"HEAD", b"[" * 5000 + b"]" * 5000)
    out = fmt.header() + deep + data[recs[0][2] :]
    done = records(out)[-1]
    with pytest.raises(FormatError, match="HEAD is not UTF-8 JSON"):
        read_pranc(out[: done[1]] + fmt.done_record(out[: done[1]]))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_fixed_part_that_is_not_a_number_is_refused_in_one_line(stream, value):
    """FIXD's floats (BatchNorm statistics, biases) must be finite: a NaN would turn into
    whatever integer a cast makes of it, on every device, before any check could see it."""
    _, data, _ = stream
    fixd = next(r for r in records(data) if r[0] == b"FIXD")
    payload = bytearray(data[fixd[1] + 8 : fixd[2] - 4])
    struct.pack_into("<f", payload, 8, value)  # the input conv's first bias, after its scale
    body = data[: fixd[1]] + fmt.record(b"FIXD", bytes(payload)) + data[fixd[2] :]
    done = records(body)[-1]
    body = body[: done[1]] + fmt.done_record(body[: done[1]])
    with pytest.raises(FormatError, match="FIXD bias is not a finite number"):
        read_pranc(body)


def test_a_different_seed_is_caught_by_the_reconstruction_check(stream):
    _, data, _ = stream
    with pytest.raises(FormatError, match="does not match the host's"):
        read_pranc(_with_head(data, lambda h: h.update(seed=h["seed"] + 1)))


def test_a_chunk_that_rebuilds_wrong_leaves_the_last_good_prefix(stream):
    _, data, _ = stream
    achk = [r for r in records(data) if r[0] == b"ACHK"]
    tag, start, end = achk[2]
    payload = bytearray(data[start + 8 : end - 4])
    payload[-4] ^= 0xFF  # the host's CRC of the model after chunk 2, then a valid record CRC
    bad = data[:start] + fmt.record(b"ACHK", bytes(payload)) + data[end:]
    dec = PrancDecoder(build="each")
    with pytest.raises(FormatError, match="does not match the host's"):
        dec.feed(bad)
    assert dec.chunks == dec.good_chunks == 2 and dec.model() is dec.good


def test_chunks_out_of_order_are_refused(stream):
    _, data, _ = stream
    achk = [r for r in records(data) if r[0] == b"ACHK"]
    a, b = achk[0], achk[1]
    swapped = data[: a[1]] + data[b[1] : b[2]] + data[a[1] : a[2]] + data[b[2] :]
    with pytest.raises(FormatError, match="chunk 1 arrived where chunk 0 was expected"):
        read_pranc(swapped)


def test_stray_bytes_after_done_are_refused(stream):
    _, data, _ = stream
    with pytest.raises(FormatError):
        read_pranc(data + fmt.record(b"ACHK", b"\0" * 12))


def test_dense_basis_streams_rebuild_too():
    model = random_pranc(basis="dense", alphas=150, chunks=4)
    data = pack_pranc(checkpoint_for("tiny"), model, None)
    m, dec = read_pranc(data)
    assert dec.head["basis"] == "dense" and dec.last_chunk.accuracy is None
    host = bnn.read_bnn(pack_pranc_bnn(checkpoint_for("tiny"), model))
    assert [bnn.layer_payload(x) for x in host.layers] == [bnn.layer_payload(x) for x in m.layers]


def test_budget_split_hits_the_total_and_respects_layer_sizes():
    sizes = [288, 9216, 36864, 131072, 640]
    for split in ("size", "sqrt"):
        ks = split_budget(sizes, 4096, split)
        assert sum(ks) == 4096 and all(1 <= k <= d for k, d in zip(ks, sizes, strict=True))
    size_ks, sqrt_ks = split_budget(sizes, 4096, "size"), split_budget(sizes, 4096, "sqrt")
    assert size_ks[0] < sqrt_ks[0] and size_ks[3] > sqrt_ks[3]
    assert split_budget([10, 20], 1000, "size") == [10, 20]
    assert split_budget(sizes, 4096, [1, 2, 3, 4, 5000]) == [1, 2, 3, 4, 640]


def test_the_rebuild_check_covers_the_int32_layout_whatever_the_bnn_writer_stores(tiny_model):
    """A `.pranc` chunk's CRC covers the layers as `.bnn` 1.2 laid them out (int32 thresholds),
    so streams packed before `.bnn` 1.3 still check on a device that writes int16 ones."""
    import binascii

    layers = bnn.read_bnn(tiny_model[1]).layers
    wide = b"".join(bnn.layer_payload(layer, narrow=False) for layer in layers)
    short = b"".join(bnn.layer_payload(layer) for layer in layers)
    assert len(short) < len(wide)
    assert fmt.layers_digest(layers) == binascii.crc32(wide) & 0xFFFFFFFF
