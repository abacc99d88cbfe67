"""A hostile or broken peer inside the framing: a legitimate session's frames, each trace
mutated (kinds, offsets, lengths, payload bits, HELLO fields, the offer's length, frames
dropped, duplicated and swapped), fed through the wire format to the receiver on a real store.
Whatever arrives: no exception escapes and no ERROR says "internal error", the only model that
can become active is the one the manifest signs, and afterwards a legitimate sender installs
it on the same store (after at most one `resume at byte N`: the fuzzer's bytes may have
spoiled the `.partial` file's unverified tail)."""

import json
import random
import struct

import pytest

from edge.install.receiver import StoreSink
from edge.install.store import SlotStore
from protocol import frames as fr
from protocol.session import OFFER_HEAD, RESUME_AT, Receiver
from tests.shipkit import keys, signed_manifest

FRAME = 512
U32 = [0, 1, 3, 15, 16, 17, 511, 512, 513, 1024, 4095, 4096, 65535, 1 << 20, (1 << 31) - 1]
U32 += [1 << 31, (1 << 32) - 1]
ODD = [None, True, 0, -1, 1.5, 1e308, "x", [], {}, [1] * 20, [True], [0], [2**40], "1", [1, 1]]


def trace(session, manifest, payload, resume=None):
    """The frames of a clean session; with `resume`, DATA from there only."""
    hello = {"proto": [1], "max_payload": FRAME, "window": 4}
    out = [fr.Frame(fr.HELLO, session, 0, json.dumps(hello).encode())]
    head = struct.pack(OFFER_HEAD, len(manifest))
    for at in range(0, len(manifest), FRAME - 4):
        out.append(fr.Frame(fr.OFFER, session, at, head + manifest[at : at + FRAME - 4]))
    for at in range(resume or 0, len(payload), FRAME):
        out.append(fr.Frame(fr.DATA, session, at, payload[at : at + FRAME]))
    out.append(fr.Frame(fr.DONE, session, len(payload)))
    return out


def odd_hello(rng) -> bytes:
    fields = {}
    for k in ("proto", "max_payload", "window"):
        if rng.random() < 0.7:
            fields[k] = rng.choice(ODD) if rng.random() < 0.6 else rng.choice(U32)
    text = json.dumps(fields)
    return text[: rng.randint(0, len(text))].encode() if rng.random() < 0.1 else text.encode()


def mutated(rng, frames):
    frames = list(frames)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(frames))
        f = frames[i]
        kind, session, offset, payload = f.kind, f.session, f.offset, f.payload
        op = rng.randrange(11)
        if op == 0:
            kind = rng.randint(0, 12)
        elif op == 1:
            offset = rng.choice(U32)
        elif op == 2:
            offset = max(0, offset + rng.choice([-1, 1, -FRAME, FRAME, 4, -4]))
        elif op == 3:
            payload = payload[: rng.randint(0, len(payload))]
        elif op == 4:
            payload += rng.randbytes(rng.randint(1, 600))
        elif op == 5:
            flipped = bytearray(payload)
            for _ in range(rng.randint(1, 4)):
                if flipped:
                    flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            payload = bytes(flipped)
        elif op == 6:
            frames.insert(i, f)
            continue
        elif op == 7:
            frames.pop(i)
            continue
        elif op == 8:
            j = rng.randrange(len(frames))
            frames[i], frames[j] = frames[j], frames[i]
            continue
        elif op == 9:
            kind, payload = fr.HELLO, odd_hello(rng)
        elif kind == fr.OFFER:
            payload = struct.pack(OFFER_HEAD, rng.choice(U32)) + payload[4:]
        frames[i] = fr.Frame(kind, session, offset, payload[: fr.MAX_PAYLOAD])
    return frames


def feed(rx, frames, now) -> list:
    replies = []
    for f in frames:
        for g in fr.FrameDecoder().push(fr.encode_frame(f)):  # as a peer's bytes arrive
            replies += rx.on_frame(g, now)
    return replies


def clean_ship(store, manifest, payload, session, now) -> list:
    """A legitimate sender's sessions: DATA from where ACCEPT says, and a new session when
    the device says `resume at byte N`."""
    for attempt in range(2):
        rx = Receiver(lambda: StoreSink(SlotStore(store)))
        s = session + attempt
        accept = feed(rx, [f for f in trace(s, manifest, payload) if f.kind != fr.DATA][:-1], now)
        resume = [f.offset for f in accept if f.kind == fr.ACCEPT]
        replies = accept + feed(
            rx, trace(s, manifest, payload, resume[0])[-1 - len(payload) :], now
        )
        resumed = [
            f for f in replies if f.kind == fr.ERROR and f.payload.startswith(RESUME_AT.encode())
        ]
        if not resumed:
            return replies
    return replies


@pytest.mark.parametrize("seed", [1, 2])
def test_mutated_sessions_never_crash_the_receiver_nor_install_anything_unsigned(
    tmp_path, tiny_model, seed
):
    rng = random.Random(seed)
    key, pub = keys(tmp_path / "k")
    payload = tiny_model[1]
    manifest = signed_manifest(payload, key, 3)
    for run in range(40):
        store = str(tmp_path / ("store%d" % run))
        SlotStore.init(store, [pub])
        rx = Receiver(lambda store=store: StoreSink(SlotStore(store)))
        frames = mutated(rng, trace(1000 + run, manifest, payload))
        replies = feed(rx, frames, 1.0 + run)
        rx.link_lost()
        errors = [bytes(f.payload) for f in replies if f.kind == fr.ERROR]
        assert not [e for e in errors if b"internal error" in e], (run, errors, frames)
        state = SlotStore(store).summary()
        if state["active"] is not None:
            assert state["slots"][state["active"]]["version"] == 3
        if state["active"] is None:  # the legitimate sender still gets it there
            replies = clean_ship(store, manifest, payload, 5000 + 2 * run, 100.0 + run)
            results = [json.loads(f.payload) for f in replies if f.kind == fr.RESULT]
            assert results and results[0]["ok"], (run, [bytes(f.payload) for f in replies])
            assert SlotStore(store).summary()["slots"][results[0]["slot"]]["version"] == 3
