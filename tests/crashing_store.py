"""Run one store operation, killing this process right before its k-th file-system step
(a write, an fsync, a rename or a removal), as a power cut would stop it there.

    python tests/crashing_store.py K install STORE MANIFEST PAYLOAD
    python tests/crashing_store.py K activate STORE

Prints "completed N" when the operation finished in fewer than K steps.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import edge.install.store as store_module  # noqa: E402

STEPS = [0]
KILL_AT = int(sys.argv[1])


def step():
    STEPS[0] += 1
    if STEPS[0] == KILL_AT:
        os._exit(137)


class CountingFile:
    def __init__(self, f):
        self._f = f

    def write(self, data):
        step()
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._f, name)


def counting_open(path, mode="r", *args, **kwargs):
    f = open(path, mode, *args, **kwargs)  # noqa: SIM115 (the caller closes it)
    return CountingFile(f) if any(c in mode for c in "wa+") else f


def counting(fn):
    def wrapped(*args, **kwargs):
        step()
        return fn(*args, **kwargs)

    return wrapped


store_module.open = counting_open
for name in ("fsync", "replace", "rename", "remove", "truncate"):
    setattr(os, name, counting(getattr(os, name)))

store = store_module.SlotStore(sys.argv[3])
if sys.argv[2] == "install":
    with open(sys.argv[4], "rb") as f:
        manifest = store.verify(f.read())
    store.install(manifest, sys.argv[5])
else:  # what the daemon does to a model it starts and confirms
    store.recover()
    store.begin_trial()
    store.commit_trial("test")
print("completed %d" % STEPS[0])
