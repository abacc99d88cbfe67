"""picamera2:[?size=160x120&fps=30]: the Raspberry Pi camera through Picamera2.

A video configuration with a small YUV420 `lores` stream and two buffers (the Zero's camera
memory is small); each read() is capture_buffer("lores"), whose first `stride * height`
bytes are the Y plane, used as the grey frame. picamera2 is imported only here, when the
source is opened; where it is not installed that is a one-line error.
"""

import time

import numpy as np

from edge.line.sources import Frame, number
from protocol.errors import BinsortError

PARAMS = ("size", "fps")


def _size(params: dict) -> "tuple[int, int]":
    text = params.get("size", "160x120")
    w, _, h = text.partition("x")
    if not (w.isdigit() and h.isdigit()) or int(w) < 16 or int(h) < 16 or int(w) % 2 or int(h) % 2:
        raise BinsortError(
            "picamera2: size must be WIDTHxHEIGHT, even and at least 16, not %r" % text
        )
    return int(w), int(h)


class CameraSource:
    def __init__(self, params: dict, picamera2_module=None):
        self.size = _size(params)
        fps = number(params, "fps", 30.0, float, 1.0, "picamera2")
        if picamera2_module is None:
            try:
                import picamera2 as picamera2_module
            except ImportError:
                raise BinsortError(
                    "picamera2 is not installed (on Raspberry Pi OS: sudo apt install "
                    "python3-picamera2); use sim: or folder: elsewhere"
                ) from None
        try:
            self.cam = picamera2_module.Picamera2()
            config = self.cam.create_video_configuration(
                main={"size": (max(640, self.size[0]), max(480, self.size[1]))},
                lores={"size": self.size, "format": "YUV420"},
                buffer_count=2,
                controls={"FrameRate": fps},
            )
            self.cam.configure(config)
            self.stride = self.cam.stream_configuration("lores")["stride"]
            self.cam.start()
        except (RuntimeError, IndexError, OSError) as e:
            raise BinsortError(
                "cannot start the camera (is it connected and enabled?): %s" % e
            ) from None
        self.index = 0

    def read(self) -> Frame:
        w, h = self.size
        try:
            buf = self.cam.capture_buffer("lores")
        except (RuntimeError, OSError) as e:
            raise BinsortError("camera capture failed: %s" % e) from None
        y = np.asarray(buf, dtype=np.uint8)[: self.stride * h].reshape(h, self.stride)[:, :w]
        self.index += 1
        return Frame(np.ascontiguousarray(y), time.monotonic(), self.index - 1)

    def close(self) -> None:
        try:
            self.cam.stop()
            self.cam.close()
        except (RuntimeError, OSError):
            pass


def open_source(rest: str, params: dict, **kwargs):
    return CameraSource(params, kwargs.get("picamera2_module"))
