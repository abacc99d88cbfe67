"""The `.bsc` cascade: a small model first, then the full one, in one stream (docs/format.md,
"`.bsc` cascade").

An 8-byte header (magic, version), then records framed like `.bnn` sections (tag, length,
payload, CRC32): one STAG per stage, smallest first, each holding a whole `.bnn` and the
accuracy the host measured for it, then DONE with the SHA-256 of every byte before it. Any
prefix that ends just after a STAG is a usable model: the last stage in it. A device on a weak
link sorts with the first stage as soon as it has arrived and checked, and the full model
replaces it when the rest arrives.

`read_cascade` checks everything it is given and raises FormatError, never anything else; a
prefix that does not end on a stage is refused, not cut back. Standard library only, in the
subset MicroPython runs.
"""

import hashlib
import struct

from protocol import bnn
from protocol.errors import FormatError
from protocol.records import HEADER, read_records, record

MAGIC = b"BSCA"
VERSION_MAJOR = 1
VERSION_MINOR = 0
STAGE_HEAD = "<HHH"  # stage index, stage count, host accuracy in 1/10000 (0xFFFF: not measured)
NOT_MEASURED = 0xFFFF
MAX_STAGES = 8
MAX_STAGE_BYTES = 40 << 20  # a stage is a .bnn, whose weights read_bnn bounds at 32 MiB


class Stage:
    """One stage: its index and count, the host's accuracy (None: not measured), its model,
    and the stream offset where its record ends."""

    def __init__(self, index: int, count: int, accuracy, model, end: int):
        self.index, self.count, self.accuracy = index, count, accuracy
        self.model, self.end = model, end


class Cascade:
    """The stages of a stream or of a prefix of it; `done` says the stream was complete."""

    def __init__(self, stages: list, done: bool):
        self.stages, self.done = stages, done

    @property
    def model(self):
        """The model a device runs: the last stage it has."""
        return self.stages[-1].model

    @property
    def stage(self) -> "tuple[int, int]":
        """(1-based number of that stage, stages in the stream)."""
        last = self.stages[-1]
        return last.index + 1, last.count


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise FormatError("not a valid .bsc cascade: " + what)


def write_cascade(stages: list) -> bytes:
    """The stream of `stages`, a list of (.bnn bytes, host accuracy or None), smallest first.
    Every stage must be a valid `.bnn`, and all must have the same labels."""
    if not 1 <= len(stages) <= MAX_STAGES:
        raise ValueError("a cascade has 1 to %d stages, not %d" % (MAX_STAGES, len(stages)))
    models = [bnn.read_bnn(data) for data, _ in stages]
    _same_task(models)
    body = struct.pack(HEADER, MAGIC, VERSION_MAJOR, VERSION_MINOR)
    for i, (data, accuracy) in enumerate(stages):
        acc = NOT_MEASURED if accuracy is None else int(round(accuracy * 10000))
        if not 0 <= acc <= NOT_MEASURED:
            raise ValueError("stage %d: accuracy %r is not between 0 and 1" % (i + 1, accuracy))
        body += record(b"STAG", struct.pack(STAGE_HEAD, i, len(stages), acc) + bytes(data))
    return body + record(b"DONE", hashlib.sha256(body).digest())


def _same_task(models: list) -> None:
    """Every stage sorts into the same labels (each may read its own input size)."""
    first = models[0].meta
    for i, model in enumerate(models[1:], 2):
        _check(
            model.meta["labels"] == first["labels"],
            "stage %d has labels %s, stage 1 %s" % (i, model.meta["labels"], first["labels"]),
        )


def read_cascade(data: bytes) -> Cascade:
    """Parse and verify a whole stream or a prefix that ends just after a stage; FormatError
    for anything else (a prefix ending inside a record, a stage out of order, a stage that is
    not a valid `.bnn`, stages with different labels, a wrong SHA-256)."""
    data = bytes(data)
    sn = struct.calcsize(STAGE_HEAD)
    stages, done = [], False
    for tag, payload, end, at in read_records(
        data, MAGIC, VERSION_MAJOR, ".bsc cascade", MAX_STAGE_BYTES
    ):
        if tag == b"STAG":
            _check(len(payload) > sn, "stage record %d has no model" % (len(stages) + 1))
            index, count, acc = struct.unpack_from(STAGE_HEAD, payload)
            _check(1 <= count <= MAX_STAGES, "implausible stage count %d" % count)
            _check(index == len(stages), "stage %d where stage %d belongs" % (index, len(stages)))
            _check(index < count, "stage %d of %d" % (index + 1, count))
            if stages and stages[0].count != count:
                _check(
                    False,
                    "stage %d says %d stages, stage 1 said %d"
                    % (index + 1, count, stages[0].count),
                )
            _check(acc <= 10000 or acc == NOT_MEASURED, "stage accuracy %d/10000" % acc)
            try:
                model = bnn.read_bnn(payload[sn:])
            except FormatError as e:
                raise FormatError("stage %d of the cascade: %s" % (index + 1, e)) from None
            accuracy = None if acc == NOT_MEASURED else acc / 10000
            stages.append(Stage(index, count, accuracy, model, end))
            _same_task([stages[0].model, model])
        elif tag == b"DONE":
            _check(stages and len(stages) == stages[0].count, "DONE before the last stage")
            _check(
                len(payload) == 32 and hashlib.sha256(data[:at]).digest() == payload,
                "SHA-256 mismatch",
            )
            done = True
        else:
            _check(False, "unknown record %r" % (tag,))
    _check(stages, "no stage in %d bytes" % len(data))
    return Cascade(stages, done)
