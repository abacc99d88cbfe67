"""systemd's notify protocol, without a library: datagrams on $NOTIFY_SOCKET.

READY=1 once the daemon runs, WATCHDOG=1 from the frame loop (so a stalled loop is restarted
by systemd after WatchdogSec), STATUS=... for `systemctl status`, STOPPING=1 on shutdown.
Without $NOTIFY_SOCKET (not under systemd) every call does nothing.
"""

import os
import socket
import time


def notify(message: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path[0] == "@":  # abstract namespace
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(message.encode())
    except OSError:
        return False
    return True


class Watchdog:
    """Sends WATCHDOG=1 at most every half of $WATCHDOG_USEC (when it is meant for us)."""

    def __init__(self, clock=time.monotonic):
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        mine = pid is None or pid == str(os.getpid())
        self.interval = int(usec) / 2e6 if usec and usec.isdigit() and mine else None
        self.clock = clock
        self.last = -1e18

    def ping(self) -> None:
        if self.interval is None:
            return
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            notify("WATCHDOG=1")
