"""systemd's notification protocol (``sd_notify``) over a plain AF_UNIX datagram socket.

systemd passes the socket in ``NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace) and, when the unit sets ``WatchdogSec=``, the period in
``WATCHDOG_USEC`` (only meant for ``WATCHDOG_PID`` when that is set). Outside
systemd neither is set and every call is a no-op, so the daemon runs the same
in a terminal.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

__all__ = ["Notifier"]

log = structlog.get_logger(__name__)


class Notifier:
    """Sends ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``RELOADING=1``, ``STOPPING=1``."""

    def __init__(self, address: str | None, watchdog_usec: int | None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._last_status = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        if env.get("WATCHDOG_USEC", "").isdigit():
            pid = env.get("WATCHDOG_PID", "")
            if not pid or pid == str(os.getpid()):
                usec = int(env["WATCHDOG_USEC"]) or None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two ``WATCHDOG=1``: a third of the period, well inside systemd's half."""
        if self._address is None or not self._watchdog_usec:
            return None
        return self._watchdog_usec / 1_000_000 / 3

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")
        self._last_status = status

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self._send(f"STATUS={text}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def reloading(self) -> None:
        # systemd >= 253 matches RELOADING=1 to the reload request by this timestamp;
        # READY=1 (``ready``) ends the reload.
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={now_usec}")

    def stopping(self, status: str) -> None:
        self._send(f"STOPPING=1\nSTATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        address = self._address
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            if self._sock is None:
                # Non-blocking: a reader that stopped reading must not stall the event loop
                # (and with it the scheduler); a message it cannot take is dropped.
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto(message.encode("utf-8"), address)
        except BlockingIOError:
            log.debug("notify.dropped", message=message.split("\n", 1)[0])
        except OSError as exc:
            # systemd going away must not take the daemon with it.
            log.warning("notify.failed", error=exc.strerror or str(exc))
