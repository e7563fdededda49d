"""Open-loop load driver for the HTTP and gRPC peers (MLServer's V2 inference protocol).

It also speaks framed binary Thrift (pre-encoded `score` calls), to cross-check it against
`rtbserve loadgen` on the same server.

It follows the method of `rtbserve loadgen`: requests leave on a fixed schedule whatever the
server's pace, and each latency is measured from the request's *intended* send time into an HDR
histogram, so a server that falls behind shows the queueing it causes (no coordinated omission).
Request bodies are encoded before the clock starts, so the driver spends its time sending.

It runs inside the peer's own virtualenv (it needs that environment's grpc stubs), so it imports
only the standard library, hdrhistogram, aiohttp, grpc and the stdlib-only `bench.measurements`:

    python -m bench.peer_driver --transport rest --target 127.0.0.1:8080 --model rtb \\
        --payloads payloads.json --rate 2000 --duration 5 --report-json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib
import json
import math
import resource
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from bench.measurements import RunMeasurement

# Latency range the histograms hold, in microseconds: 1 µs to 60 s at 3 significant figures.
LOWEST_US, HIGHEST_US, SIG_FIGS = 1, 60_000_000, 3
# After the schedule ends, requests still unanswered this long are counted as errors.
DRAIN_SECONDS = 5.0
# The last stretch before each send is waited out by yielding to the loop, not by a timer.
SPIN_SECONDS = 0.002
# Timestamps come from the OS clock: uvloop's loop.time() is cached per loop pass, in whole ms.
now = time.perf_counter

Sender = Callable[[int], Awaitable[bool]]


def load_payloads(path: Path, key: str) -> dict[str, Any]:
    """The payload file the harness writes: what to send, in turn, under `key`.

    "batches": feature matrices (null = missing) for the V2 protocol; "frames": base64 framed
    Thrift `score` calls.
    """
    data: dict[str, Any] = json.loads(path.read_text())
    items = data.get(key)
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: {key!r} must be a non-empty list")
    return data


Row = Sequence[float | None]


def v2_json_body(rows: Sequence[Row], input_name: str) -> bytes:
    """A V2 inference protocol REST body for one feature matrix.

    JSON has no NaN, so a missing feature travels as null, which the server's numpy decoding
    turns back into NaN (XGBoost's "missing").
    """
    flat = [None if v is None or math.isnan(v) else float(v) for row in rows for v in row]
    body = {
        "inputs": [
            {
                "name": input_name,
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP32",
                "data": flat,
            }
        ]
    }
    return json.dumps(body, separators=(",", ":")).encode()


def fp32_raw(rows: Sequence[Row]) -> bytes:
    """Little-endian FP32 bytes, the V2 protocol's raw tensor encoding (NaN for missing)."""
    flat = [float("nan") if v is None else float(v) for row in rows for v in row]
    return struct.pack(f"<{len(flat)}f", *flat)


async def make_rest_sender(
    target: str, model: str, payloads: dict[str, Any], connections: int
) -> tuple[Sender, Callable[[], Awaitable[None]]]:
    aiohttp = importlib.import_module("aiohttp")
    url = f"http://{target}/v2/models/{model}/infer"
    bodies = [v2_json_body(b, payloads["input_name"]) for b in payloads["batches"]]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, force_close=False),
        headers={"Content-Type": "application/json"},
    )

    async def send(i: int) -> bool:
        async with session.post(url, data=bodies[i % len(bodies)]) as resp:
            await resp.read()
            return int(resp.status) == 200

    return send, session.close


async def make_grpc_sender(
    target: str, model: str, payloads: dict[str, Any], connections: int
) -> tuple[Sender, Callable[[], Awaitable[None]]]:
    grpc = importlib.import_module("grpc")
    pb = importlib.import_module("mlserver.grpc.dataplane_pb2")
    pb_grpc = importlib.import_module("mlserver.grpc.dataplane_pb2_grpc")

    requests = []
    for rows in payloads["batches"]:
        tensor = pb.ModelInferRequest.InferInputTensor(
            name=payloads["input_name"], datatype="FP32", shape=[len(rows), len(rows[0])]
        )
        requests.append(
            pb.ModelInferRequest(
                model_name=model, inputs=[tensor], raw_input_contents=[fp32_raw(rows)]
            )
        )
    # A local subchannel pool per channel gives each its own TCP connection.
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    stubs = [pb_grpc.GRPCInferenceServiceStub(ch) for ch in channels]

    async def send(i: int) -> bool:
        stub = stubs[i % len(stubs)]
        await stub.ModelInfer(requests[i % len(requests)])
        return True

    async def close() -> None:
        for ch in channels:
            await ch.close()

    return send, close


def thrift_reply_ok(message: bytes) -> bool:
    """Whether a binary-protocol reply is a REPLY whose result struct holds `success` (field 0)."""
    if len(message) < 8:
        return False
    if message[0] & 0x80:  # strict header: version | type, then the name
        msg_type = message[3]
        at = 8 + int.from_bytes(message[4:8], "big") + 4
    else:
        at = 4 + int.from_bytes(message[0:4], "big")
        msg_type = message[at] if at < len(message) else 0
        at += 5
    if msg_type != 2 or at + 3 > len(message):  # 2 = REPLY; 3 = EXCEPTION
        return False
    field_id = int.from_bytes(message[at + 1 : at + 3], "big", signed=True)
    return field_id == 0


async def make_thrift_sender(
    target: str, model: str, payloads: dict[str, Any], connections: int
) -> tuple[Sender, Callable[[], Awaitable[None]]]:
    frames = [base64.b64decode(f) for f in payloads["frames"]]
    host, port = target.rsplit(":", 1)
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = []
    for _ in range(connections):
        reader, writer = await asyncio.open_connection(host, int(port))
        opened.append(writer)
        idle.put_nowait((reader, writer))

    async def send(i: int) -> bool:
        # A Thrift connection carries one call at a time: wait for an idle one (that wait is
        # part of the latency, as it would be for a real client).
        reader, writer = await idle.get()
        try:
            writer.write(frames[i % len(frames)])
            size = int.from_bytes(await reader.readexactly(4), "big")
            ok = thrift_reply_ok(await reader.readexactly(size))
        except BaseException:
            writer.close()
            raise
        idle.put_nowait((reader, writer))
        return ok

    async def close() -> None:
        for writer in opened:
            writer.close()

    return send, close


SENDERS = {"rest": make_rest_sender, "grpc": make_grpc_sender, "thrift": make_thrift_sender}
PAYLOAD_KEYS = {"rest": "batches", "grpc": "batches", "thrift": "frames"}


@dataclass
class Window:
    """What the measured window (requests intended after the warm-up) produced."""

    latency: HdrHistogram
    # How late the driver itself sent each request: its own health, not the server's.
    send_lag: HdrHistogram
    completed: int = 0
    errors: int = 0
    start: float = 0.0
    last_completion: float = 0.0


async def wait_until(when: float) -> None:
    """Sleep until `when` with microsecond precision.

    Event-loop timers fire on a millisecond grid, which would add up to a millisecond of the
    driver's own delay to every latency. So: sleep until SPIN_SECONDS before, then yield to the
    loop (which keeps serving replies) until the moment comes.
    """
    delay = when - now()
    if delay > SPIN_SECONDS:
        await asyncio.sleep(delay - SPIN_SECONDS)
    while now() < when:
        await asyncio.sleep(0)


async def drive(send: Sender, rate: float, duration: float, warmup: float) -> Window:
    """Send on schedule for warmup + duration seconds; return the measured window's figures."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    total = int(rate * (warmup + duration))
    start = now() + 0.05
    window = Window(
        latency=HdrHistogram(LOWEST_US, HIGHEST_US, SIG_FIGS),
        send_lag=HdrHistogram(LOWEST_US, HIGHEST_US, SIG_FIGS),
        start=start + warmup,
        last_completion=start + warmup,
    )
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, intended: float) -> None:
        measured = intended >= window.start
        if measured:
            window.send_lag.record_value(max(LOWEST_US, int((now() - intended) * 1e6)))
        try:
            ok = await send(i)
        except Exception:
            ok = False
        done = now()
        if not measured:
            return
        if ok:
            window.completed += 1
            window.latency.record_value(max(LOWEST_US, int((done - intended) * 1e6)))
            window.last_completion = max(window.last_completion, done)
        else:
            window.errors += 1

    for i in range(total):
        intended = start + i * interval
        if intended > now():
            await wait_until(intended)
        task = loop.create_task(one(i, intended))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        _, late = await asyncio.wait(set(pending), timeout=DRAIN_SECONDS)
        for task in late:
            task.cancel()
        window.errors += len(late)
    return window


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> RunMeasurement:
    payloads = load_payloads(args.payloads, PAYLOAD_KEYS[args.transport])
    send, close = await SENDERS[args.transport](args.target, args.model, payloads, args.connections)
    try:
        # One request before the clock starts: connection set-up is not the server's latency.
        if not await send(0):
            raise RuntimeError(f"{args.transport} request to {args.target} was refused")
        cpu0, wall0 = _cpu_seconds(), time.monotonic()
        window = await drive(send, args.rate, args.duration, args.warmup)
        cpu = (_cpu_seconds() - cpu0) / max(time.monotonic() - wall0, 1e-9)
    finally:
        await close()
    elapsed = max(window.last_completion - window.start, args.duration)
    hist = window.latency
    return RunMeasurement(
        offered_rps=args.rate,
        achieved_rps=window.completed / elapsed,
        p50_ms=hist.get_value_at_percentile(50.0) / 1000.0,
        p99_ms=hist.get_value_at_percentile(99.0) / 1000.0,
        p999_ms=hist.get_value_at_percentile(99.9) / 1000.0,
        max_ms=hist.get_max_value() / 1000.0,
        requests=window.completed,
        errors=window.errors,
        duration_s=elapsed,
        driver_cpu_cores=cpu,
        driver_lag_p99_ms=window.send_lag.get_value_at_percentile(99.0) / 1000.0,
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.peer_driver", description=__doc__.split("\n")[0]
    )
    p.add_argument("--transport", choices=tuple(SENDERS), required=True)
    p.add_argument("--target", required=True, help="host:port")
    p.add_argument("--model", default="rtb", help="model name on the server (REST, gRPC)")
    p.add_argument("--payloads", type=Path, required=True)
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--duration", type=float, required=True, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--report-json", type=Path, required=True)
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.connections < 1:
        p.error("--rate, --duration and --connections must be positive, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    result: RunMeasurement
    # uvloop's faster event loop for HTTP; grpc.aio keeps the stock loop it integrates with.
    uvloop: Any = None
    with contextlib.suppress(ImportError):
        uvloop = importlib.import_module("uvloop")
    if uvloop is not None and args.transport != "grpc":
        result = uvloop.run(run(args))
    else:
        result = asyncio.run(run(args))
    args.report_json.write_text(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
