"""The counter-based hash that every PRANC basis is drawn from (docs/format.md, "PRANC hash").

`hash32(seed, layer, stream, index)` is a stateless 32-bit value: nothing is carried from one call
to the next, so any machine can produce any part of any basis in any order. It chains four rounds
of `mix32`, a 32-bit integer finaliser (two odd multiplies and three xor-shifts, after
C. Wellons' "lowbias32"), one round per input word. Library generators (torch, numpy, `random`)
are never used for a basis: their streams differ between devices and versions.

This is the reference implementation, in plain integers so MicroPython runs it;
edge.engine.basis holds the numpy one and host.pranc_torch the torch one, and all three are
checked against the fixed vectors in docs/format.md.
"""

HASH_ID = "bs-mix32"
HASH_VERSION = 1

MASK32 = 0xFFFFFFFF
MUL1 = 0x7FEB352D
MUL2 = 0x846CA68B
SEED_SALT = 0x243F6A88  # first digits of pi: keeps seed 0 away from mix32's fixed point at 0


def mix32(x: int) -> int:
    """A bijection on 32-bit integers with good avalanche."""
    x &= MASK32
    x ^= x >> 16
    x = (x * MUL1) & MASK32
    x ^= x >> 15
    x = (x * MUL2) & MASK32
    x ^= x >> 16
    return x


def stream_key(seed: int, layer: int, stream: int) -> int:
    """The per-(seed, layer, stream) key; hash32 then mixes one more word into it."""
    return mix32(mix32(mix32(seed ^ SEED_SALT) ^ layer) ^ stream)


def hash32(seed: int, layer: int, stream: int, index: int) -> int:
    """The 32-bit hash of (seed, layer, stream, index), each an unsigned 32-bit integer."""
    return mix32(stream_key(seed, layer, stream) ^ index)


def sign_bits(seed: int, layer: int, stream: int, count: int) -> list:
    """`count` signs as 0/1 (1 means -1): bit i is bit (i % 32), LSB first, of word i // 32."""
    key = stream_key(seed, layer, stream)
    out = []
    for w in range((count + 31) // 32):
        word = mix32(key ^ w)
        for b in range(min(32, count - 32 * w)):
            out.append((word >> b) & 1)
    return out
