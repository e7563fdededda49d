"""The echo limit: build `echo/echo_server.c` and give it real replies to send back.

The replies are framed, binary-protocol Thrift messages made from the contract
(`model_server/rtbserve.thrift`) with the same content a real rtbserve call returns, so the echo
moves the same bytes per call as the model server and the load generator cannot tell them apart.
"""

from __future__ import annotations

import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import thriftpy2
from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.thrift import TMessageType
from thriftpy2.transport import TMemoryBuffer

from bench.cbuild import build_c_program
from bench.config import BENCH_DIR, REPO_DIR

ECHO_SOURCE = BENCH_DIR / "echo" / "echo_server.c"
THRIFT_IDL = REPO_DIR / "model_server" / "rtbserve.thrift"


def thrift_module() -> ModuleType:
    return thriftpy2.load(str(THRIFT_IDL), module_name="rtbserve_bench_thrift")


def build_echo_server(out_dir: Path) -> Path:
    """Compile the echo server with the system C compiler; reuse it while the source is older."""
    return build_c_program(ECHO_SOURCE, out_dir / "echo_server", "the echo limit")


def framed_reply(method: str, result: Any) -> bytes:
    """One complete framed reply: 4-byte length, then the strict binary-protocol message."""
    buf: Any = TMemoryBuffer()  # type: ignore[no-untyped-call]
    factory: Any = TBinaryProtocolFactory(strict_write=True)  # type: ignore[no-untyped-call]
    proto = factory.get_protocol(buf)
    proto.write_message_begin(method, TMessageType.REPLY, 0)
    result.write(proto)
    proto.write_message_end()
    payload: bytes = buf.getvalue()
    return struct.pack("!i", len(payload)) + payload


def score_reply(
    thrift: ModuleType, request_id: str, model_version: str, scores: list[tuple[str, float, bool]]
) -> bytes:
    response = thrift.ScoreResponse(
        request_id=request_id,
        model_version=model_version,
        scores=[thrift.BidderScore(bidder=b, probability=p, forward=f) for b, p, f in scores],
    )
    return framed_reply("score", thrift.ModelServer.score_result(success=response))


def info_reply(thrift: ModuleType, info: Any) -> bytes:
    return framed_reply("info", thrift.ModelServer.info_result(success=info))


def write_replies(out_dir: Path, replies: dict[str, bytes]) -> list[str]:
    """Write each method's reply to a file; return the echo server's METHOD=FILE arguments."""
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = []
    for method, frame in replies.items():
        path = out_dir / f"{method}.reply"
        path.write_bytes(frame)
        specs.append(f"{method}={path}")
    return specs


def score_call(thrift: ModuleType, bid_request: bytes, bidders: list[str]) -> bytes:
    """One framed `score` call, as a Thrift client sends it (sequence id 0)."""
    buf: Any = TMemoryBuffer()  # type: ignore[no-untyped-call]
    factory: Any = TBinaryProtocolFactory(strict_write=True)  # type: ignore[no-untyped-call]
    proto = factory.get_protocol(buf)
    proto.write_message_begin("score", TMessageType.CALL, 0)
    thrift.ModelServer.score_args(bid_request=bid_request, bidders=bidders).write(proto)
    proto.write_message_end()
    payload: bytes = buf.getvalue()
    return struct.pack("!i", len(payload)) + payload
