"""The info call describes the model and the pod, and clients generated before its optional
fields still read it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import thriftpy2
from thriftpy2.protocol.binary import TBinaryProtocol
from thriftpy2.transport.memory import TMemoryBuffer

from model_server import thrift_contract as tc
from model_server.fast_codec import encode_call
from model_server.metrics import WorkerStats
from model_server.service import FrameHandler, ScoringService


def _info_reply(service: ScoringService, module: Any) -> Any:
    reply = FrameHandler(service, WorkerStats(), workers=3).handle(
        encode_call(tc.ModelServer, "info", 7)[4:]
    )[1]
    proto = TBinaryProtocol(TMemoryBuffer(reply[4:]))
    proto.read_message_begin()
    result = module.ModelServer.info_result()
    result.read(proto)
    return result.success


def test_info_names_trees_depth_workers_and_machine(service: ScoringService) -> None:
    info = _info_reply(service, tc.rtbserve_thrift)
    assert info.trees == service.model.booster.num_boosted_rounds()
    assert info.max_depth == service.model.manifest.params["max_depth"]
    assert info.workers == 3
    assert info.cpu_limit > 0
    assert info.arch in ("amd64", "arm64")
    assert info.cpu_model


def test_a_client_from_before_the_optional_fields_reads_info(
    service: ScoringService, tmp_path: Path
) -> None:
    idl = tc.IDL_PATH.read_text()
    old = re.sub(
        r"\n  // What a capacity profile.*?13: optional string arch\n", "\n", idl, flags=re.S
    )
    assert "optional i32 trees" not in old
    path = tmp_path / "old_rtbserve.thrift"
    path.write_text(old)
    module = thriftpy2.load(str(path), module_name="old_rtbserve_thrift")
    info = _info_reply(service, module)
    assert info.name == service.name
    assert info.sha256 == service.sha256
    assert not hasattr(info, "trees")
