"""The straightforward Thrift model server rtbserve is compared with.

This is the design of the public AWS sample for XGBoost in real-time bidding that rtbserve
improves on: thriftpy2's stock `make_server` (a thread per connection), and for every call parse
the JSON, build the rows with the same feature pipeline rtbserve uses, wrap them in an
`xgb.DMatrix` and call `booster.predict`. It serves the same `ModelServer.score` contract, so the
same load generator drives it with the same requests.

    python bench/peers/plain_thrift_server.py --model DIR --port 9090
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import thriftpy2
import xgboost as xgb
from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.rpc import make_server
from thriftpy2.transport import TFramedTransportFactory

# rtbserve's own feature pipeline, from the repo (hence E402 on the imports below).
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from model_server.artifact import load_artifact  # noqa: E402
from model_server.errors import (  # noqa: E402
    InvalidJsonError,
    MissingFieldError,
    UnknownBidderError,
)
from model_server.openrtb import parse_bid_request  # noqa: E402

rtbserve = thriftpy2.load(
    str(REPO / "model_server" / "rtbserve.thrift"), module_name="rtbserve_thrift"
)


class Handler:
    def __init__(self, model_dir: Path) -> None:
        model = load_artifact(model_dir)
        self.pipeline = model.pipeline
        self.booster = model.booster
        self.thresholds = model.thresholds
        self.bidders = list(self.pipeline.bidders)
        self.name = model.manifest.name
        self.version = model.manifest.version
        self.sha256 = model.sha256
        self.max_bidders = 64

    def score(self, bid_request: bytes, bidders: list[str]) -> Any:
        try:
            req = parse_bid_request(bid_request)
        except InvalidJsonError as exc:
            raise rtbserve.InvalidJson(message=str(exc)) from None
        except MissingFieldError as exc:
            raise rtbserve.MissingField(message=str(exc), field=exc.field) from None
        if len(bidders) > self.max_bidders:
            raise rtbserve.TooManyBidders(
                message="too many bidders", limit=self.max_bidders, requested=len(bidders)
            )
        try:
            idx = self.pipeline.bidder_indices(bidders)
        except UnknownBidderError as exc:
            raise rtbserve.UnknownBidder(message=str(exc), bidders=list(exc.bidders)) from None
        rows = self.pipeline.rows(req, idx)
        probabilities = self.booster.predict(xgb.DMatrix(rows))
        scores = []
        for i, p in zip(idx, probabilities, strict=True):
            name = self.bidders[i]
            prob = float(p)
            scores.append(
                rtbserve.BidderScore(
                    bidder=name, probability=prob, forward=prob >= self.thresholds[name]
                )
            )
        return rtbserve.ScoreResponse(
            request_id=req["id"], model_version=self.version, scores=scores
        )

    def score_batch(self, requests: list[Any]) -> list[Any]:
        raise rtbserve.BatchTooLarge(
            message="batching is not offered", limit=0, requested=len(requests)
        )

    def info(self) -> Any:
        return rtbserve.ModelInfo(
            name=self.name,
            version=self.version,
            sha256=self.sha256,
            bidders=self.bidders,
            feature_count=self.pipeline.n_features,
            backend="xgboost",
            thresholds=self.thresholds,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a local artifact directory")
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args()
    server: Any = make_server(
        rtbserve.ModelServer,
        Handler(args.model),
        host="127.0.0.1",
        port=args.port,
        proto_factory=TBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
        trans_factory=TFramedTransportFactory(),
    )
    print(f"plain thrift server on 127.0.0.1:{args.port}", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
