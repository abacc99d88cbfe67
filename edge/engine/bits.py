"""Bit packing shared by the engines and the host packer: +-1 values as bits (1 = -1), least
significant bit first along the last axis (docs/format.md)."""

import numpy as np


def pack_signs(negative: np.ndarray) -> np.ndarray:
    """Pack a boolean array (True = -1) along its last axis, LSB first; the length must be a
    multiple of 8. Used for weights by the host packer and for activations here."""
    return np.packbits(negative, axis=-1, bitorder="little")


def unpack_signs(packed: np.ndarray, count: int) -> np.ndarray:
    """Inverse of pack_signs, as +-1 int8 values."""
    bits = np.unpackbits(packed, axis=-1, count=count, bitorder="little")
    return (1 - 2 * bits.astype(np.int8)).astype(np.int8)
