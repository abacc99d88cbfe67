"""Frame sources by URL scheme, one short module each (the shape of pyserial's URL handlers).

    picamera2:[?size=192x144&fps=30]     edge.line.sources.camera    the Pi camera's lores Y plane
    folder:PATH[?fps=10&loop=1]          edge.line.sources.folder    replay images in name order
    sim:[?belt=0.5&gap=0.6-1.6&latency=0...] edge.line.sources.conveyor  a physical belt, simulated

A source's read() returns the next Frame, or None when it has no more (a folder without
loop); it raises BinsortError when the camera fails, and the daemon retries with backoff.
"""

import importlib
import math

from protocol.errors import BinsortError
from protocol.transports import split_query

SCHEMES = {"picamera2": "camera", "folder": "folder", "sim": "conveyor"}


class Frame:
    """One grey frame: the image (uint8, H x W), `t` the time it was taken (seconds: the
    sensor's timestamp on time.monotonic()'s clock for a camera, the simulator's own clock
    for sim:), its `index` in the source, and `truth`, what the simulator knows about it (box
    id and label) for scoring. `eye` is the photo-eye read from GPIO as soon as the frame
    arrives (the simulator drives a mock pin), the same way as on a line."""

    __slots__ = ("image", "t", "index", "truth", "eye", "limited_range")

    def __init__(self, image, t: float, index: int, truth=None, limited_range=False):
        self.image, self.t, self.index, self.truth = image, t, index, truth
        self.eye = None  # the photo-eye when the frame was taken; the daemon reads it
        self.limited_range = limited_range  # luma in 16-235 (a camera's YUV): preprocess widens


def parse_url(url: str) -> "tuple[str, str, dict]":
    """'scheme:rest?k=v&...' -> (scheme, rest, params); a parameter the source does not take
    is an error naming the ones it does (a typo is never silently ignored)."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in SCHEMES:
        raise BinsortError(
            "unknown frame source %r: use picamera2:, folder:PATH or sim: (the conveyor "
            "simulator)" % url
        )
    rest, params = split_query(rest)
    known = importlib.import_module("edge.line.sources." + SCHEMES[scheme]).PARAMS
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise BinsortError(
            "%s: unknown parameter %r (parameters: %s)" % (scheme, unknown[0], ", ".join(known))
        )
    return scheme, rest, params


def number(params: dict, key: str, default, kind=float, low=None, what="source", high=None):
    """params[key] as `kind`, or `default`; BinsortError naming the key if it is not one (or
    not a finite one, or outside [low, high])."""
    if key not in params:
        return default
    try:
        value = kind(params[key])
    except ValueError:
        raise BinsortError("%s: %s=%r is not a number" % (what, key, params[key])) from None
    if not math.isfinite(value):
        raise BinsortError("%s: %s=%r is not a finite number" % (what, key, params[key]))
    if low is not None and value < low:
        raise BinsortError("%s: %s must be at least %s" % (what, key, low))
    if high is not None and value > high:
        raise BinsortError("%s: %s must be at most %s" % (what, key, high))
    return value


def check_url(url: str) -> None:
    """Everything about `url` that can be known without opening a camera: the scheme, the
    parameters' names and their values. The daemon calls it at start, so a mistyped number
    is a one-line error then, not a source that fails and is retried for ever."""
    scheme, rest, params = parse_url(url)
    importlib.import_module("edge.line.sources." + SCHEMES[scheme]).check(rest, params)


def open_source(url: str, **kwargs):
    """The FrameSource for `url`."""
    scheme, rest, params = parse_url(url)
    module = importlib.import_module("edge.line.sources." + SCHEMES[scheme])
    return module.open_source(rest, params, **kwargs)
