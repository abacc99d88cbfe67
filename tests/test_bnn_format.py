import hashlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import bnn
from protocol.errors import FormatError

# bnn.seeded_input(1, 0, 32, 32): its first bytes and SHA-256 (docs/format.md)
FIRST_BYTES = "827b716b78557073"
SEEDED_1_0_32 = "b653909757d0260624575e8f63e1f0ff4a91c1df7956ab85840c404657c46000"


def test_round_trip_keeps_metadata_layers_and_golden(tiny_model):
    _, data = tiny_model
    model = bnn.read_bnn(data)
    assert model.labels == ["F06", "K11", "S19", "V22", "empty"]
    assert model.input_shape == (32, 32)
    assert [layer.kind for layer in model.layers] == [
        bnn.CONV_U8,
        bnn.BCONV,
        bnn.BCONV,
        bnn.BDENSE,
        bnn.DENSE_OUT,
    ]
    assert len(model.golden) == 4 and model.golden_seed is not None
    assert bnn.write_bnn(model.meta, model.layers, model.golden, model.golden_seed) == data


def test_seeded_self_test_inputs_cost_a_seed_and_their_scores(tiny_model):
    """GSEE (format 1.1): the inputs are drawn from the seed on every machine, so the file
    holds only the seed and the expected scores; each input gets scores of its own."""
    model = bnn.read_bnn(tiny_model[1])
    h, w = model.input_shape
    for i, (image, _) in enumerate(model.golden):
        assert image == bnn.seeded_input(model.golden_seed, i, h, w)
    assert len({tuple(scores) for _, scores in model.golden}) == 4
    assert struct.unpack_from("<HH", tiny_model[1], 4) == (1, 3)  # 1.3: GSEE, NORM, int16 T
    stored = bnn.write_bnn(model.meta, model.layers, model.golden)  # GOLD, stored whole
    assert len(stored) - len(tiny_model[1]) == 4 * h * w - 4  # the images, less the seed
    again = bnn.read_bnn(stored)  # GOLD still reads, with the same self-test
    assert again.golden == model.golden and again.golden_seed is None
    plain = [layer.replaced(norm=None) for layer in model.layers]
    old = bnn.write_bnn(model.meta, plain, model.golden, narrow=False)  # 1.0: GOLD, no NORM
    assert struct.unpack_from("<HH", old, 4) == (1, 0)
    assert bnn.read_bnn(old).layers[0].norm is None
    norm_bytes = sum(4 + layer.cout for layer in model.layers if layer.norm is not None)
    short_bytes = sum(
        2 * layer.cout
        for layer in model.layers
        if bnn.layer_payload(layer)[bnn._FLAGS_AT] & bnn.FLAG_T16
    )
    assert len(stored) - len(old) == norm_bytes - short_bytes


def test_thresholds_go_in_as_int16_and_every_engine_decides_the_same_bits(lively_tiny_model):
    """Format 1.3: a binary layer stores its thresholds as int16. Constant channels'
    thresholds (INT32_MIN / INT32_MAX from the fold) are clamped to the accumulator's range
    first, which decides the same bits; the 8-bit input layer keeps int32 (its accumulator
    reaches 255 * sum|w|). Every engine scores the int16 file exactly as the int32 one."""
    import numpy as np

    from edge.engine import make_engine
    from edge.engine.numpy_engine import NumpyEngine
    from edge.portable.engine import PortableEngine

    model = bnn.read_bnn(lively_tiny_model[1])
    layers = list(model.layers)
    values = list(struct.unpack("<%di" % layers[1].cout, layers[1].thresholds))
    values[0], values[1] = -(2**31), 2**31 - 1  # a constant channel either way
    layers[1] = layers[1].replaced(thresholds=struct.pack("<%di" % len(values), *values))
    wide = bnn.write_bnn(model.meta, layers, model.golden, model.golden_seed, narrow=False)
    short = bnn.write_bnn(model.meta, layers, model.golden, model.golden_seed)
    binary = [layer for layer in layers if layer.kind in (bnn.BCONV, bnn.BDENSE)]
    assert len(wide) - len(short) == 2 * sum(layer.cout for layer in binary)
    assert struct.unpack_from("<HH", wide, 4) == (1, 2)
    assert struct.unpack_from("<HH", short, 4) == (1, 3)
    flags = [bnn.layer_payload(layer)[bnn._FLAGS_AT] & bnn.FLAG_T16 for layer in layers]
    assert flags == [0] + [bnn.FLAG_T16] * len(binary) + [0]
    read = bnn.read_bnn(short)
    assert bnn.write_bnn(read.meta, read.layers, read.golden, read.golden_seed) == short
    n = 9 * layers[1].cin  # the 3x3 conv's accumulator lies in [-n, n]
    t = struct.unpack("<%di" % layers[1].cout, read.layers[1].thresholds)
    assert (t[0], t[1]) == (-n, n + 1) and t[2:] == tuple(values[2:])
    assert read.layers[0].thresholds == layers[0].thresholds
    rng = np.random.default_rng(0)
    h, w = model.input_shape
    images = rng.integers(0, 256, (64, h, w), dtype=np.uint8)
    expect = NumpyEngine(bnn.read_bnn(wide)).scores(images)
    assert len({tuple(row) for row in expect.tolist()}) > 32  # the images tell channels apart
    for engine in (NumpyEngine(read), make_engine(read)):
        assert np.array_equal(engine.scores(images), expect)
    portable = PortableEngine(read)
    for image, row in zip(images[:8], expect[:8], strict=True):
        assert portable.scores(image.tobytes()) == row.tolist()


def test_seeded_inputs_are_the_same_bytes_everywhere():
    """Fixed vectors: the portable generator must never change (docs/format.md)."""
    import hashlib

    digest = hashlib.sha256(bnn.seeded_input(1, 0, 32, 32)).hexdigest()
    assert bnn.seeded_input(1, 0, 32, 32)[:8].hex() == FIRST_BYTES
    assert digest == SEEDED_1_0_32
    assert bnn.seeded_input(1, 1, 32, 32) != bnn.seeded_input(1, 0, 32, 32)


def test_wrong_magic_is_named_and_a_known_foreign_file_is_told_what_it_is(tiny_model):
    _, data = tiny_model
    with pytest.raises(FormatError, match="wrong magic b'XY"):
        bnn.read_bnn(b"XY\x03\x04" + data[4:])
    # a training checkpoint handed to the edge: it says so, and how to make a model of it
    with pytest.raises(FormatError, match="a PyTorch checkpoint .*binsort pack RUN"):
        bnn.read_bnn(b"PK\x03\x04" + data[4:])
    with pytest.raises(FormatError, match="it is a .bsd delta"):
        bnn.read_bnn(b"BSDL" + data[4:])
    with pytest.raises(FormatError, match="it is a text file"):
        bnn.read_bnn(b"labels: F06, K11\n" * 20)


def test_future_major_version_asks_for_an_upgrade(tiny_model):
    _, data = tiny_model
    future = data[:4] + struct.pack("<H", bnn.VERSION_MAJOR + 1) + data[6:]
    with pytest.raises(FormatError, match="unsupported .bnn format version 2.3.*upgrade"):
        bnn.read_bnn(future)


@pytest.mark.parametrize("cut", [0, 5, 12, 100, -40, -1])
def test_truncated_file_is_rejected(tiny_model, cut):
    _, data = tiny_model
    with pytest.raises(FormatError):
        bnn.read_bnn(data[:cut])


def test_flipped_weight_bit_fails_the_section_crc(tiny_model):
    _, data = tiny_model
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x10
    with pytest.raises(FormatError, match="CRC mismatch"):
        bnn.read_bnn(bytes(damaged))


def test_consistent_rewrite_of_a_section_still_fails_the_file_hash(tiny_model):
    _, data = tiny_model
    model = bnn.read_bnn(data)
    forged = bnn.write_bnn(model.meta, model.layers, model.golden)
    # replace the HASH section by a CRC-valid one over the wrong digest
    body = forged[: -(8 + 32 + 4)]
    bad = body + bnn.section(b"HASH", bytes(32))
    with pytest.raises(FormatError, match="SHA-256 mismatch"):
        bnn.read_bnn(bad)


def test_layer_that_does_not_fit_its_input_is_rejected(tiny_model):
    _, data = tiny_model
    model = bnn.read_bnn(data)
    model.layers[2].in_h += 1
    with pytest.raises(FormatError, match="does not fit its input"):
        bnn.read_bnn(bnn.write_bnn(model.meta, model.layers, model.golden))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_random_byte_mutations_give_clean_errors_or_a_valid_model(tiny_model, data):
    _, blob = tiny_model
    mutated = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, max(len(mutated) - 1, 0)))
        if op == "flip" and mutated:
            mutated[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and mutated:
            mutated[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del mutated[at : at + data.draw(st.integers(1, 16))]
        else:
            del mutated[at:]
    try:
        model = bnn.read_bnn(bytes(mutated))
    except FormatError:
        return
    assert model.layers[-1].kind == bnn.DENSE_OUT  # anything accepted is a whole model


def _stored_sections(data: bytes) -> list:
    """[(tag, payload)] of each section of a `.bnn`, as stored."""
    at, parts = struct.calcsize(bnn._HEADER), []
    while at < len(data):
        tag, length = struct.unpack_from(bnn._SECTION, data, at)
        start = at + struct.calcsize(bnn._SECTION)
        parts.append((tag, data[start : start + length]))
        at = start + length + 4
    return parts


def test_meta_nested_past_the_recursion_limit_is_a_format_error(tiny_model):
    """A file whose sections and hash are whole but whose META nests deeper than the JSON
    parser's recursion limit (RecursionError, not a ValueError) is refused like any bad META."""
    parts = _stored_sections(tiny_model[1])
    layers = [payload for tag, payload in parts if tag == b"LAYR"]
    forged = bnn.assemble(b"[" * 5000 + b"]" * 5000, layers, *parts[-2])
    with pytest.raises(FormatError, match="META is not UTF-8 JSON"):
        bnn.read_bnn(forged)


def test_a_model_without_golden_inputs_is_refused(tiny_model):
    model = bnn.read_bnn(tiny_model[1])
    with pytest.raises(FormatError, match="GOLD holds no inputs"):
        bnn.read_bnn(bnn.write_bnn(model.meta, model.layers, []))
    with pytest.raises(FormatError, match="GSEE holds no inputs"):
        bnn.read_bnn(bnn.write_bnn(model.meta, model.layers, [], golden_seed=1))


def test_a_seeded_self_test_cannot_ask_for_endless_inputs(tiny_model):
    model = bnn.read_bnn(tiny_model[1])
    h, w = model.input_shape
    many = [(bnn.seeded_input(7, i, h, w), [0] * 5) for i in range(17)]
    with pytest.raises(FormatError, match="asks for 17 self-test inputs"):
        bnn.read_bnn(bnn.write_bnn(model.meta, model.layers, many, golden_seed=7))


def test_a_small_file_cannot_ask_for_a_huge_model(tiny_model):
    """Activations grow with the geometry, not the file: a 1x1 input conv of 64 channels on a
    4096 x 4096 frame is a few hundred bytes of layers and gigabytes of working memory."""
    model = bnn.read_bnn(tiny_model[1])
    meta = dict(model.meta, input={"height": 4096, "width": 4096})
    first = bnn.Layer(
        kind=bnn.CONV_U8,
        k=1,
        stride=1,
        pad=0,
        cin=1,
        cout=64,
        in_h=4096,
        in_w=4096,
        pool=1,
        weights=bytes(64),
    )
    out = bnn.Layer(**bnn.dense_geometry(bnn.DENSE_OUT, 64 * 4096 * 4096, 5), weights=b"")
    with pytest.raises(FormatError, match="MiB for one image"):
        bnn.check_chain(meta, [first, out])
    wide = bnn.Layer(**bnn.dense_geometry(bnn.BDENSE, 1 << 16, 1 << 13), weights=b"")
    small = dict(model.meta)
    conv = model.layers[0]
    with pytest.raises(FormatError, match="MiB of weights"):
        bnn.check_chain(
            small,
            [
                conv,
                bnn.Layer(**bnn.dense_geometry(bnn.BDENSE, conv.out_bits(), 1 << 16), weights=b""),
                wide,
                bnn.Layer(**bnn.dense_geometry(bnn.DENSE_OUT, 1 << 13, 5), weights=b""),
            ],
        )


@pytest.mark.parametrize("field, value", [("k", 300), ("pool", 256), ("in_h", 70000), ("cin", -1)])
def test_header_fields_out_of_their_range_are_format_errors(tiny_model, field, value):
    layer = bnn.read_bnn(tiny_model[1]).layers[1]
    setattr(layer, field, value)
    with pytest.raises(FormatError, match="out of range"):
        bnn.check_geometry(layer, 1)


def test_a_net_the_format_cannot_hold_is_refused_in_one_line_before_packing(monkeypatch):
    """Binary layers read a multiple of 8 inputs (whole bytes): a net with 12 channels is
    refused by the packer with the format's reason, not by a reshape deep in the reference."""
    import host.archs as ha
    from host.models import BinaryNet
    from host.pack import pack_model
    from protocol.errors import BinsortError
    from tests.conftest import LABELS, randomise_batchnorm

    odd = {"input": 32, "stem": {"cout": 12, "k": 3, "stride": 2, "pool": 2}}
    monkeypatch.setitem(ha.ARCHS, "odd", dict(odd, convs=[(16, 2)], dense=[16]))
    net = randomise_batchnorm(BinaryNet("odd", len(LABELS)))
    ckpt = {"arch": "odd", "labels": LABELS, "model_id": "odd", "created": 0}
    with pytest.raises(BinsortError, match="12 binary inputs, not a multiple of 8"):
        pack_model(ckpt, net)


def test_a_pool_wider_than_two_is_format_1_4_and_only_it(monkeypatch, tiny_model):
    """bcnn144m pools by 3: its file says 1.4, so a binsort that predates 1.4 refuses it by its
    geometry, while a model whose pools are all 2x2 keeps the lowest minor its contents need
    (1.3); a pool of 0, or one wider than its map, is a format error, not a division by zero."""
    import host.archs as ha
    from host.pack import pack_model
    from tests.conftest import checkpoint_for, lively_model

    three = {"input": 32, "stem": {"cout": 16, "k": 3, "stride": 2, "pool": 1}}
    monkeypatch.setitem(ha.ARCHS, "three", dict(three, convs=[(16, 3), (16, 1)], dense=[16]))
    data = pack_model(checkpoint_for("three"), lively_model("three"))
    assert struct.unpack_from("<HH", data, 4) == (1, 4)
    model = bnn.read_bnn(data)
    assert [layer.pool for layer in model.layers[:3]] == [1, 3, 1]
    assert model.layers[1].out_shape() == (5, 5) and model.layers[2].in_h == 5  # 16 // 3
    assert struct.unpack_from("<HH", tiny_model[1], 4) == (1, 3)
    layer = bnn.read_bnn(tiny_model[1]).layers[1]
    for pool, words in ((0, "bad convolution geometry"), (layer.in_h + 1, "empty output")):
        layer.pool = pool
        with pytest.raises(FormatError, match=words):
            bnn.check_geometry(layer, 1)


def _rewritten(data: bytes, minor: int, flags_of_layer_1: int) -> bytes:
    """`data` with its header's minor version and layer 1's flags byte set, CRCs and hash
    made whole again: what a newer, honest writer could produce."""
    parts = _stored_sections(data)
    layers = [bytearray(payload) for tag, payload in parts if tag == b"LAYR"]
    layers[1][bnn._FLAGS_AT] = flags_of_layer_1
    whole = bnn.assemble(parts[0][1], [bytes(p) for p in layers], *parts[-2])
    body = bytearray(whole[: -struct.calcsize(bnn._SECTION) - 32 - 4])
    struct.pack_into("<H", body, 6, minor)
    return bytes(body) + bnn.section(b"HASH", hashlib.sha256(bytes(body)).digest())


def test_a_whole_file_from_a_newer_minor_version_asks_for_an_upgrade(tiny_model):
    """A file whose CRCs and hash hold but which a newer binsort wrote (minor 5, a layer flag
    this reader does not know) is refused with the reason and the advice to upgrade; the same
    flaw in a file of a version this reader knows is only the reason, and a newer file this
    reader can take is read."""
    newer = _rewritten(tiny_model[1], bnn.VERSION_MINOR + 1, 0x08)
    with pytest.raises(FormatError) as e:
        bnn.read_bnn(newer)
    assert "unsupported flags 0x08" in str(e.value)
    assert "format 1.%d, this binsort reads up to 1.%d: upgrade binsort" % (
        bnn.VERSION_MINOR + 1,
        bnn.VERSION_MINOR,
    ) in str(e.value)
    known = _rewritten(tiny_model[1], bnn.VERSION_MINOR, 0x08)
    with pytest.raises(FormatError) as e:
        bnn.read_bnn(known)
    assert "unsupported flags 0x08" in str(e.value) and "upgrade" not in str(e.value)
    model = bnn.read_bnn(tiny_model[1])
    own = bnn.layer_payload(model.layers[1])[bnn._FLAGS_AT]  # nothing new but the version
    readable = bnn.read_bnn(_rewritten(tiny_model[1], bnn.VERSION_MINOR + 1, own))
    assert readable.layers[1].weights == model.layers[1].weights
