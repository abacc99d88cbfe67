"""Shipping over TCP and serial: signed installs, the attack cases (each leaves the slots as
they were), resume after drops, faults from tools/link-proxy, `.pranc` prefixes, CLI errors."""

import json
import os
import subprocess

import numpy as np
import pytest

from edge.install.store import Rejected, SlotStore
from protocol.errors import BinsortError
from protocol.manifest import parse_manifest
from protocol.session import RemoteError
from protocol.transports import serialport, tcp
from tests.conftest import LABELS, checkpoint_for, random_inputs
from tests.shipkit import (
    EDGE,
    HOST,
    ROOT,
    NoBytes,
    Proxy,
    Receiver,
    keys,
    signed_manifest,
    snapshot,
)


@pytest.fixture()
def device(tmp_path, tiny_model, bcnn_model):
    """A store trusting key one, with another model as v1 installed; key two is not trusted.
    The payload the tests ship is one no slot holds, so its bytes must travel."""
    key, pub = keys(tmp_path / "one")
    other_key, _ = keys(tmp_path / "two")
    store = str(tmp_path / "store")
    SlotStore.init(store, [pub])
    payload = tiny_model[1]
    model = tmp_path / "tiny.bnn"
    model.write_bytes(payload)
    rx = Receiver(store)
    first = bcnn_model[1]
    tcp.ship(rx.url, signed_manifest(first, key, 1), first, {"reconnects": 0})
    dev = {
        "store": store,
        "key": key,
        "other": other_key,
        "payload": payload,
        "rx": rx,
        "model": str(model),
        "tmp": tmp_path,
    }
    yield dev
    dev["rx"].stop()  # a test may have started another receiver in its place


def _refused(dev, manifest, payload, match):
    before = snapshot(dev["store"])
    with pytest.raises(RemoteError, match=match):
        tcp.ship(dev["rx"].url, manifest, payload, {"reconnects": 0})
    assert snapshot(dev["store"]) == before


def test_a_signed_model_is_installed_into_the_inactive_slot_and_made_active(device):
    state = SlotStore(device["store"]).summary()
    assert state["active"] == "a"
    assert state["slots"]["a"]["version"] == 1 and state["slots"]["a"]["kind"] == "bnn"
    v2 = signed_manifest(device["payload"], device["key"], 2)
    result = tcp.ship(device["rx"].url, v2, device["payload"], {"reconnects": 0})
    assert result["slot"] == "b" and result["ok"]
    snap = snapshot(device["store"])
    assert snap["active"] == "b" and snap["slots"]["b"]["version"] == 2
    assert snap["slots"]["a"]["version"] == 1  # the previous model stays for rollback
    assert os.listdir(os.path.join(device["store"], "partial")) == []


def test_unsigned_manifest_is_refused_before_anything_is_written(device):
    signed = json.loads(signed_manifest(device["payload"], device["key"], 5))
    signed["signatures"] = []
    _refused(device, json.dumps(signed).encode(), device["payload"], "unsigned")


def test_manifest_signed_by_an_untrusted_key_is_refused(device):
    manifest = signed_manifest(device["payload"], device["other"], 5)
    _refused(device, manifest, device["payload"], "does not trust")


def test_manifest_edited_after_signing_is_refused(device):
    obj = json.loads(signed_manifest(device["payload"], device["key"], 5))
    obj["signed"]["max_bytes"] = 1
    obj["signed"]["version"] = 6
    _refused(device, json.dumps(obj).encode(), device["payload"], "does not verify")


def test_tampered_payload_is_rejected_before_activation(device):
    manifest = signed_manifest(device["payload"], device["key"], 5)
    bad = bytearray(device["payload"])
    bad[5000] ^= 1
    _refused(device, manifest, bytes(bad), "tampered payload")
    # the bad chunk was cut off: a later honest transfer of the same version still works
    tcp.ship(device["rx"].url, manifest, device["payload"], {"reconnects": 0})
    assert snapshot(device["store"])["slots"]["b"]["version"] == 5


@pytest.mark.parametrize("version", [1, 0.5])
def test_version_not_newer_than_the_active_one_is_refused(device, version):
    if version == 0.5:  # an older model (v1 active after v1; ship v2, then try v1 again)
        tcp.ship(
            device["rx"].url,
            signed_manifest(device["payload"], device["key"], 2),
            device["payload"],
            {"reconnects": 0},
        )
        version = 1
    manifest = signed_manifest(device["payload"], device["key"], version, model_id="other")
    _refused(device, manifest, device["payload"], "not newer")


def test_signed_rollback_is_accepted_logged_and_cannot_be_replayed(device):
    url = device["rx"].url
    tcp.ship(url, signed_manifest(device["payload"], device["key"], 2), device["payload"], {})
    back = signed_manifest(device["payload"], device["key"], 1, rollback=True, model_id="prev")
    assert tcp.ship(url, back, device["payload"], {})["version"] == 1
    snap = snapshot(device["store"])
    assert snap["slots"][snap["active"]]["rollback"] is True
    with open(os.path.join(device["store"], "log")) as f:
        assert "rollback to prev v1" in f.read()
    tcp.ship(url, signed_manifest(device["payload"], device["key"], 3), device["payload"], {})
    _refused(device, back, device["payload"], "replayed manifest")


def test_a_rollback_to_the_model_in_the_other_slot_sends_no_payload_bytes(device, bcnn_model):
    url = device["rx"].url
    tcp.ship(url, signed_manifest(device["payload"], device["key"], 2), device["payload"], {})
    assert snapshot(device["store"])["active"] == "b"
    first = bcnn_model[1]  # v1, in slot a
    back = signed_manifest(first, device["key"], 1, rollback=True, model_id="prev")
    acked = []
    options = {"progress": lambda done, size: acked.append(done)}
    result = tcp.ship(url, back, NoBytes(len(first)), options)
    assert result["ok"] and result["slot"] == "a" and acked[0] == len(first)
    snap = snapshot(device["store"])
    assert snap["active"] == "a" and snap["slots"]["a"]["rollback"] is True
    assert snap["files"]["a/model.bnn"] == snap["slots"]["a"]["sha256"]
    assert snap["slots"]["b"]["version"] == 2  # the model rolled back from stays
    assert os.listdir(os.path.join(device["store"], "partial")) == []


def test_a_model_no_slot_holds_still_needs_its_bytes(device):
    payload = device["payload"]
    manifest = signed_manifest(payload, device["key"], 2)
    with pytest.raises(AssertionError, match="already holds"):
        tcp.ship(device["rx"].url, manifest, NoBytes(len(payload)), {})


def test_replayed_manifest_is_refused(device):
    url = device["rx"].url
    v7 = signed_manifest(device["payload"], device["key"], 7)
    tcp.ship(url, v7, device["payload"], {})
    _refused(device, v7, device["payload"], "replayed manifest")


def test_oversize_payload_is_refused_before_any_data(device, tmp_path):
    state_path = os.path.join(device["store"], "store.json")
    with open(state_path) as f:
        state = json.load(f)
    state["max_bytes"] = 4000
    with open(state_path, "w") as f:
        json.dump(state, f)
    _refused(
        device,
        signed_manifest(device["payload"], device["key"], 9),
        device["payload"],
        "over this device's limit",
    )
    assert os.listdir(os.path.join(device["store"], "partial")) == []


def test_payload_longer_than_its_manifest_is_refused(device):
    manifest = signed_manifest(device["payload"], device["key"], 9)
    _refused(device, manifest, device["payload"] + b"x" * 3000, "beyond the payload size")


def test_signed_bytes_that_are_not_a_working_model_are_refused(device):
    junk = b"BNN1" + bytes(range(256)) * 20
    _refused(device, signed_manifest(junk, device["key"], 9), junk, "self-test")


def _throttled_ship(device, *proxy_args):
    proxy = Proxy("tcp", "--to", "127.0.0.1:%d" % device["rx"].port, *proxy_args)
    url = "tcp://" + proxy.endpoints["listen"]
    try:
        result = tcp.ship(
            url,
            signed_manifest(device["payload"], device["key"], 4),
            device["payload"],
            {"reconnects": 30},
        )
    finally:
        counts = proxy.stop()
    return result, counts


def test_dropped_corrupted_duplicated_and_truncated_frames_still_install_the_right_bytes(device):
    result, counts = _throttled_ship(
        device,
        "--drop",
        "0.1",
        "--corrupt",
        "0.1",
        "--duplicate",
        "0.1",
        "--truncate",
        "0.1",
        "--faults-both",
        "--seed",
        "3",
    )
    assert result["version"] == 4
    assert counts["dropped"] + counts["corrupted"] + counts["truncated"] >= 3, counts
    snap = snapshot(device["store"])
    assert (
        snap["slots"][snap["active"]]["sha256"]
        == parse_manifest(signed_manifest(device["payload"], device["key"], 4)).sha256
    )


def test_transfer_resumes_after_every_disconnect(device):
    # each connection carries the handshake and about one data frame before it is cut, so
    # the ~8 KB model needs more connections than there are cuts
    result, counts = _throttled_ship(device, "--disconnect-after", "2000", "--disconnects", "4")
    assert counts["cuts"] == 4 and result["version"] == 4
    out = device["rx"].stop()
    device["rx"] = Receiver(device["store"])  # the fixture stops it again
    resumed = [
        int(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "resuming at byte" in line
    ]
    assert len(resumed) == 4 and resumed == sorted(set(resumed)) and resumed[0] > 0, out


def spoil_the_partial(url: str, manifest: bytes, garbage: bytes, session=4242) -> int:
    """A peer that replays a signed manifest (it travels in clear), sends `garbage` as the
    payload's first bytes and leaves: the device keeps them, unverified, as the tail of a
    chunk not yet complete. Returns where the device accepted the offer."""
    import socket
    import struct

    from protocol import frames as fr
    from protocol.session import OFFER_HEAD

    host, port = url[len("tcp://") :].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        hello = json.dumps({"proto": [1], "max_payload": 1024, "window": 8}).encode()
        sock.sendall(fr.encode_frame(fr.Frame(fr.HELLO, session, 0, hello)))
        head = struct.pack(OFFER_HEAD, len(manifest))
        for at in range(0, len(manifest), 1020):
            piece = head + manifest[at : at + 1020]
            sock.sendall(fr.encode_frame(fr.Frame(fr.OFFER, session, at, piece)))
        decoder, accepted = fr.FrameDecoder(), None
        while accepted is None:
            for f in decoder.push(sock.recv(4096)):
                if f.kind == fr.ACCEPT:
                    accepted = f.offset
        for at in range(0, len(garbage), 1024):
            piece = garbage[at : at + 1024]
            sock.sendall(fr.encode_frame(fr.Frame(fr.DATA, session, accepted + at, piece)))
        acked = 0
        while acked < accepted + len(garbage):  # the device has written them all
            for f in decoder.push(sock.recv(4096)):
                if f.kind == fr.ACK:
                    acked = max(acked, f.offset)
    return accepted


def test_bytes_an_earlier_session_spoiled_cost_a_resume_not_the_shipment(device):
    """Bytes kept from an earlier session are unverified until their chunk is whole. If they
    were garbage (a peer that replayed the manifest), the chunk fails its hash when the real
    sender completes it: the device drops them and says where to resume, and the sender
    opens a new session there, instead of the shipment being refused as tampered."""
    v2 = signed_manifest(device["payload"], device["key"], 2)
    assert len(parse_manifest(v2).signed["chunks"]) >= 1
    first_chunk = parse_manifest(v2).signed["chunks"][0][0]
    assert first_chunk > 2048  # the garbage stays inside the first, unfinished chunk
    assert spoil_the_partial(device["rx"].url, v2, os.urandom(2048)) == 0
    result = tcp.ship(device["rx"].url, v2, device["payload"], {"reconnects": 2})
    assert result["ok"] and result["version"] == 2
    snap = snapshot(device["store"])
    assert snap["slots"][snap["active"]]["sha256"] == parse_manifest(v2).sha256
    out = device["rx"].stop()
    device["rx"] = Receiver(device["store"])  # the fixture stops it again
    assert "drop line-3 v2 from byte 0: an earlier session's bytes failed" in out, out
    # a partial file spoiled again before every session: the sender gives up, bounded by
    # its reconnects, and the slots are as they were
    other = device["payload"][:-1] + bytes([device["payload"][-1] ^ 1])  # in no slot
    url, v3 = device["rx"].url, signed_manifest(other, device["key"], 3)
    before = snapshot(device["store"])
    spoil_the_partial(url, v3, os.urandom(2048))
    options = {
        "reconnects": 1,
        "on_reconnect": lambda n, why: spoil_the_partial(url, v3, os.urandom(2048), 5000 + n),
    }
    with pytest.raises(BinsortError, match="gave up after 1 reconnects without progress: the "):
        tcp.ship(url, v3, other, options)
    assert snapshot(device["store"]) == before


def test_serial_link_over_a_pty_pair_at_115200_baud_with_faults(device, tmp_path):
    proxy = Proxy("pty", "--baud", "115200", "--drop", "0.05", "--corrupt", "0.05", "--seed", "1")
    a, b = proxy.endpoints["a"], proxy.endpoints["b"]
    rx = subprocess.Popen(
        EDGE
        + [
            "receive",
            "--serial",
            "serial://%s?baud=115200" % b,
            "--store",
            device["store"],
            "--once",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        out = subprocess.run(
            HOST
            + [
                "ship",
                device["model"],
                "--to",
                "serial://%s?baud=115200" % a,
                "--key",
                device["key"],
                "--version",
                "8",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert out.returncode == 0, out.stderr
        assert "installed tiny version 8" in out.stdout
        assert rx.wait(timeout=30) == 0
    finally:
        rx.kill()
        counts = proxy.stop()
    assert counts["dropped"] + counts["corrupted"] > 0
    assert SlotStore(device["store"]).summary()["slots"]["b"]["version"] == 8


def test_pranc_prefixes_are_installed_as_they_arrive_per_the_accuracy_policy(tmp_path):
    from host.pack_pranc import pack_pranc
    from tests.test_pranc_stream import random_pranc

    images = random_inputs(40, 32, seed=2)
    data = pack_pranc(checkpoint_for("tiny"), random_pranc(), (images, np.arange(40) % len(LABELS)))
    (tmp_path / "m.pranc").write_bytes(data)
    key, pub = keys(tmp_path / "k")
    store = str(tmp_path / "store")
    SlotStore.init(store, [pub])
    from host.ship import build_manifest

    manifest, payload, signed = build_manifest(str(tmp_path / "m.pranc"), key, version=3)
    accs = [c[2] for c in signed["chunks"]]  # in 1/10000
    policy = sorted(accs)[len(accs) // 2] / 10000
    rx = Receiver(store, "--pranc-min-accuracy", str(policy))
    seen = []
    try:
        result = tcp.ship(rx.url, manifest, payload, {"status": seen.append})
    finally:
        rx.stop()
    expected = [c[0] for c in signed["chunks"][:-1] if c[2] / 10000 >= policy]
    assert [s["installed"] for s in seen] == expected and expected
    assert result["kind"] == "pranc"
    rec = SlotStore(store).summary()
    assert rec["slots"][rec["active"]]["complete"] is True


def test_ship_cli_errors_are_one_line_with_status_2(tmp_path, tiny_model):
    key, _ = keys(tmp_path / "k")
    model = tmp_path / "m.bnn"
    model.write_bytes(tiny_model[1])
    cases = [
        (["--to", "tcp://127.0.0.1:9"], "refused the connection"),
        (["--to", "tcp://no-such-host.invalid:7600"], "unknown host"),
        (["--to", "serial:///dev/ttyNOPE0"], "no such device"),
        (["--to", "ftp://x"], "unsupported link"),
        (["--to", "tcp://127.0.0.1:9", "--version", "0"], "--version"),
        (["--to", "tcp://127.0.0.1:9", "--give-up", "0"], "--give-up must be a positive"),
    ]
    for extra, message in cases:
        out = subprocess.run(
            HOST + ["ship", str(model), "--key", key, "--quiet", "--reconnects", "0", *extra],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert out.returncode == 2, (extra, out.stderr)
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    model.write_bytes(tiny_model[1][:-10])
    out = subprocess.run(
        HOST + ["ship", str(model), "--key", key, "--to", "tcp://127.0.0.1:9"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2 and "m.bnn" in out.stderr


@pytest.mark.parametrize(
    "faults, symptom",
    [
        (["--faults-back"], "every frame from the device arrived damaged for 3 s"),
        # frames towards the device damaged: it has nothing it could answer
        ([], "no answer from the device for 3 s"),
        (["--faults-both"], "no answer from the device for 3 s"),
    ],
)
def test_ship_through_a_link_that_damages_every_frame_stops_with_the_symptom(
    device, faults, symptom
):
    """Retries and reconnects would go on for minutes (20 reconnects of 9 doubling tries);
    with no intact frame back for --give-up seconds, ship stops with one line that says what
    the link does, status 2, the device's slots as they were."""
    import time

    proxy = Proxy("tcp", "--to", "127.0.0.1:%d" % device["rx"].port, "--corrupt", "1", *faults)
    before = snapshot(device["store"])
    started = time.monotonic()
    try:
        out = subprocess.run(
            HOST
            + ["ship", device["model"], "--to", "tcp://" + proxy.endpoints["listen"]]
            + ["--key", device["key"], "--version", "9", "--give-up", "3", "--quiet"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        counts = proxy.stop()
    took = time.monotonic() - started
    assert out.returncode == 2, out.stderr
    assert symptom in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert took < 15, took  # 3 s of silence and the start-up, not minutes of retries
    assert counts["corrupted"] > 0 and snapshot(device["store"]) == before


def test_the_link_watch_names_the_symptom_and_waits_while_the_device_verifies():
    from protocol.sender import Hopeless, LinkWatch

    now = [0.0]
    watch = LinkWatch(10.0, clock=lambda: now[0])
    watch.connected()
    now[0] = 9.9
    watch.heard(0, 0, 0)  # still within the time
    now[0] = 10.0
    with pytest.raises(Hopeless, match="no answer from the device for 10 s"):
        watch.heard(0, 0, 0)
    watch.heard(40, 1, 0)  # an intact frame: the clock starts again
    now[0] = 20.0
    with pytest.raises(Hopeless, match="2 damaged, none intact"):
        watch.heard(60, 0, 2)
    watch.busy = True  # the payload is all acknowledged: the device checks it, silently
    now[0] = 100.0
    watch.check()
    watch.busy = False
    now[0] = 111.0
    with pytest.raises(Hopeless, match="no connection to the device for 10 s: refused"):
        watch.connect_failed(BinsortError("refused"))


def test_busy_serial_port_is_named(tmp_path):
    proxy = Proxy("pty")
    try:
        url = "serial://%s" % proxy.endpoints["a"]
        first = serialport.open_link(url)
        with pytest.raises(BinsortError, match="busy"):
            serialport.open_link(url)
        first.close()
    finally:
        proxy.stop()


def test_receiver_with_a_missing_store_or_port_in_use_fails_cleanly(tmp_path, device):
    out = subprocess.run(
        EDGE + ["receive", "--listen", "tcp://127.0.0.1:0", "--store", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2 and "not a binsort model store" in out.stderr
    out = subprocess.run(
        EDGE + ["receive", "--listen", device["rx"].url, "--store", device["store"]],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2 and "in use" in out.stderr
    for bad in ("0", "-3", "nan"):
        out = subprocess.run(
            EDGE
            + ["receive", "--listen", "tcp://127.0.0.1:0", "--store", device["store"]]
            + ["--first-frame", bad],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=15,
        )
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and "--first-frame must be a positive" in out.stderr


def test_edge_options_out_of_range_are_one_line_before_any_work(device, tmp_path):
    """Numbers each of these took without a word: an accuracy of 2 or NaN (then listened for
    ever), a first frame of 1e300 s (past what a timer takes), --max-bytes 0 (taken as the
    default), a ring of NaN MB (a traceback), a bench batch of 1e8 images (memory), negative
    frame counts (ran, then stopped at once with status 0)."""
    config = tmp_path / "edge.toml"
    config.write_text(
        '[model]\nstore = "%s"\n[source]\nurl = "sim:?size=64&fps=200"\n'
        '[lanes]\nreject = "reject"\nmap = { F06 = "left" }\n' % device["store"]
    )
    listen = ["receive", "--listen", "tcp://127.0.0.1:0", "--store", device["store"], "--once"]
    cases = [
        (listen + ["--pranc-min-accuracy", "2"], "between 0 and 1"),
        (listen + ["--pranc-min-accuracy", "nan"], "between 0 and 1"),
        (listen + ["--first-frame", "1e300"], "at most 3600"),
        (["store", "--store", str(tmp_path / "s"), "--init", "--max-bytes", "0"], "at least 1"),
        (["bench", "--model", device["model"], "--batch", "100000000"], "at most 4096"),
        (["run", "--config", str(config), "--max-frames", "-1"], "--max-frames"),
        (["capture", "--config", str(config), "--dir", str(tmp_path / "c"), "--max-mb", "nan"],
         "max_mb must be positive"),
    ]  # fmt: skip
    for args, words in cases:
        out = subprocess.run(EDGE + args, capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and words in out.stderr, (args, out.stderr)
    assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()


def test_store_reports_its_state_as_json(device):
    out = subprocess.run(
        EDGE + ["store", "--store", device["store"], "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    state = json.loads(out.stdout)
    assert state["active"] == "a"
    slot = state["slots"]["a"]
    assert {k: slot[k] for k in ("model_id", "version", "kind")} == {
        "model_id": "line-3",
        "version": 1,
        "kind": "bnn",
    }
    with open(os.path.join(device["store"], "slots", "a", "model.bnn"), "rb") as f:
        import hashlib

        assert slot["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert state["slots"]["b"] is None


def test_installing_directly_checks_the_same_rules(device):
    store = SlotStore(device["store"])
    manifest = store.verify(signed_manifest(device["payload"], device["key"], 11))
    bad = device["tmp"] / "bad.bnn"
    bad.write_bytes(device["payload"][:-1] + b"\x00")
    before = snapshot(device["store"])
    with pytest.raises(Rejected, match="payload has|tampered"):
        store.install(manifest, str(bad))
    assert snapshot(device["store"]) == before


def test_a_flood_of_refusals_is_logged_in_one_line_a_minute_past_the_first_few(device, monkeypatch):
    """Past REFUSALS_PER_MINUTE refusals a minute, the rest are counted, not written: the
    installs and rollbacks stay in the log instead of being rotated out by a flood."""
    import edge.install.store as store_module

    clock = {"t": 1000.0}
    monkeypatch.setattr(store_module.time, "monotonic", lambda: clock["t"])
    store = SlotStore(device["store"])
    for i in range(store_module.REFUSALS_PER_MINUTE + 500):
        with pytest.raises(Rejected):
            store.verify(b'{"not": "a manifest %d"}' % i)
    clock["t"] += 61
    store.log("installed something")
    with open(os.path.join(device["store"], "log")) as f:
        lines = [line.split(" ", 1)[1].strip() for line in f]
    refusals = [line for line in lines if line.startswith("reject")]
    assert len(refusals) == store_module.REFUSALS_PER_MINUTE
    assert lines[-2:] == [
        "500 more refusals in the minute before were not logged",
        "installed something",
    ]
