"""tcp://HOST:PORT[?baud=N]: the session over a TCP connection. `baud` tells the sender the
rate of a slow hop (a serial-to-Ethernet bridge) so its first timeouts fit the link."""

import contextlib
import errno
import select
import socket

from protocol.errors import BinsortError
from protocol.session import LinkClosed
from protocol.transports import after_scheme, rate_of, ship_stream, split_query


def parse(url: str) -> "tuple[str, int, dict]":
    rest, params = split_query(after_scheme(url, "tcp"))
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise BinsortError("%s: a TCP link is tcp://HOST:PORT" % url)
    return host.strip("[]"), int(port), params


SEND_TIMEOUT = 10.0  # seconds a write may wait for a peer that does not read


class SocketLink:
    """A TCP connection as a link. A write that a peer does not drain within SEND_TIMEOUT
    ends the link (LinkClosed), and TCP keepalive finds a peer that vanished without a FIN."""

    def __init__(self, sock: socket.socket, name: str, rate=None):
        self.sock, self.name, self.rate = sock, name, rate
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, option):  # Linux; other systems keep their defaults
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        sock.settimeout(SEND_TIMEOUT)  # reads wait in select(), so this bounds sendall only

    def read(self, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return b""
            data = self.sock.recv(65536)
        except OSError as e:
            raise LinkClosed("%s: %s" % (self.name, e.strerror or e)) from None
        if not data:
            raise LinkClosed("%s closed the connection" % self.name)
        return data

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise LinkClosed("%s: %s" % (self.name, e.strerror or e)) from None

    def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """End the connection from another thread: a read waiting on it returns at once."""
        with contextlib.suppress(OSError):  # already gone
            self.sock.shutdown(socket.SHUT_RDWR)


def open_link(url: str, timeout: float = 10.0) -> SocketLink:
    host, port, params = parse(url)
    name = "%s:%d" % (host, port)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror:
        raise BinsortError(
            "unknown host %r in %s: check the name or use an IP address" % (host, url)
        ) from None
    except ConnectionRefusedError:
        raise BinsortError(
            "%s refused the connection: is `binsort-edge receive --listen tcp://0.0.0.0:%d` "
            "running there, and is the port right?" % (name, port)
        ) from None
    except TimeoutError:
        raise BinsortError(
            "no answer from %s within %g s: check the address and the network" % (name, timeout)
        ) from None
    except OSError as e:
        raise BinsortError("cannot reach %s: %s" % (name, e.strerror or e)) from None
    sock.settimeout(None)
    return SocketLink(sock, name, rate_of(params, url))


class Listener:
    def __init__(self, url: str):
        host, port, params = parse(url)
        self.rate = rate_of(params, url)
        try:
            self.sock = socket.create_server((host, port), reuse_port=False)
        except OSError as e:
            why = "the port is in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise BinsortError("cannot listen on %s: %s" % (url, why)) from None
        self.port = self.sock.getsockname()[1]
        self.name = url

    def accept(self, timeout: float):
        """The next connection as a link, or None after `timeout` seconds."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return None
        sock, addr = self.sock.accept()
        return SocketLink(sock, "%s:%d" % addr[:2], self.rate)

    def close(self) -> None:
        self.sock.close()


def listen(url: str) -> Listener:
    return Listener(url)


def ship(url: str, manifest: bytes, payload: bytes, options: dict) -> dict:
    parse(url)
    return ship_stream(lambda: open_link(url), manifest, payload, options)
