"""MLServer with its stock XGBoost runtime, serving the same model file rtbserve serves.

MLServer takes feature tensors, not bid requests, so the load driver sends the rows rtbserve's
feature pipeline builds (encoded before the clock starts): MLServer is timed on decoding the
tensor, predicting and answering, not on parsing OpenRTB JSON or building features.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

MODEL_NAME = "rtb"


@dataclass(frozen=True)
class MlserverPorts:
    http: int
    grpc: int
    metrics: int


def write_repository(root: Path, model_file: Path, ports: MlserverPorts) -> Path:
    """An MLServer model repository holding one model; returns the directory to `mlserver start`."""
    if root.exists():
        shutil.rmtree(root)
    model_dir = root / MODEL_NAME
    model_dir.mkdir(parents=True)
    # mlserver-xgboost finds model.ubj / model.json / model.bst by name.
    target = model_dir / f"model{model_file.suffix}"
    shutil.copyfile(model_file, target)
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL_NAME,
                "implementation": "mlserver_xgboost.XGBoostModel",
                "parameters": {"uri": f"./{target.name}"},
            },
            indent=2,
        )
    )
    (root / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": ports.http,
                "grpc_port": ports.grpc,
                "metrics_port": ports.metrics,
                "debug": False,
                # Predict in the server process: on one core a separate worker process only adds
                # a hop through a queue and a second process competing for the same core.
                "parallel_workers": 0,
            },
            indent=2,
        )
    )
    return root


def ready_url(ports: MlserverPorts) -> str:
    return f"http://127.0.0.1:{ports.http}/v2/models/{MODEL_NAME}/ready"
