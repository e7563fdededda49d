"""Where to connect, one pipelined connection's state, and names for socket failures."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from loadgen.exit_codes import ExitCode, LoadgenError

UP, CONNECTING, DOWN = 0, 1, 2
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def resolve(target: Target) -> tuple[socket.AddressFamily, tuple[object, ...]]:
    """Resolve once before the run, so reconnects never wait on DNS."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LoadgenError(
            ExitCode.UNREACHABLE, f"cannot resolve {target.host!r}: {exc.strerror}"
        ) from None
    family, _, _, _, sockaddr = infos[0]
    return family, tuple(sockaddr)


def error_key(exc: BaseException) -> str:
    """A short, stable name for a socket failure."""
    if isinstance(exc, socket.gaierror):
        return "NameResolution"
    if isinstance(exc, TimeoutError):
        return "ConnectTimeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno_key(exc.errno)
    return type(exc).__name__


def errno_key(code: int) -> str:
    return {
        errno.ECONNREFUSED: "ConnectionRefused",
        errno.ECONNRESET: "ConnectionReset",
        errno.EPIPE: "ConnectionReset",
        errno.ETIMEDOUT: "ConnectTimeout",
        errno.EHOSTUNREACH: "HostUnreachable",
        errno.ENETUNREACH: "NetworkUnreachable",
        errno.ECONNABORTED: "ConnectionAborted",
    }.get(code, f"OSError:{errno.errorcode.get(code, code)}")


class Connection:
    """One connection's buffers and the calls waiting on it (sequence id -> intended time)."""

    __slots__ = (
        "answered",
        "backoff",
        "deadline",
        "fd",
        "inflight",
        "out",
        "rbuf",
        "sock",
        "state",
        "writing",
    )

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = DOWN
        self.out = bytearray()  # frames not yet taken by the kernel
        self.inflight: dict[int, float] = {}  # in send order
        self.rbuf = b""  # the start of a reply frame not complete yet
        self.writing = False  # registered for EPOLLOUT
        self.deadline = 0.0  # connect deadline (CONNECTING) or retry time (DOWN)
        self.backoff = FIRST_BACKOFF_S
        self.answered = False  # a reply came on the current socket

    def retry_later(self, now: float) -> None:
        """Down; try again after an exponential backoff."""
        self.state = DOWN
        self.deadline = now + self.backoff
        self.backoff = min(self.backoff * 2.0, MAX_BACKOFF_S)

    def reset_buffers(self) -> None:
        self.inflight.clear()
        self.out.clear()
        self.rbuf = b""
        self.writing = False
