"""A TCP forwarder: containers reach a loopback-only service (the API server) through it."""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpForwarder:
    """Accept on (host, port 0) and splice each connection to `target`; `port` once started."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._target = target
        self._thread = threading.Thread(target=self._accept, name="forward", daemon=True)

    def start(self) -> TcpForwarder:
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)  # watches stay idle for minutes
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
