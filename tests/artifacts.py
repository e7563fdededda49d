"""Small trained artifacts for tests: real training on synthetic traffic, in seconds."""

from __future__ import annotations

from pathlib import Path

from model_server.artifact import ArtifactRef, load_artifact, write_artifact
from model_server.predictor import make_predictor
from model_server.service import ScoringService
from model_server.training import TrainConfig, synthetic_examples, train


def train_artifact(
    out: Path,
    *,
    seed: int,
    version: str,
    name: str = "small",
    requests: int = 1500,
    bidders: int = 4,
    trees: int = 8,
    max_depth: int = 4,
) -> ArtifactRef:
    """Train on `requests` synthetic requests and write the artifact directory `out`."""
    result = train(
        synthetic_examples(requests, seed=seed, n_bidders=bidders),
        TrainConfig(trees=trees, max_depth=max_depth, seed=seed, threads=1),
    )
    return write_artifact(
        out,
        result.booster,
        result.pipeline,
        result.thresholds,
        result.metrics,
        name=name,
        version=version,
        params=result.params,
    )


def scoring_service(artifact_dir: Path, max_bidders: int = 6, max_batch: int = 4) -> ScoringService:
    """A native-backend ScoringService on `artifact_dir` with a fixed clock (1.7e9)."""
    model = load_artifact(artifact_dir)
    predictor = make_predictor(model.booster, "native")
    return ScoringService(model, predictor, max_bidders, max_batch, clock=lambda: 1.7e9)
