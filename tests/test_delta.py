"""`.bsd` deltas (issue 19): an update pinned to the model a device runs. The format makes
exactly the `.bnn` the host packed or fails; a prefix that ends on a step is an update; the
store refuses a delta for another model before a byte is sent; the receiver installs tier 1
then tier 2; `binsort pack --delta-from`; MicroPython applies it bit-exactly."""

import copy
import hashlib
import json
import os
import subprocess

import pytest
import torch

from edge.install.store import SlotStore
from host.pack import pack_model
from host.ship import build_manifest
from host.untrained import lively_net, untrained_checkpoint
from protocol import bnn, delta
from protocol.errors import FormatError
from protocol.transports import tcp
from tests.shipkit import HOST, ROOT, Receiver, keys

MPY = os.path.join(ROOT, "tools", "micropython.mjs")


@pytest.fixture(scope="module")
def models():
    """(base .bnn, tier-1 .bnn, tier-2 .bnn): tier 1 changes a BatchNorm (thresholds), the input
    conv and the output layer; tier 2 also flips every 37th weight of one binary conv."""
    net = lively_net("tiny", 1)
    base = pack_model(untrained_checkpoint("tiny"), net)
    tier1 = copy.deepcopy(net)
    with torch.no_grad():
        tier1.convs[1].bn.bias += 0.3
        tier1.head.linear.weight[0] += 0.5
        tier1.stem.conv.weight[0] *= 1.1
    tier2 = copy.deepcopy(tier1)
    with torch.no_grad():
        tier2.convs[1].weight.view(-1)[::37] *= -1
    ck = untrained_checkpoint("tiny", model_id="line-3b")
    return base, pack_model(ck, tier1, 2), pack_model(ck, tier2, 2)


@pytest.fixture(scope="module")
def update(models):
    return delta.write_delta(models[0], [(models[1], 0.91), (models[2], 0.95)])


def _step_ends(data: bytes) -> list:
    return sorted(delta.read_steps(data)[0])


def test_a_delta_makes_exactly_the_packed_model_and_its_prefix_makes_tier_1(models, update):
    whole = delta.apply_delta(models[0], update)
    assert whole.data == models[2] and whole.step == 2 and whole.done and whole.accuracy == 0.95
    first = delta.apply_delta(models[0], update[: _step_ends(update)[0]])
    assert first.data == models[1] and first.step == 1 and not first.done
    assert len(update) < len(models[2]) // 2  # far smaller than the model
    steps, done = delta.read_steps(update)
    assert done and list(steps.values()) == [0.91, 0.95]


def test_a_delta_for_another_model_or_cut_or_damaged_is_refused(models, update):
    with pytest.raises(FormatError, match="applies to model"):
        delta.apply_delta(models[1], update)
    first_end = _step_ends(update)[0]
    for cut in (0, 9, 60, first_end - 1, first_end + 5):
        with pytest.raises(FormatError):
            delta.apply_delta(models[0], update[:cut])
    for at in range(8, len(update), 211):
        bad = update[:at] + bytes([update[at] ^ 0x04]) + update[at + 1 :]
        with pytest.raises(FormatError):
            delta.apply_delta(models[0], bad)
    with pytest.raises(FormatError, match="stray bytes after DONE"):
        delta.apply_delta(models[0], update + delta.record(b"META", b"{}"))


def test_a_step_that_does_not_make_the_named_model_is_refused(models, update):
    """A well-framed delta whose changes are not the ones its step names (a host bug, or a
    key holder's mistake) never yields a model: the SHA-256 of the result is checked."""
    recs = delta._records(update)
    body = update[:8]
    for tag, payload, _, _ in recs:
        if tag == b"LAYR" and payload[2] == delta.FLIPS:
            continue  # drop tier 2's weight flips, keep its STEP
        if tag == b"DONE":
            payload = hashlib.sha256(body).digest()
        body += delta.record(tag, payload)
    with pytest.raises(FormatError, match="step 2 does not make the model the host packed"):
        delta.apply_delta(models[0], body)


def _resealed(head: bytes, recs: list) -> bytes:
    """A delta of `recs` [(tag, payload)] with valid CRCs and a DONE that matches: what a peer
    that edits a delta on purpose sends, past every check that is not about meaning."""
    body = head
    for tag, payload in recs:
        body += delta.record(tag, hashlib.sha256(body).digest() if tag == b"DONE" else payload)
    return body


def test_a_resealed_delta_with_a_short_step_is_refused_in_one_line(models, update):
    recs = [(t, p) for t, p, _, _ in delta._records(update)]
    at = next(i for i, (t, _) in enumerate(recs) if t == b"STEP")
    recs[at] = (b"STEP", recs[at][1][:19])
    bad = _resealed(update[:8], recs)
    with pytest.raises(FormatError, match="a short STEP record"):
        delta.apply_delta(models[0], bad)


def test_resealed_edits_of_any_record_give_format_errors_or_the_packed_models(models, update):
    """Structure-aware fuzz: records cut, grown, rewritten, dropped, repeated or swapped, then
    sealed again, so that the CRCs and DONE's SHA-256 hold and the edit reaches the parser."""
    import random

    recs = [(t, p) for t, p, _, _ in delta._records(update)]
    r = random.Random(19)
    for _ in range(400):
        edit = [(t, bytearray(p)) for t, p in recs]
        i, kind = r.randrange(len(edit)), r.randrange(5)
        payload = edit[i][1]
        if kind == 0 and payload:
            del payload[r.randrange(len(payload)) :]
        elif kind == 1:
            payload += bytes(r.randrange(256) for _ in range(r.randrange(1, 9)))
        elif kind == 2 and payload:
            for _ in range(r.randrange(1, 4)):
                payload[r.randrange(len(payload))] = r.choice((0, 1, 0x7F, 0x80, 0xFF))
        elif kind == 3 and len(edit) > 2:
            del edit[i]
        else:
            j = r.randrange(len(edit))
            edit[i], edit[j] = edit[j], edit[i]
        data = _resealed(update[:8], [(t, bytes(p)) for t, p in edit])
        try:
            got = delta.apply_delta(models[0], data)
        except FormatError:
            continue
        assert got.data in models[1:]  # a step's SHA-256 lets nothing else through


def test_a_delta_packed_before_bnn_1_3_still_applies_to_the_model_it_names(models):
    """A host before `.bnn` 1.3 packed every step with int32 thresholds: the device makes those
    very bytes (the step's SHA-256 says which), not the 1.3 file of the same model."""

    def wide(data):
        m = bnn.read_bnn(data)
        return bnn.write_bnn(m.meta, m.layers, m.golden, m.golden_seed, narrow=False)

    base, tier1, tier2 = (wide(m) for m in models)
    assert len(tier2) > len(models[2])  # the int32 thresholds
    old = delta.write_delta(base, [(tier1, 0.91), (tier2, 0.95)])
    whole = delta.apply_delta(base, old)
    assert whole.data == tier2 and whole.step == 2
    assert delta.apply_delta(base, old[: _step_ends(old)[0]]).data == tier1


def test_rice_code_round_trips_and_refuses_garbage():
    for positions, bits in [([], 64), ([0], 8), ([0, 1, 2, 3], 8), ([5, 70, 71, 4095], 4096)]:
        k = delta.rice_parameter(len(positions), bits)
        coded = delta.rice_encode(positions, k)
        assert delta.rice_decode(coded, len(positions), k, bits) == positions
    coded = delta.rice_encode([3, 9], 1)
    with pytest.raises(FormatError):
        delta.rice_decode(coded, 3, 1, 64)  # more flips than coded
    with pytest.raises(FormatError):
        delta.rice_decode(coded, 2, 1, 8)  # a flip past the layer
    with pytest.raises(FormatError):
        delta.rice_decode(b"\xff\xff\xff\xff", 1, 0, 1 << 20)  # runs past the record


def _store_with(tmp_path, payload: bytes):
    key, pub = keys(tmp_path / "k")
    store = str(tmp_path / "store")
    SlotStore.init(store, [pub])
    path = tmp_path / "base.bnn"
    path.write_bytes(payload)
    manifest, body, _ = build_manifest(str(path), key, version=1)
    s = SlotStore(store)
    s.install(s.verify(manifest), str(path))
    return key, store


def test_a_receiver_installs_tier_1_then_tier_2_on_the_model_it_runs(tmp_path, models, update):
    key, store = _store_with(tmp_path, models[0])
    (tmp_path / "u.bsd").write_bytes(update)
    manifest, payload, signed = build_manifest(str(tmp_path / "u.bsd"), key, version=2)
    assert signed["kind"] == "delta" and signed["base"] == hashlib.sha256(models[0]).hexdigest()
    rx = Receiver(store)
    seen = []
    try:
        result = tcp.ship(rx.url, manifest, payload, {"status": seen.append})
    finally:
        log = rx.stop()
    assert [s["installed"] for s in seen] == [_step_ends(update)[0]], log
    assert result["kind"] == "delta"
    s = SlotStore(store)
    slot, rec = s.active()
    with open(s.model_path(slot), "rb") as f:
        assert f.read() == models[2]  # the slot holds the .bnn itself, bit for bit
    assert rec["complete"] and rec["base"] == signed["base"]
    assert rec["sha256"] == hashlib.sha256(models[2]).hexdigest()


def test_a_delta_for_a_model_the_device_does_not_run_is_refused_before_sending(
    tmp_path, models, update
):
    key, store = _store_with(tmp_path, models[1])  # the device runs another model
    (tmp_path / "u.bsd").write_bytes(update)
    rx = Receiver(store)
    try:
        out = subprocess.run(
            HOST + ["ship", str(tmp_path / "u.bsd"), "--to", rx.url, "--key", key, "--quiet"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
    finally:
        rx.stop()
    assert out.returncode == 2, out.stderr
    assert "this delta applies to model %s" % hashlib.sha256(models[0]).hexdigest()[:16] in (
        out.stderr
    )
    assert len(out.stderr.strip().splitlines()) == 1
    assert SlotStore(store).summary()["partial"] == []  # not a byte was kept


def test_pack_writes_a_delta_and_refuses_another_architecture(tmp_path, trained_run):
    run = trained_run / "run"
    old = tmp_path / "old.bnn"
    subprocess.run(HOST + ["pack", str(run), "--out", str(old)], check=True, cwd=ROOT)
    out = subprocess.run(
        HOST + ["pack", str(run), "--delta-from", str(old), "--out", str(tmp_path / "u.bsd")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "0 weight-bit flips" in out.stdout and "accuracy" in out.stdout
    made = delta.apply_delta(old.read_bytes(), (tmp_path / "u.bsd").read_bytes())
    assert made.done and made.step == 1
    other = tmp_path / "other.bnn"
    other.write_bytes(pack_model(untrained_checkpoint("bcnn"), lively_net("bcnn", 1)))
    for extra, message in [
        (["--delta-from", str(other), "--out", str(tmp_path / "x.bsd")], "another architecture"),
        (["--delta-from", str(old), "--out", str(tmp_path / "x.bnn")], "--out FILE.bsd"),
        (["--out", str(tmp_path / "x.bsd")], "--delta-from"),
        (["--delta-from", str(tmp_path / "none.bnn"), "--out", str(tmp_path / "x.bsd")], "none"),
    ]:
        bad = subprocess.run(
            HOST + ["pack", str(run), *extra], capture_output=True, text=True, cwd=ROOT
        )
        assert bad.returncode == 2, (extra, bad.stderr)
        assert message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not (tmp_path / "x.bsd").exists()


def test_micropython_applies_tier_1_and_tier_2_bit_exactly(tmp_path, models, update):
    (tmp_path / "base.bnn").write_bytes(models[0])
    (tmp_path / "u.bsd").write_bytes(update)
    (tmp_path / "tier1.bsd").write_bytes(update[: _step_ends(update)[0]])
    script = os.path.join(ROOT, "edge", "portable", "apply_delta.py")
    for name, want in (("tier1.bsd", models[1]), ("u.bsd", models[2])):
        out_path = tmp_path / ("out-" + name + ".bnn")
        # a named file that does not exist yet: tools/micropython.mjs copies it back
        done = subprocess.run(
            ["node", MPY, script, str(tmp_path / "base.bnn"), str(tmp_path / name), str(out_path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        row = json.loads(done.stdout.strip().splitlines()[-1])
        assert row["sha256"] == hashlib.sha256(want).hexdigest()
        assert out_path.read_bytes() == want
    done = subprocess.run(
        ["node", MPY, script, str(tmp_path / "u.bsd"), str(tmp_path / "u.bsd"), "x"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "portable-apply-delta: error:" in done.stderr, done.stderr


def test_train_fits_an_update_in_its_byte_budget_and_pack_writes_it(tmp_path, trained_run):
    run, data = trained_run / "run", trained_run / "data"
    old = tmp_path / "old.bnn"
    subprocess.run(HOST + ["pack", str(run), "--out", str(old)], check=True, cwd=ROOT)
    budget = 4200
    out = subprocess.run(
        HOST
        + ["train", "--data", str(data), "--init", str(run), "--delta-budget", str(budget)]
        + ["--epochs", "2", "--lr", "0.01", "--out", str(tmp_path / "u"), "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    with open(tmp_path / "u" / "metrics.json") as f:
        info = json.load(f)["delta"]
    assert info["budget"] == budget and 0 < info["flips_kept"] <= info["flips_found"]
    packed = subprocess.run(
        HOST
        + ["pack", str(tmp_path / "u"), "--delta-from", str(old), "--out", str(tmp_path / "u.bsd")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert packed.returncode == 0, packed.stderr
    update = (tmp_path / "u.bsd").read_bytes()
    assert len(update) <= budget, (len(update), packed.stdout)
    made = delta.apply_delta(old.read_bytes(), update)
    assert made.done and made.step == 2  # tier 1, then the flips
    assert "%d weight-bit flips" % info["flips_kept"] in packed.stdout
    for extra, message in [
        (["--init", str(run), "--delta-budget", "100"], "below the"),
        (["--delta-budget", "5000"], "--delta-budget needs --init"),
    ]:
        bad = subprocess.run(
            HOST + ["train", "--data", str(data), "--out", str(tmp_path / "v"), *extra],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert bad.returncode == 2, (extra, bad.stderr)
        assert message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert not (tmp_path / "v").exists()


def test_wire_curve_plots_accuracy_against_bytes_on_the_wire(tmp_path, models, update, trained_run):
    from protocol.cascade import write_cascade

    (tmp_path / "base.bnn").write_bytes(models[0])
    (tmp_path / "u.bsd").write_bytes(update)
    (tmp_path / "c.bsc").write_bytes(write_cascade([(models[1], None), (models[2], None)]))
    out = subprocess.run(
        [os.path.join(ROOT, "tools", "wire-curve")]
        + [str(tmp_path / n) for n in ("base.bnn", "c.bsc", "u.bsd")]
        + ["--data", str(trained_run / "data" / "test"), "--base", str(tmp_path / "base.bnn")]
        + ["--out", str(tmp_path / "curve")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "curve.json").read_text())
    assert [(r["model"], r["point"]) for r in rows] == [
        ("base.bnn", "whole"),
        ("c.bsc", "stage 1"),
        ("c.bsc", "stage 2"),
        ("u.bsd", "step 1"),
        ("u.bsd", "step 2"),
    ]
    by = {(r["model"], r["point"]): r for r in rows}
    # a delta costs far less on the wire than the model it makes; a stage less than the whole
    assert by[("u.bsd", "step 2")]["wire_bytes"] < by[("base.bnn", "whole")]["wire_bytes"]
    assert by[("c.bsc", "stage 1")]["wire_bytes"] < by[("c.bsc", "stage 2")]["wire_bytes"]
    assert all(r["wire_bytes"] > r["bytes"] and 0 <= r["accuracy"] <= 1 for r in rows)
    assert (tmp_path / "curve.png").stat().st_size > 0
    bad = subprocess.run(
        [os.path.join(ROOT, "tools", "wire-curve"), str(tmp_path / "u.bsd")]
        + ["--data", str(trained_run / "data" / "test"), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "give --base" in bad.stderr, bad.stderr


def test_a_new_box_code_takes_an_old_ones_output_and_ships_as_a_delta(tmp_path, trained_run):
    """A line replaces V22 by T31: fine-tune with --rename-label V22=T31 on data that has a T31
    folder, then a delta renames the output (its META carries the new labels)."""
    import shutil

    run, data = trained_run / "run", tmp_path / "data"
    shutil.copytree(trained_run / "data", data)
    for split in ("train", "test"):
        (data / split / "V22").rename(data / split / "T31")
    (data / "labels.json").unlink()  # the folders name the labels
    old = tmp_path / "old.bnn"
    subprocess.run(HOST + ["pack", str(run), "--out", str(old)], check=True, cwd=ROOT)
    base = ["train", "--data", str(data), "--init", str(run), "--epochs", "1", "--quiet"]
    out = subprocess.run(
        HOST + base + ["--rename-label", "V22=T31", "--out", str(tmp_path / "new")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    packed = subprocess.run(
        HOST
        + ["pack", str(tmp_path / "new"), "--delta-from", str(old)]
        + ["--out", str(tmp_path / "u.bsd"), "--data", str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert packed.returncode == 0, packed.stderr
    assert "renames output V22 to T31" in packed.stdout
    made = delta.apply_delta(old.read_bytes(), (tmp_path / "u.bsd").read_bytes())
    from protocol.bnn import read_bnn

    assert read_bnn(made.data).labels == ["F06", "K11", "S19", "T31", "empty"]
    for extra, message in [
        (["--rename-label", "X99=T31"], "the model has no label X99"),
        (["--rename-label", "V22=K11"], "already has K11"),
        (["--rename-label", "V22"], "takes OLD=NEW"),
        ([], "does not know"),  # the T31 folder without a rename
    ]:
        bad = subprocess.run(
            HOST + base + extra + ["--out", str(tmp_path / "bad")],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert bad.returncode == 2, (extra, bad.stderr)
        assert message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_thresholds_travel_as_one_byte_steps_when_they_move_little(update):
    import struct

    old = struct.pack("<5i", 0, -7, 100, -(2**31), 2**31 - 1)
    new = struct.pack("<5i", 63, -7 + 64, 100 - 64, -(2**31) + 5, 2**31 - 2)
    coded = delta.threshold_steps(old, new)
    assert len(coded) == 6  # +63, -64, +5 and -1 take a byte each, +64 two
    back, used = delta.apply_threshold_steps(old, coded + b"\x01", 0)
    assert back == new and used == len(coded)
    with pytest.raises(FormatError, match="end early"):
        delta.apply_threshold_steps(old, coded[:-1], 0)
    with pytest.raises(FormatError, match="out of range"):
        delta.apply_threshold_steps(struct.pack("<i", 2**31 - 1), b"\x02", 0)  # +1 past i32
    ops = [r[1][2] for r in delta._records(update) if r[0] == b"LAYR"]
    assert delta.THRESHOLD_STEPS in ops  # the fixture's BatchNorm change moves thresholds a little
