"""Apply a `.bsd` delta to the `.bnn` it updates with the portable code; runs under MicroPython
and CPython.

    micropython edge/portable/apply_delta.py BASE.bnn DELTA.bsd OUT.bnn

The delta (whole, or a prefix of it that ends on a step) must name BASE's SHA-256, and every
step must make exactly the `.bnn` whose SHA-256 it records (protocol.delta), so OUT is
bit-identical to what the host packed. OUT is then loaded and self-tested on its golden inputs
with the portable engine. The last line on stdout is JSON: the steps applied, whether the
delta was complete, and OUT's SHA-256. A bad file is one line on stderr and exit status 2.
"""

import binascii
import hashlib
import json
import sys

from edge.portable.engine import PortableEngine
from protocol.bnn import read_bnn
from protocol.delta import apply_delta
from protocol.errors import BinsortError


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise BinsortError("cannot read %s: %s" % (path, e)) from None


def main(argv: list) -> int:
    if len(argv) != 3:
        print("usage: portable_apply_delta BASE.bnn DELTA.bsd OUT.bnn", file=sys.stderr)
        return 2
    update = apply_delta(_read(argv[0]), _read(argv[1]))
    if PortableEngine(read_bnn(update.data)).self_test():
        raise BinsortError("the updated model fails its self-test on golden inputs")
    with open(argv[2], "wb") as f:
        f.write(update.data)
    digest = binascii.hexlify(hashlib.sha256(update.data).digest()).decode()
    print(json.dumps({"steps": update.step, "done": update.done, "sha256": digest}))
    return 0


def run(argv: list) -> int:
    try:
        return main(argv)
    except BinsortError as e:
        print("portable-apply-delta: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
