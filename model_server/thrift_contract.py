"""The Thrift contract (`rtbserve.thrift`), loaded once with thriftpy2.

Everything that speaks Thrift imports the generated types from here, so the IDL is parsed once
per process and every part sees the same classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import thriftpy2

IDL_PATH = Path(__file__).with_name("rtbserve.thrift")

# thriftpy2 requires the module name to end in "_thrift" (that also makes its types picklable).
rtbserve_thrift: Any = thriftpy2.load(str(IDL_PATH), module_name="rtbserve_thrift")

ModelServer: Any = rtbserve_thrift.ModelServer
ScoreResponse: Any = rtbserve_thrift.ScoreResponse
BidderScore: Any = rtbserve_thrift.BidderScore
ScoreRequest: Any = rtbserve_thrift.ScoreRequest
BatchResult: Any = rtbserve_thrift.BatchResult
ModelInfo: Any = rtbserve_thrift.ModelInfo
InvalidJson: Any = rtbserve_thrift.InvalidJson
MissingField: Any = rtbserve_thrift.MissingField
UnknownBidder: Any = rtbserve_thrift.UnknownBidder
TooManyBidders: Any = rtbserve_thrift.TooManyBidders
BatchTooLarge: Any = rtbserve_thrift.BatchTooLarge
