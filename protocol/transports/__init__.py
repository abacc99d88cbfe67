"""Transports by URL scheme, in the shape of pyserial's URL handlers: one module per scheme.

    tcp://HOST:PORT                 protocol.transports.tcp
    serial:///dev/ttyUSB0?baud=N    protocol.transports.serialport (any pyserial URL after serial://)
    ssh://USER@HOST[:PORT]/STORE    protocol.transports.ssh

A byte-stream transport (tcp, serial) gives `open_link(url)` and `listen(url)`; a link has
read(timeout) -> bytes (b"" when nothing came), write(data), close() and `rate` (bytes per
second, or None when unknown). Every transport gives `ship(url, manifest, payload, options)`.
The optional packages (pyserial, paramiko) are imported only by the module that needs them.
"""

import time

from protocol.errors import BinsortError

SCHEMES = {"tcp": "tcp", "serial": "serialport", "ssh": "ssh"}


def scheme_of(url: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise BinsortError(
            "unsupported link %r: use tcp://HOST:PORT, serial:///dev/ttyX?baud=N or "
            "ssh://USER@HOST[:PORT]/STORE_DIR" % url
        )
    return scheme


def after_scheme(url: str, scheme: str) -> str:
    """What follows `scheme://` in `url`. A bare address (no `://`: `/dev/ttyUSB0`,
    `127.0.0.1:7600`) is taken as it is; another scheme is a one-line error."""
    if url.startswith(scheme + "://"):
        return url[len(scheme) + 3 :]
    if "://" in url:
        raise BinsortError("%r is not a %s:// address" % (url, scheme))
    return url


def transport(url: str):
    """The module that handles `url`'s scheme."""
    import importlib

    return importlib.import_module("protocol.transports." + SCHEMES[scheme_of(url)])


def split_query(rest: str) -> "tuple[str, dict]":
    """'path?a=1&b=2' -> ('path', {'a': '1', 'b': '2'})."""
    if "?" not in rest:
        return rest, {}
    path, query = rest.split("?", 1)
    params = {}
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            params[key] = value
    return path, params


def rate_of(params: dict, what: str):
    """Bytes per second from a `baud=` parameter (10 bits a byte on an 8N1 line), or None."""
    if "baud" not in params:
        return None
    try:
        baud = int(params["baud"])
    except ValueError:
        baud = 0
    if baud <= 0:
        raise BinsortError("%s: baud must be a positive integer, not %r" % (what, params["baud"]))
    return baud / 10.0


def ship_stream(open_link, manifest: bytes, payload: bytes, options: dict) -> dict:
    """Ship over a byte-stream link, reconnecting after a drop or a stall; each new session
    resumes where the receiver's `.partial` file ends. options['reconnects'] bounds the
    reconnects in a row that make no progress (backoff 0.1 s doubling to 5 s); a session that
    moved the transfer on resets the count, so a long transfer over a link that keeps dropping
    still completes. A device that dropped bytes an earlier session left (they failed their
    chunk's hash: protocol.session.ResumeAgain) is given a new session too, counted as one
    without progress, so a partial file that keeps being spoiled still ends.
    options['give_up'] (seconds, default protocol.sender.GIVE_UP_S; None: never) ends it
    sooner when no intact frame comes back for that long, naming the symptom
    (protocol.sender.LinkWatch). Returns the receiver's RESULT."""
    from protocol.sender import GIVE_UP_S, Hopeless, LinkWatch, Sender, Stalled
    from protocol.session import LinkClosed, ResumeAgain

    reconnects = int(options.get("reconnects", 20))
    watch = LinkWatch(options.get("give_up", GIVE_UP_S))
    fruitless = 0  # reconnects in a row without progress
    connected_once = False
    acked = 0  # the most the device has had of the payload
    while True:
        try:
            link = open_link()
        except BinsortError as e:
            if not connected_once or fruitless >= reconnects:
                raise
            fruitless += 1
            _until_retry(watch, min(0.1 * 2 ** (fruitless - 1), 5.0), e, acked, len(payload))
            continue
        connected_once = True
        watch.connected()
        sender = Sender(
            link,
            rate=link.rate,
            progress=options.get("progress"),
            status=options.get("status"),
            watch=watch,
        )
        try:
            return sender.ship(manifest, payload)
        except Hopeless as e:
            acked = max(acked, sender.acked or 0)
            raise Hopeless(_resumable(str(e), acked, len(payload))) from None
        except (LinkClosed, Stalled, ResumeAgain) as e:
            acked = max(acked, sender.acked or 0)
            moved = sender.acked is not None and sender.acked > sender.start_offset
            moved = moved and not isinstance(e, ResumeAgain)  # what it acked was dropped
            fruitless = 0 if moved else fruitless + 1
            if fruitless > reconnects:
                raise BinsortError(
                    _resumable(
                        "gave up after %d reconnects without progress: %s" % (reconnects, e),
                        acked,
                        len(payload),
                    )
                ) from None
            if options.get("on_reconnect"):
                options["on_reconnect"](fruitless, str(e))
            _until_retry(watch, 0.1 if moved else min(0.1 * 2 ** (fruitless - 1), 5.0))
        finally:
            link.close()


def _until_retry(watch, seconds: float, connect_error=None, acked=0, size=0) -> None:
    """Wait before the next connection; the watch may end the shipment first."""
    time.sleep(seconds)
    if connect_error is None:
        return
    try:
        watch.connect_failed(connect_error)
    except BinsortError as e:
        raise type(e)(_resumable(str(e), acked, size)) from None


def _resumable(message: str, acked: int, size: int) -> str:
    """A give-up message, with what the next try starts from."""
    if acked <= 0:
        return message
    return "%s; %d of %d bytes are on the device, and the next try resumes there" % (
        message,
        acked,
        size,
    )
