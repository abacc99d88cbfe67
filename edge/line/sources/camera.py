"""picamera2:[?size=192x144&fps=30&exposure_us=2000&gain=4&hflip=1&vflip=1&ae=lock&awb=lock]:
the Raspberry Pi camera through Picamera2.

A video configuration with a small YUV420 `main` stream and the `lores` stream the model reads,
two buffers (a Zero's camera memory is small), and the controls asked for: `FrameRate`, and
for a moving belt a short fixed `ExposureTime` (`exposure_us`, which turns auto exposure off)
and `AnalogueGain` (`gain`); `ae=lock` / `awb=lock` turn auto exposure / white balance off at
whatever the camera starts with; `hflip`/`vflip` are a libcamera Transform. The lores size
used is the one read back from the configuration (the camera may align it), not the one asked
for. The default, 192x144, has the rows of the default model's 144x144 input (the model reads
the centre square).

Each read() is capture_request(): the lores array (YUV420 as rows of `stride` bytes, the Y
plane on top, its first `width` columns the picture) and the request's metadata are taken,
then the request is released at once. The frame's time is the middle of its exposure:
SensorTimestamp (nanoseconds on time.monotonic_ns()'s clock, when the first row was read out)
less half of ExposureTime. The colour space is read back too: Picamera2's default for small
video sizes (SMPTE 170M) has limited-range luma, which the frame says, so preprocess() widens
it to the full range training images have.

picamera2 and libcamera are imported only here, when the source is opened; where they are not
installed that is a one-line error. Tests pass stand-ins with the same API.
"""

import time

import numpy as np

from edge.line.sources import Frame, number
from protocol.errors import BinsortError

PARAMS = ("size", "fps", "exposure_us", "gain", "hflip", "vflip", "ae", "awb")


def _size(params: dict) -> "tuple[int, int]":
    text = params.get("size", "192x144")
    w, _, h = text.partition("x")
    if not (w.isdigit() and h.isdigit()) or int(w) < 16 or int(h) < 16 or int(w) % 2 or int(h) % 2:
        raise BinsortError(
            "picamera2: size must be WIDTHxHEIGHT, even and at least 16, not %r" % text
        )
    return int(w), int(h)


def _choice(params: dict, key: str, choices: tuple) -> str:
    value = params.get(key, choices[0])
    if value not in choices:
        raise BinsortError("picamera2: %s must be %s, not %r" % (key, " or ".join(choices), value))
    return value


def camera_controls(params: dict) -> dict:
    """The libcamera controls the URL asks for."""
    controls = {"FrameRate": number(params, "fps", 30.0, float, 1.0, "picamera2")}
    exposure = number(params, "exposure_us", None, int, 1, "picamera2")
    gain = number(params, "gain", None, float, 1.0, "picamera2")
    if exposure is not None:
        controls.update(ExposureTime=exposure, AeEnable=False)
    elif _choice(params, "ae", ("auto", "lock")) == "lock":
        controls["AeEnable"] = False
    if gain is not None:
        controls["AnalogueGain"] = gain
    if _choice(params, "awb", ("auto", "lock")) == "lock":
        controls["AwbEnable"] = False
    return controls


class CameraSource:
    def __init__(self, params: dict, picamera2_module=None, libcamera_module=None):
        size = _size(params)
        controls = camera_controls(params)
        flips = {k: int(_choice(params, k, ("0", "1"))) for k in ("hflip", "vflip")}
        if picamera2_module is None:
            try:
                import libcamera as libcamera_module
                import picamera2 as picamera2_module
            except ImportError:
                raise BinsortError(
                    "picamera2 is not installed (on Raspberry Pi OS: sudo apt install "
                    "python3-picamera2); use sim: or folder: elsewhere"
                ) from None
        self.cam = None
        try:
            self.cam = picamera2_module.Picamera2()
            config = self.cam.create_video_configuration(
                main={"size": (max(320, size[0]), max(240, size[1])), "format": "YUV420"},
                lores={"size": size, "format": "YUV420"},
                transform=libcamera_module.Transform(**flips),
                buffer_count=2,
                controls=controls,
            )
            self.cam.configure(config)
            lores = self.cam.stream_configuration("lores")
            self.size = tuple(lores["size"])  # what the camera gives, not what was asked
            space = self.cam.camera_configuration().get("colour_space")
            full = libcamera_module.ColorSpace.Range.Full
            self.limited_range = space is not None and space.range != full
            self.cam.start()
        except (RuntimeError, IndexError, OSError, KeyError) as e:
            self.close()
            raise BinsortError(
                "cannot start the camera (is it connected and enabled?): %s" % e
            ) from None
        self.controls = controls
        self.index = 0
        self.exposure_us = None  # the last frame's, from its metadata

    def read(self) -> Frame:
        w, h = self.size
        try:
            request = self.cam.capture_request()
            try:
                yuv = request.make_array("lores")
                metadata = request.get_metadata()
            finally:
                request.release()
        except (RuntimeError, OSError) as e:
            raise BinsortError("camera capture failed: %s" % e) from None
        luma = np.ascontiguousarray(yuv[:h, :w])
        self.exposure_us = metadata.get("ExposureTime")
        stamp = metadata.get("SensorTimestamp")
        if stamp is None:
            t = time.monotonic()
        else:  # the middle of the exposure, which ended when the first row was read out
            t = (stamp - 500 * (self.exposure_us or 0)) / 1e9
        self.index += 1
        return Frame(luma, t, self.index - 1, limited_range=self.limited_range)

    def close(self) -> None:
        if self.cam is None:
            return
        try:
            self.cam.stop()
            self.cam.close()
        except (RuntimeError, OSError):
            pass


def check(rest: str, params: dict) -> None:
    """The URL's values, checked as opening the camera would, without opening it."""
    _size(params)
    camera_controls(params)
    for key in ("hflip", "vflip"):
        _choice(params, key, ("0", "1"))


def open_source(rest: str, params: dict, **kwargs):
    return CameraSource(params, kwargs.get("picamera2_module"), kwargs.get("libcamera_module"))
