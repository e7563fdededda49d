"""A canned-reply `ModelServer.score` stub, for measuring the load generator itself.

It answers every framed `score` call at once with one fixed, real ScoreResponse (encoded with
thriftpy2 from the IDL, sequence id patched in), in one thread on epoll. Whatever rate or
latency the load generator reports against it is the generator's own limit and overhead (plus
loopback).

    python -m loadgen.stub --port 0 --bidders 16     # prints "listening on HOST:PORT"
"""

from __future__ import annotations

import argparse
import contextlib
import select
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any, cast

import thriftpy2.protocol
import thriftpy2.transport
from thriftpy2.thrift import TMessageType

from loadgen import wire

_HEAD = struct.Struct(">iii")


def canned_reply(n_bidders: int = 16) -> bytes:
    """One framed reply to `score` with `n_bidders` scores, every other one forwarded."""
    idl = wire.thrift_module()
    scores = [
        idl.BidderScore(bidder=f"dsp-{k + 1:02d}", probability=0.1 * (k % 10), forward=k % 2 == 0)
        for k in range(n_bidders)
    ]
    result = idl.ModelServer.score_result(
        success=idl.ScoreResponse(request_id="stub", model_version="stub", scores=scores)
    )
    # thriftpy2's transport and protocol classes are untyped
    buf: Any = cast(Any, thriftpy2.transport).TMemoryBuffer()
    proto: Any = cast(Any, thriftpy2.protocol).TBinaryProtocol(buf)
    proto.write_message_begin("score", TMessageType.REPLY, 0)
    result.write(proto)
    proto.write_message_end()
    body: bytes = buf.getvalue()
    return struct.pack(">i", len(body)) + body


class _Client:
    __slots__ = ("inbuf", "outbuf", "sock", "writing")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.writing = False


def _answer(client: _Client, prefix: bytes, suffix: bytes) -> None:
    """Queue one reply per complete call frame in the input buffer."""
    inbuf, outbuf = client.inbuf, client.outbuf
    pos, end = 0, len(inbuf)
    while end - pos >= 12:
        flen, _, nlen = _HEAD.unpack_from(inbuf, pos)
        if pos + 4 + flen > end:
            break
        outbuf += prefix
        outbuf += inbuf[pos + 12 + nlen : pos + 16 + nlen]  # the call's sequence id
        outbuf += suffix
        pos += 4 + flen
    del inbuf[:pos]


def serve(listener: socket.socket, reply: bytes) -> None:
    """Answer until SIGTERM/SIGINT. Replies go out in the order calls came in."""
    seq_at = 12 + _HEAD.unpack_from(reply, 0)[2]
    prefix, suffix = reply[:seq_at], reply[seq_at + 4 :]
    ep = select.epoll()
    listener.setblocking(False)
    ep.register(listener.fileno(), select.EPOLLIN)
    clients: dict[int, _Client] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        for fd, ev in ep.poll(0.2):
            if fd == listener.fileno():
                with contextlib.suppress(BlockingIOError):
                    sock, _ = listener.accept()
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    clients[sock.fileno()] = _Client(sock)
                    ep.register(sock.fileno(), select.EPOLLIN)
                continue
            client = clients[fd]
            try:
                if ev & ~select.EPOLLOUT:
                    data = client.sock.recv(1 << 18)
                    if not data:
                        raise ConnectionResetError
                    client.inbuf += data
                    _answer(client, prefix, suffix)
                if client.outbuf:
                    del client.outbuf[: client.sock.send(client.outbuf)]
            except BlockingIOError:
                pass
            except OSError:
                ep.unregister(fd)
                client.sock.close()
                del clients[fd]
                continue
            if bool(client.outbuf) != client.writing:  # epoll_ctl only when it changes
                client.writing = not client.writing
                ep.modify(fd, select.EPOLLIN | (select.EPOLLOUT if client.writing else 0))
    for client in clients.values():
        client.sock.close()
    listener.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadgen.stub", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--bidders", type=int, default=16, help="scores per reply")
    args = parser.parse_args(argv)
    listener = socket.create_server((args.host, args.port), backlog=1024)
    host, port = listener.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    serve(listener, canned_reply(args.bidders))
    return 0


if __name__ == "__main__":
    sys.exit(main())
