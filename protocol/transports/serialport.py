"""serial://DEVICE?baud=N: the session over a serial line (pyserial, imported lazily).

DEVICE is a device path (serial:///dev/ttyUSB0) or any pyserial URL (serial://rfc2217://host:port,
serial://socket://host:port). `baud` (default 115200) sets the line and tells the sender how long
a window takes to drain. The port is opened exclusively: a second program on it is an error.
"""

import select

from protocol.errors import BinsortError
from protocol.session import LinkClosed
from protocol.transports import after_scheme, rate_of, ship_stream, split_query

DEFAULT_BAUD = 115200


def _pyserial():
    try:
        import serial
    except ImportError:
        raise BinsortError("serial links need pyserial: pip install pyserial") from None
    return serial


def parse(url: str) -> "tuple[str, int]":
    """(device or pyserial URL, baud rate); query parameters other than baud stay with a
    pyserial URL."""
    target, params = split_query(after_scheme(url, "serial"))
    if not target:
        raise BinsortError("%s: a serial link is serial:///dev/ttyUSB0?baud=115200" % url)
    baud = int(rate_of({"baud": params.pop("baud", str(DEFAULT_BAUD))}, url) * 10)
    if params:
        target += "?" + "&".join("%s=%s" % kv for kv in params.items())
    return target, baud


class SerialLink:
    def __init__(self, port, name: str, baud: int):
        self.port, self.name = port, name
        self.rate = baud / 10.0
        try:
            self._fd = port.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        port.timeout = 0 if self._fd is not None else 0.05

    def read(self, timeout: float) -> bytes:
        serial = _pyserial()
        try:
            if self._fd is not None:
                ready, _, _ = select.select([self._fd], [], [], timeout)
                if not ready:
                    return b""
            return self.port.read(max(1, self.port.in_waiting))
        except (serial.SerialException, OSError) as e:
            raise LinkClosed("%s: %s" % (self.name, e)) from None

    def write(self, data: bytes) -> None:
        serial = _pyserial()
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as e:
            raise LinkClosed("%s: %s" % (self.name, e)) from None

    def close(self) -> None:
        self.port.close()


def open_link(url: str) -> SerialLink:
    serial = _pyserial()
    target, baud = parse(url)
    try:
        if "://" in target:
            port = serial.serial_for_url(target, baudrate=baud)
        else:
            port = serial.Serial(target, baudrate=baud, exclusive=True)
    except (serial.SerialException, ValueError, OSError) as e:
        text = str(e)
        if "No such file" in text or "could not open port" in text and "[Errno 2]" in text:
            why = "no such device (is the adapter plugged in? `ls /dev/tty*` lists devices)"
        elif "lock" in text or "busy" in text.lower() or "[Errno 16]" in text:
            why = "the port is busy: another program has it open"
        elif "Permission denied" in text or "[Errno 13]" in text:
            why = "permission denied (add the user to the dialout group)"
        else:
            why = text
        raise BinsortError("cannot open serial port %s: %s" % (target, why)) from None
    return SerialLink(port, target, baud)


def ship(url: str, manifest: bytes, payload: bytes, options: dict) -> dict:
    parse(url)
    return ship_stream(lambda: open_link(url), manifest, payload, options)
