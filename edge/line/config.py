"""The daemon's configuration: a TOML file (edge/line/edge.toml is the annotated example), checked
completely before anything starts. Every mistake is one line naming the key and what it wants.
"""

import math
import tomllib

from edge.install.receiver import FIRST_FRAME, FIRST_FRAME_MAX
from protocol.errors import BinsortError
from protocol.transports import serialport, tcp

# section -> key -> (type, default); a default of REQUIRED means the key must be given
REQUIRED = object()
SCHEMA = {
    "model": {
        "store": (str, REQUIRED),
        "trial_boxes": (int, 50),
        "trial_seconds": (float, 60.0),
    },
    "source": {
        "url": (str, REQUIRED),
        "retry_max_s": (float, 30.0),
    },
    "photo_eye": {
        "pin": (int, REQUIRED),
        "active_low": (bool, True),
    },
    "gpio": {
        "pin_factory": (str, None),
    },
    "decide": {
        "min_confidence": (float, 0.6),
        "enter_frames": (int, 2),
        "leave_frames": (int, 3),
        "timing": (str, "image"),  # without a photo-eye: a box's time from "image" or "model"
        "belt_axis": (str, "x"),  # the belt runs along the frame's width (x) or height (y)
    },
    "lanes": {
        "reject": (str, REQUIRED),
        "map": (dict, REQUIRED),
    },
    "actuator": {
        "kind": (str, "log"),
        "belt_speed_mps": (float, 0.3),
        "camera_to_diverter_m": (float, 0.45),
        "distance_m": (dict, None),
        "pulse_ms": (float, 150.0),
        "lead_ms": (float, None),  # default: half of pulse_ms, the pulse centred on the box
        "pins": (dict, None),
        "url": (str, None),
    },
    "receiver": {
        "listen": (str, None),
        "serial": (str, None),
        "pranc_min_accuracy": (float, None),
        "first_frame_s": (float, FIRST_FRAME),
    },
    "capture": {
        "dir": (str, None),
        "max_mb": (float, 64.0),
        "keep": (str, "all"),
        "doubt_below": (float, 0.9),
        "full_frame": (bool, False),
        "min_free_mb": (float, 100.0),
    },
    "recalibrate": {
        "every_h": (float, REQUIRED),
        "frames": (int, 1000),
    },
    "status": {
        "listen": (str, "127.0.0.1:8080"),
        "state_dir": (str, None),
        "save_every_s": (float, 60.0),
        "station": (str, None),
        "reject_alarm": (float, 0.2),
        "summary_every_s": (float, 60.0),
    },
}
OPTIONAL_SECTIONS = ("photo_eye", "gpio", "receiver", "capture", "recalibrate")


def _typed(section, key, value, kind):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise BinsortError(
            "config [%s] %s: expected %s, got %r" % (section, key, kind.__name__, value)
        )
    if kind is float and not math.isfinite(value):  # TOML allows nan and inf
        raise BinsortError(
            "config [%s] %s: expected a finite number, got %r" % (section, key, value)
        )
    return value


def check_config(raw: dict) -> dict:
    """Fill defaults and check every key; BinsortError for the first problem."""
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise BinsortError(
            "config: unknown section [%s] (sections: %s)" % (unknown[0], ", ".join(SCHEMA))
        )
    cfg = {}
    for section, keys in SCHEMA.items():
        given = raw.get(section)
        if given is None:
            if section in OPTIONAL_SECTIONS:
                cfg[section] = None
                continue
            given = {}
        if not isinstance(given, dict):
            raise BinsortError("config: [%s] must be a table" % section)
        extra = sorted(set(given) - set(keys))
        if extra:
            raise BinsortError(
                "config [%s]: unknown key %r (keys: %s)" % (section, extra[0], ", ".join(keys))
            )
        out = {}
        for key, (kind, default) in keys.items():
            if key in given:
                out[key] = _typed(section, key, given[key], kind)
            elif default is REQUIRED:
                raise BinsortError("config [%s]: %s is required" % (section, key))
            else:
                out[key] = default
        cfg[section] = out
    _check_values(cfg)
    return cfg


def _positive(cfg, section, key):
    if cfg[section][key] <= 0:
        raise BinsortError("config [%s] %s must be positive" % (section, key))


# the largest value that is still a setting rather than a slip (and that every timer takes:
# threading's waits overflow past about 9.2e9 seconds); a key not here is bounded otherwise
MAXIMA = {
    ("model", "trial_seconds"): 7 * 86400.0,
    ("source", "retry_max_s"): 3600.0,
    ("actuator", "belt_speed_mps"): 100.0,
    ("actuator", "camera_to_diverter_m"): 1000.0,
    ("actuator", "pulse_ms"): 60000.0,
    ("receiver", "first_frame_s"): FIRST_FRAME_MAX,
    ("recalibrate", "every_h"): 8760.0,
    ("status", "save_every_s"): 86400.0,
    ("status", "summary_every_s"): 86400.0,
    ("capture", "max_mb"): 1 << 30,
    ("capture", "min_free_mb"): 1 << 30,
}
MINIMA = {("actuator", "belt_speed_mps"): 0.001}  # metres a second; a box's delay divides by it
# shares from 0 to 1; pranc_min_accuracy is receive --pranc-min-accuracy's (a .pranc prefix's
# self-test accuracy), in an optional section
SHARES = (
    ("status", "reject_alarm"),
    ("decide", "min_confidence"),
    ("receiver", "pranc_min_accuracy"),
)


def _check_values(cfg) -> None:
    for (section, key), high in MAXIMA.items():
        value = (cfg[section] or {}).get(key)
        if value is not None and value > high:
            raise BinsortError("config [%s] %s must be at most %s" % (section, key, high))
    for (section, key), low in MINIMA.items():
        if cfg[section][key] < low:
            raise BinsortError("config [%s] %s must be at least %s" % (section, key, low))
    for section, key in (
        ("model", "trial_boxes"),
        ("model", "trial_seconds"),
        ("source", "retry_max_s"),
        ("actuator", "belt_speed_mps"),
        ("actuator", "pulse_ms"),
        ("decide", "enter_frames"),
        ("decide", "leave_frames"),
        ("status", "save_every_s"),
        ("status", "summary_every_s"),
    ):
        _positive(cfg, section, key)
    act = cfg["actuator"]
    if act["camera_to_diverter_m"] < 0:
        raise BinsortError("config [actuator] camera_to_diverter_m must not be negative")
    act["distance_m"] = dict(act["distance_m"] or {})
    for lane, metres in act["distance_m"].items():
        if isinstance(metres, int) and not isinstance(metres, bool):
            metres = act["distance_m"][lane] = float(metres)
        if not isinstance(metres, float) or not 0 <= metres < 1000:
            raise BinsortError(
                "config [actuator.distance_m] %s: metres from the camera, got %r" % (lane, metres)
            )
    if act["lead_ms"] is None:
        act["lead_ms"] = act["pulse_ms"] / 2
    if not 0 <= act["lead_ms"] < act["pulse_ms"]:
        raise BinsortError(
            "config [actuator] lead_ms must be at least 0 and less than pulse_ms (the pulse "
            "must still be on when the box's centre arrives)"
        )
    for section, key in SHARES:
        value = (cfg[section] or {}).get(key)
        if value is not None and not 0 <= value <= 1:
            raise BinsortError("config [%s] %s must be between 0 and 1" % (section, key))
    if cfg["decide"]["timing"] not in ("image", "model"):
        raise BinsortError(
            "config [decide] timing must be image (the centre line's pixels) or model (the "
            "middle of the model's box frames), not %r" % cfg["decide"]["timing"]
        )
    if cfg["decide"]["belt_axis"] not in ("x", "y"):
        raise BinsortError(
            "config [decide] belt_axis must be x (the belt runs along the frame's width) or y, "
            "not %r" % cfg["decide"]["belt_axis"]
        )
    lanes = cfg["lanes"]["map"]
    for label, lane in lanes.items():
        if not isinstance(lane, str) or not lane:
            raise BinsortError(
                "config [lanes.map] %s: the lane must be a name, got %r" % (label, lane)
            )
    if act["kind"] not in ("gpio", "plc", "log"):
        raise BinsortError("config [actuator] kind must be gpio, plc or log, not %r" % act["kind"])
    if act["kind"] == "gpio":
        if not act["pins"]:
            raise BinsortError("config [actuator] kind gpio needs a pins table: lane = BCM pin")
        for lane, pin in act["pins"].items():
            if not isinstance(pin, int) or isinstance(pin, bool) or not 0 <= pin <= 53:
                raise BinsortError(
                    "config [actuator.pins] %s: a BCM pin number, got %r" % (lane, pin)
                )
    if act["kind"] == "plc" and not act["url"]:
        raise BinsortError(
            'config [actuator] kind plc needs url = "serial:///dev/ttyUSB0?baud=9600"'
        )
    unknown = sorted(set(act["distance_m"]) - set(lanes.values()) - {cfg["lanes"]["reject"]})
    if unknown:
        raise BinsortError("config [actuator.distance_m] %s is not a lane" % unknown[0])
    rx = cfg["receiver"]
    if rx is not None and not (rx["listen"] or rx["serial"]):
        raise BinsortError('config [receiver] needs listen = "tcp://0.0.0.0:7600" and/or serial')
    if rx is not None:
        _positive(cfg, "receiver", "first_frame_s")
    _check_address(rx and rx["listen"], "receiver", "listen", tcp.parse)
    _check_address(rx and rx["serial"], "receiver", "serial", serialport.parse)
    _check_address(act["kind"] == "plc" and act["url"], "actuator", "url", serialport.parse)
    check_capture(cfg["capture"])
    recal = cfg["recalibrate"]
    if recal is not None:
        _positive(cfg, "recalibrate", "every_h")
        if recal["frames"] < 200:
            raise BinsortError("config [recalibrate] frames must be at least 200")
        if cfg["capture"] is None or cfg["capture"]["keep"] != "all":
            raise BinsortError(
                'config [recalibrate] needs [capture] with keep = "all": it re-estimates the '
                "thresholds from the captured boxes, and doubtful ones alone are not the line"
            )
    host, sep, port = cfg["status"]["listen"].rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BinsortError(
            "config [status] listen must be HOST:PORT (port 0-65535), not %r"
            % cfg["status"]["listen"]
        )


def _check_address(url, section: str, key: str, parse) -> None:
    if url:
        try:
            parse(url)
        except BinsortError as e:
            raise BinsortError("config [%s] %s: %s" % (section, key, e)) from None


def check_capture(cap: "dict | None") -> None:
    if cap is None:
        return
    if not 0 < cap["max_mb"] <= MAXIMA[("capture", "max_mb")]:  # also NaN, from --max-mb
        raise BinsortError(
            "config [capture] max_mb must be positive, at most %d" % MAXIMA[("capture", "max_mb")]
        )
    if not cap["min_free_mb"] >= 0:
        raise BinsortError("config [capture] min_free_mb must not be negative")
    if cap["keep"] not in ("all", "doubtful"):
        raise BinsortError("config [capture] keep must be all or doubtful, not %r" % cap["keep"])
    if not 0 <= cap["doubt_below"] <= 1:
        raise BinsortError("config [capture] doubt_below must be between 0 and 1")


def load_config(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise BinsortError("cannot read config %s: %s" % (path, e.strerror)) from None
    except tomllib.TOMLDecodeError as e:
        raise BinsortError("config %s is not valid TOML: %s" % (path, e)) from None
    except UnicodeError:  # tomllib decodes the whole file first, outside its own errors
        raise BinsortError("config %s is not valid TOML: not UTF-8 text" % path) from None
    return check_config(raw)
