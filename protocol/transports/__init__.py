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
    """Ship over a byte-stream link, reconnecting after a drop or a stall (up to
    options['reconnects'] times, with backoff); each new session resumes where the
    receiver's `.partial` file ends. Returns the receiver's RESULT."""
    from protocol.sender import Sender, Stalled
    from protocol.session import LinkClosed

    reconnects = int(options.get("reconnects", 20))
    drops = 0
    while True:
        try:
            link = open_link()
        except BinsortError:
            if drops == 0 or drops > reconnects:
                raise
            drops += 1
            time.sleep(min(0.2 * drops, 5.0))
            continue
        try:
            sender = Sender(
                link,
                rate=link.rate,
                progress=options.get("progress"),
                status=options.get("status"),
            )
            return sender.ship(manifest, payload)
        except (LinkClosed, Stalled) as e:
            drops += 1
            if drops > reconnects:
                raise BinsortError("gave up after %d reconnects: %s" % (reconnects, e)) from None
            if options.get("on_reconnect"):
                options["on_reconnect"](drops, str(e))
            time.sleep(min(0.1 * drops, 2.0))
        finally:
            link.close()
