"""Artifact directories: writing, identity, verification and loading."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
import xgboost

from model_server.artifact import (
    ArtifactNotFoundError,
    ChecksumMismatchError,
    InvalidManifestError,
    Manifest,
    MissingArtifactFileError,
    load_artifact,
    verify_artifact,
    write_artifact,
)
from model_server.synthetic import TrafficGenerator


@pytest.fixture
def artifact(small_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the session's small artifact, safe to damage."""
    return Path(shutil.copytree(small_artifact, tmp_path / "a"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_and_manifest(artifact: Path) -> None:
    assert sorted(p.name for p in artifact.iterdir()) == ["manifest.json", "model.ubj"]
    raw = (artifact / "manifest.json").read_bytes()
    m = Manifest.from_json(raw)
    assert (m.format_version, m.name, m.version) == (1, "small", "test-1")
    assert m.created.endswith("Z")
    assert m.xgboost_version == xgboost.__version__
    assert m.files == {"model.ubj": _sha(artifact / "model.ubj")}
    assert m.bidders == ["dsp-01", "dsp-02", "dsp-03", "dsp-04"]
    assert set(m.thresholds) == set(m.bidders)
    assert len(m.feature_names) == m.features["feature_names"].__len__()
    assert "auc" in m.metrics
    assert m.params["objective"] == "binary:logistic"
    # Deterministic bytes: keys sorted, re-serialising the parsed manifest gives the same bytes.
    assert m.to_json() == raw
    assert list(orjson.loads(raw)) == sorted(orjson.loads(raw))


def test_load_gives_a_working_model(artifact: Path) -> None:
    model = load_artifact(artifact)
    assert model.sha256 == _sha(artifact / "manifest.json")
    assert model.path == artifact
    assert model.thresholds == model.manifest.thresholds
    sr = TrafficGenerator(seed=99, n_bidders=4).request()
    x = model.pipeline.rows(sr.request, model.pipeline.bidder_indices([]), sr.timestamp)
    p = model.booster.inplace_predict(x)
    assert p.shape == (4,)
    assert ((p > 0) & (p < 1)).all()
    # The model file loads with plain XGBoost too and predicts the same.
    plain = xgboost.Booster(model_file=str(artifact / "model.ubj"))
    np.testing.assert_array_equal(plain.inplace_predict(x), p)


def test_a_loaded_model_can_be_written_again(artifact: Path, tmp_path: Path) -> None:
    model = load_artifact(artifact)
    m = model.manifest
    ref = write_artifact(
        tmp_path / "b", model.booster, model.pipeline, m.thresholds, m.metrics, m.name,
        m.version, m.params,
    )  # fmt: skip
    assert list(ref.manifest.files) == ["model.ubj"]
    assert ref.sha256 == _sha(tmp_path / "b" / "manifest.json")
    assert load_artifact(tmp_path / "b", ref.sha256).manifest.feature_names == m.feature_names


def test_tampered_model_names_the_file(artifact: Path) -> None:
    with (artifact / "model.ubj").open("r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ChecksumMismatchError, match=r"model\.ubj.*sha256 is [0-9a-f]{64}.*expects"):
        verify_artifact(artifact)
    with pytest.raises(ChecksumMismatchError):
        load_artifact(artifact)


def test_tampered_manifest_changes_identity(artifact: Path) -> None:
    identity = _sha(artifact / "manifest.json")
    mf = artifact / "manifest.json"
    mf.write_bytes(mf.read_bytes().replace(b'"test-1"', b'"test-2"'))
    verify_artifact(artifact)  # still self-consistent...
    with pytest.raises(ChecksumMismatchError, match=f"expected {identity}"):
        verify_artifact(artifact, identity)  # ...but not the artifact that was pinned


def test_wrong_expected_sha(artifact: Path) -> None:
    with pytest.raises(ChecksumMismatchError, match="expected 0000"):
        load_artifact(artifact, "0" * 64)


def test_missing_files(artifact: Path, tmp_path: Path) -> None:
    (artifact / "model.ubj").unlink()
    with pytest.raises(MissingArtifactFileError, match=r"model\.ubj.*missing"):
        verify_artifact(artifact)
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        verify_artifact(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactNotFoundError, match=r"manifest\.json"):
        load_artifact(tmp_path / "empty")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("files"), "no 'files'"),
        (lambda d: d.update(format_version=9), "format_version 9"),
        (lambda d: d.update(files={"../x": "0" * 64, "model.ubj": "0" * 64}), "invalid file path"),
        (lambda d: d.update(thresholds={}), "thresholds"),
        (lambda d: d.update(name=5), "'name' has the wrong type"),
    ],
)
def test_invalid_manifest(artifact: Path, edit: object, message: str) -> None:
    mf = artifact / "manifest.json"
    d = orjson.loads(mf.read_bytes())
    edit(d)  # type: ignore[operator]
    mf.write_bytes(orjson.dumps(d))
    with pytest.raises(InvalidManifestError, match=message):
        verify_artifact(artifact)


def test_manifest_that_is_not_json(artifact: Path) -> None:
    (artifact / "manifest.json").write_bytes(b"\x00garbage")
    with pytest.raises(InvalidManifestError, match="not valid JSON"):
        load_artifact(artifact)


def test_feature_spec_mismatch_is_invalid(artifact: Path) -> None:
    mf = artifact / "manifest.json"
    d = orjson.loads(mf.read_bytes())
    d["feature_names"] = d["feature_names"][:-1]
    mf.write_bytes(orjson.dumps(d))
    with pytest.raises(InvalidManifestError, match="features"):
        load_artifact(artifact)
