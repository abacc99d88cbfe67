"""gpiozero, imported lazily, with the pin factory the config names.

`pin_factory = "mock"` selects gpiozero's MockFactory (tests, the demo, and machines without
GPIO); otherwise gpiozero picks the board's own (lgpio on a Raspberry Pi). The conveyor
simulator drives the photo-eye's mock pin, so the daemon reads it through a real Button.
"""

from protocol.errors import BinsortError


def _gpiozero():
    try:
        import gpiozero
    except ImportError:
        raise BinsortError("GPIO needs gpiozero: pip install gpiozero") from None
    return gpiozero


def use_factory(name) -> None:
    """Select the pin factory: "mock", or None for gpiozero's default (imported when used)."""
    if name is None:
        return
    gz = _gpiozero()
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        if not isinstance(gz.Device.pin_factory, MockFactory):
            gz.Device.pin_factory = MockFactory()
    else:
        raise BinsortError('gpio.pin_factory must be "mock" or left out, not %r' % name)


def mock_pin(number: int):
    """The mock pin object behind BCM `number` (to drive a simulated sensor)."""
    return _gpiozero().Device.pin_factory.pin(number)


def output_device(pin: int):
    gz = _gpiozero()
    try:
        return gz.OutputDevice(pin, active_high=True, initial_value=False)
    except gz.BadPinFactory:
        raise BinsortError(
            'no GPIO on this machine (set gpio.pin_factory = "mock" to simulate it, or use '
            'actuator kind "log")'
        ) from None


def photo_eye(pin: int, active_low: bool = True):
    """The photo-eye as a gpiozero Button: pressed while a box blocks the beam."""
    gz = _gpiozero()
    try:
        return gz.Button(pin, pull_up=active_low)
    except gz.BadPinFactory:
        raise BinsortError(
            'no GPIO on this machine for the photo-eye (set gpio.pin_factory = "mock")'
        ) from None
    except gz.GPIOZeroError as e:
        raise BinsortError("photo-eye pin %d: %s" % (pin, e)) from None
