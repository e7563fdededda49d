"""The requests every system is sent, in each system's own wire format.

One seeded stream of synthetic OpenRTB 2.6 requests (`model_server.synthetic`), each with its
candidate bidders, becomes: framed Thrift `score` calls (rtbserve, the plain Thrift peer, the echo
limit) and V2-protocol feature matrices built by rtbserve's feature pipeline (MLServer, which
takes features, not bid requests).
"""

from __future__ import annotations

import base64
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.echo_limit import score_call, thrift_module
from model_server.features import FeaturePipeline
from model_server.synthetic import TrafficGenerator

# The V2 input name MLServer sees; its XGBoost runtime takes the only input whatever its name.
INPUT_NAME = "features"


@dataclass(frozen=True)
class Workload:
    """`count` requests, each as JSON bytes with its candidate bidders."""

    requests: list[bytes]
    bidders: list[list[str]]
    timestamps: list[float]
    # Ground truth: which of the candidates bid (loadgen reports filtering quality from it).
    bids: list[list[str]]

    def __len__(self) -> int:
        return len(self.requests)


def candidate_lists(
    all_bidders: list[str], per_request: int, count: int, seed: int
) -> list[list[str]]:
    """`count` lists of `per_request` distinct bidders, drawn at random (all of them when equal)."""
    if not 1 <= per_request <= len(all_bidders):
        raise ValueError(
            f"{per_request} bidders per request, but the model knows {len(all_bidders)}"
        )
    rng = random.Random(seed)
    return [rng.sample(all_bidders, per_request) for _ in range(count)]


def make_workload(all_bidders: list[str], per_request: int, count: int, seed: int) -> Workload:
    gen = TrafficGenerator(seed=seed, n_bidders=len(all_bidders))
    synthetic = list(gen.requests(count))
    candidates = candidate_lists(all_bidders, per_request, count, seed)
    return Workload(
        requests=[orjson.dumps(s.request) for s in synthetic],
        bidders=candidates,
        timestamps=[s.timestamp for s in synthetic],
        bids=[sorted(s.bids & set(c)) for s, c in zip(synthetic, candidates, strict=True)],
    )


def with_exchange_extras(request: dict[str, Any], seed: int) -> dict[str, Any]:
    """`request` with what an exchange's requests carry beside the fields a model reads: a
    supply chain, user ids and segments, consent, per-bidder `imp.ext` parameters, device and
    request extensions, as a Prebid Server request has them (2-3 KB in all). The model reads
    none of it; the parser still has to get through it."""
    rng = random.Random(seed)
    out: dict[str, Any] = orjson.loads(orjson.dumps(request))

    def hexid(n: int) -> str:
        return "".join(rng.choice("0123456789abcdef") for _ in range(n))

    nodes = [
        {"asi": f"ssp{k}.example", "sid": str(rng.randrange(10**6)), "hp": 1, "rid": hexid(16)}
        for k in range(rng.randint(1, 3))
    ]
    out["source"] = {"tid": hexid(32), "ext": {"schain": {"ver": "1.0", "complete": 1,
                                                           "nodes": nodes}}}  # fmt: skip
    user = out.setdefault("user", {})
    user["ext"] = {
        "consent": "CP" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(150)),
        "eids": [
            {"source": f"id{k}.example", "uids": [{"id": hexid(32), "atype": 1}]}
            for k in range(rng.randint(2, 6))
        ],
    }
    user["data"] = [
        {
            "id": f"dmp{k}",
            "name": f"provider-{k}",
            "segment": [{"id": str(rng.randrange(10**5))} for _ in range(rng.randint(5, 20))],
        }
        for k in range(rng.randint(1, 2))
    ]
    for imp in out.get("imp", []):
        imp["tagid"] = f"div-gpt-ad-{rng.randrange(10**4)}-0"
        imp["ext"] = {
            "gpid": f"/{rng.randrange(10**5)}/home/top",
            "prebid": {
                "bidder": {
                    f"bidder{k}": {"placementId": rng.randrange(10**7), "siteId": hexid(8)}
                    for k in range(rng.randint(3, 8))
                }
            },
        }
    device = out.setdefault("device", {})
    device["ext"] = {"atts": rng.randint(0, 3), "ifv": hexid(32)}
    out["ext"] = {
        "prebid": {
            "channel": {"name": "web", "version": "9.1"},
            "targeting": {"includewinners": True, "pricegranularity": "dense"},
            "cache": {"bids": {}},
        }
    }
    return out


def thrift_frames(workload: Workload) -> list[bytes]:
    thrift = thrift_module()
    return [
        score_call(thrift, r, b) for r, b in zip(workload.requests, workload.bidders, strict=True)
    ]


def feature_matrices(workload: Workload, pipeline: FeaturePipeline) -> list[np.ndarray]:
    """What rtbserve computes from each request before predicting, for peers that take features."""
    out = []
    for raw, names, now in zip(
        workload.requests, workload.bidders, workload.timestamps, strict=True
    ):
        rows = pipeline.rows(orjson.loads(raw), pipeline.bidder_indices(names), now=now)
        out.append(rows)
    return out


def _json_rows(rows: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in rows.tolist()]


def write_replay(path: Path, workload: Workload) -> Path:
    """`rtbserve loadgen --replay` input: one training record per line, the same requests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for raw, bidders, bids in zip(
            workload.requests, workload.bidders, workload.bids, strict=True
        ):
            record = {"request": orjson.Fragment(raw), "bidders": bidders, "bids": bids}
            out.write(orjson.dumps(record) + b"\n")
    return path


def write_thrift_payloads(path: Path, workload: Workload) -> Path:
    frames = [base64.b64encode(f).decode() for f in thrift_frames(workload)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"frames": frames}))
    return path


def write_v2_payloads(path: Path, matrices: list[np.ndarray], model: str) -> Path:
    data: dict[str, Any] = {
        "model": model,
        "input_name": INPUT_NAME,
        "batches": [_json_rows(m) for m in matrices],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
