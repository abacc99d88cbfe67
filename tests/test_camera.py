"""The picamera2 adapter against a stand-in with Picamera2's API (the real one needs a Pi):
the method signatures and the shapes of what they return are those of picamera2 (checked
against its source: Picamera2.create_video_configuration, CompletedRequest.make_array for
YUV420, get_metadata's SensorTimestamp and ExposureTime), so a call the real library would
refuse fails here too."""

import numpy as np
import pytest

from edge.imaging.preprocess import full_range, preprocess
from edge.line.sources import parse_url
from edge.line.sources.camera import CameraSource
from protocol.errors import BinsortError


class Range:
    Full, Limited = "full", "limited"


class ColorSpace:
    Range = Range

    def __init__(self, range_):
        self.range = range_

    @classmethod
    def Smpte170m(cls):  # noqa: N802 (libcamera's name)
        return cls(Range.Limited)

    @classmethod
    def Sycc(cls):  # noqa: N802
        return cls(Range.Full)


class Transform:
    def __init__(self, hflip=0, vflip=0, transpose=0):
        self.hflip, self.vflip, self.transpose = hflip, vflip, transpose


class FakeLibcamera:
    ColorSpace, Transform = ColorSpace, Transform


class FakeRequest:
    def __init__(self, cam, n):
        self.cam, self.n = cam, n

    def make_array(self, name):
        """YUV420 as picamera2 returns it: (height * 3 // 2, stride) bytes, Y on top."""
        cfg = self.cam.config[name]
        w, h = cfg["size"]
        stride = cfg["stride"]
        y = (np.arange(h * stride, dtype=np.uint32) + self.n).astype(np.uint8).reshape(h, stride)
        y[:, w:] = 255  # padding the ISP leaves at the end of each row
        uv = np.full((h // 2, stride), 128, np.uint8)
        return np.concatenate([y, uv])

    def get_metadata(self):
        return {"SensorTimestamp": 5_000_000_000 + self.n * 33_333_333, "ExposureTime": 2000}

    def release(self):
        self.cam.released += 1


class FakePicamera2:
    instances = []

    def __init__(self, camera_num=0):
        self.config, self.started, self.released, self.n = None, False, 0, 0
        self.fail_capture = False
        FakePicamera2.instances.append(self)

    def create_video_configuration(
        self,
        main={},  # noqa: B006 (picamera2's own signature)
        lores=None,
        raw={},  # noqa: B006
        transform=None,
        colour_space=None,
        buffer_count=6,
        controls={},  # noqa: B006
        display="main",
        encode="main",
        queue=True,
        sensor={},  # noqa: B006
        use_case="video",
    ):
        return {
            "main": dict(main),
            "lores": dict(lores),
            "transform": transform,
            "colour_space": colour_space or ColorSpace.Smpte170m(),  # its default, small sizes
            "buffer_count": buffer_count,
            "controls": dict(controls),
        }

    def configure(self, config):
        for name in ("main", "lores"):  # the camera aligns sizes; the stride pads rows
            w, h = config[name]["size"]
            config[name]["size"] = ((w + 31) // 32 * 32, h)
            config[name]["stride"] = (w + 63) // 64 * 64
        self.config = config

    def stream_configuration(self, name="main"):
        return self.config[name]

    def camera_configuration(self):
        return self.config

    def start(self):
        self.started = True

    def capture_request(self, wait=None, signal_function=None, flush=None):
        if self.fail_capture:
            raise RuntimeError("Camera frontend has timed out!")
        self.n += 1
        return FakeRequest(self, self.n)

    def stop(self):
        self.started = False

    def close(self):
        pass


class FakePicamera2Module:
    Picamera2 = FakePicamera2


def open_camera(url):
    _, _, params = parse_url(url)
    return CameraSource(params, FakePicamera2Module, FakeLibcamera)


def test_the_adapter_configures_a_small_yuv_camera_with_the_controls_asked_for():
    cam = open_camera("picamera2:?size=150x100&fps=60&exposure_us=800&gain=2&vflip=1&awb=lock")
    config = FakePicamera2.instances[-1].config
    assert config["lores"]["format"] == "YUV420" and config["main"]["format"] == "YUV420"
    assert config["main"]["size"][0] * config["main"]["size"][1] <= 320 * 240  # not full size
    assert config["buffer_count"] == 2
    assert config["controls"] == {
        "FrameRate": 60.0,
        "ExposureTime": 800,
        "AeEnable": False,
        "AnalogueGain": 2.0,
        "AwbEnable": False,
    }
    assert (config["transform"].hflip, config["transform"].vflip) == (0, 1)
    assert cam.size == (160, 100)  # read back: the camera aligned the width asked for
    cam.close()
    assert not FakePicamera2.instances[-1].started


def test_a_frame_is_the_y_plane_timed_from_the_sensor_and_marked_limited_range():
    cam = open_camera("picamera2:?size=150x100")
    frame = cam.read()
    fake = FakePicamera2.instances[-1]
    stride = fake.config["lores"]["stride"]
    expected = (np.arange(100 * stride, dtype=np.uint32) + 1).astype(np.uint8)
    assert frame.image.shape == (100, 160)
    assert (frame.image == expected.reshape(100, stride)[:, :160]).all()
    assert fake.released == 1  # every request goes back to the camera at once
    # the middle of the exposure: SensorTimestamp (ns) less half of ExposureTime (us)
    assert frame.t == pytest.approx((5_033_333_333 - 1_000_000) / 1e9)
    assert cam.read().t - frame.t == pytest.approx(0.033333333)
    assert frame.limited_range and cam.exposure_us == 2000
    fake.fail_capture = True
    with pytest.raises(BinsortError, match="camera capture failed: Camera frontend"):
        cam.read()


def test_limited_range_luma_is_widened_in_the_one_preprocessing_function():
    luma = np.array([[0, 16, 126, 235, 255]], np.uint8)
    assert full_range(luma).tolist() == [[0, 0, 128, 255, 255]]
    frame = np.full((40, 40), 235, np.uint8)
    assert (preprocess(frame, 20, 20, limited_range=True) == 255).all()
    assert (preprocess(frame, 20, 20) == 235).all()


@pytest.mark.parametrize(
    "url, message",
    [
        ("picamera2:?size=15x10", "size must be WIDTHxHEIGHT"),
        ("picamera2:?ae=off", "ae must be auto or lock"),
        ("picamera2:?hflip=yes", "hflip must be 0 or 1"),
        ("picamera2:?exposure_us=0", "exposure_us must be at least 1"),
        ("picamera2:?exposure=500", "unknown parameter 'exposure'"),
    ],
)
def test_camera_parameters_are_checked(url, message):
    with pytest.raises(BinsortError, match=message):
        open_camera(url)


def test_without_picamera2_the_camera_is_a_one_line_error():
    _, _, params = parse_url("picamera2:")
    with pytest.raises(BinsortError, match="picamera2 is not installed"):
        CameraSource(params)
