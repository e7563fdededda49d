"""Model artifacts: a directory with `model.ubj` and `manifest.json` (see docs/artifact-format.md).

    ref = write_artifact(out_dir, booster, pipeline, thresholds, metrics, name, version, params)
    ref.path, ref.sha256, ref.manifest                 # ArtifactRef
    manifest = verify_artifact(path, expected_sha256=None)   # checks every file; raises
    model = load_artifact(path, expected_sha256=None)        # LoadedModel
    model.manifest, model.booster, model.pipeline, model.sha256, model.path
    Manifest.from_json(raw_bytes)                            # InvalidManifestError when malformed

The artifact's identity is the sha256 of `manifest.json`'s bytes; the manifest lists the sha256
of every other file, so the identity covers the whole artifact. Errors are `ArtifactError`
subclasses whose messages name the file and the expected and actual values.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import xgboost

from model_server.features import FeaturePipeline

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.ubj"
_HASH_CHUNK = 1 << 20


class ArtifactError(Exception):
    """An artifact cannot be found, read or trusted."""


class ArtifactNotFoundError(ArtifactError):
    """No artifact where one was expected (no directory, no manifest, no bucket or object)."""


class MissingArtifactFileError(ArtifactError):
    """The manifest lists a file that is not there."""


class ChecksumMismatchError(ArtifactError):
    """A file's or the manifest's sha256 is not the expected one."""


class InvalidManifestError(ArtifactError):
    """manifest.json is not a valid manifest."""


class ArtifactAccessError(ArtifactError):
    """The artifact store refused access or could not be reached."""


@dataclass(frozen=True)
class Manifest:
    format_version: int
    name: str
    version: str
    created: str
    xgboost_version: str
    model_file: str
    bidders: list[str]
    feature_names: list[str]
    features: dict[str, Any]
    thresholds: dict[str, float]
    metrics: dict[str, Any]
    params: dict[str, Any]
    files: dict[str, str]

    def to_json(self) -> bytes:
        """Deterministic bytes: sorted keys, so equal manifests have equal identities."""
        obj = {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "xgboost_version": self.xgboost_version,
            "model_file": self.model_file,
            "bidders": self.bidders,
            "feature_names": self.feature_names,
            "features": self.features,
            "thresholds": self.thresholds,
            "metrics": self.metrics,
            "params": self.params,
            "files": self.files,
        }
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidManifestError(f"manifest.json is not valid JSON: {exc}") from None
        if not isinstance(d, dict):
            raise InvalidManifestError("manifest.json must hold a JSON object")
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        expected: dict[str, type | tuple[type, ...]] = {
            "format_version": int,
            "name": str,
            "version": str,
            "created": str,
            "xgboost_version": str,
            "model_file": str,
            "bidders": list,
            "feature_names": list,
            "features": dict,
            "thresholds": dict,
            "metrics": dict,
            "params": dict,
            "files": dict,
        }
        for key, typ in expected.items():
            if key not in d:
                raise InvalidManifestError(f"manifest.json has no {key!r}")
            if not isinstance(d[key], typ):
                raise InvalidManifestError(f"manifest.json {key!r} has the wrong type")
        if d["format_version"] != FORMAT_VERSION:
            raise InvalidManifestError(
                f"manifest.json format_version {d['format_version']} is not supported "
                f"(this build reads {FORMAT_VERSION})"
            )
        files = d["files"]
        for rel, digest in files.items():
            _check_relative(rel)
            if not (isinstance(digest, str) and len(digest) == 64):
                raise InvalidManifestError(f"manifest.json files[{rel!r}] is not a sha256 hex")
        if d["model_file"] not in files:
            raise InvalidManifestError(f"manifest.json model_file {d['model_file']!r} not in files")
        bidders = [str(b) for b in d["bidders"]]
        thresholds = d["thresholds"]
        if set(thresholds) != set(bidders) or not all(
            isinstance(v, (int, float)) for v in thresholds.values()
        ):
            raise InvalidManifestError("manifest.json thresholds must give a number per bidder")
        return cls(
            format_version=d["format_version"],
            name=d["name"],
            version=d["version"],
            created=d["created"],
            xgboost_version=d["xgboost_version"],
            model_file=d["model_file"],
            bidders=bidders,
            feature_names=[str(f) for f in d["feature_names"]],
            features=dict(d["features"]),
            thresholds={k: float(v) for k, v in thresholds.items()},
            metrics=dict(d["metrics"]),
            params=dict(d["params"]),
            files=dict(files),
        )


@dataclass(frozen=True)
class ArtifactRef:
    path: Path
    sha256: str
    manifest: Manifest


@dataclass(frozen=True)
class LoadedModel:
    manifest: Manifest
    booster: xgboost.Booster
    pipeline: FeaturePipeline
    sha256: str
    path: Path

    @property
    def thresholds(self) -> dict[str, float]:
        return self.manifest.thresholds


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_relative(rel: str) -> None:
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts or rel == MANIFEST_FILE:
        raise InvalidManifestError(f"manifest.json lists an invalid file path {rel!r}")


def utc_now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def default_version() -> str:
    """A UTC timestamp version like 20261123-1203."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M")


def write_artifact(  # noqa: PLR0917 - the documented positional API
    out_dir: Path | str,
    booster: xgboost.Booster,
    pipeline: FeaturePipeline,
    thresholds: Mapping[str, float],
    metrics: Mapping[str, Any],
    name: str,
    version: str,
    params: Mapping[str, Any],
) -> ArtifactRef:
    """Write model.ubj and manifest.json into `out_dir` (created; existing files replaced)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if set(thresholds) != set(pipeline.bidders):
        raise ValueError("thresholds must give exactly one value per bidder")
    if booster.num_features() != pipeline.n_features:
        raise ValueError(
            f"booster has {booster.num_features()} features, pipeline {pipeline.n_features}"
        )
    model_path = out / MODEL_FILE
    # Save to a temporary name then rename, so a reader never sees half a model.
    tmp_model = out / ".model.tmp.ubj"  # the .ubj suffix selects XGBoost's UBJSON format
    booster.save_model(str(tmp_model))
    tmp_model.replace(model_path)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        name=name,
        version=version,
        created=utc_now_rfc3339(),
        xgboost_version=xgboost.__version__,
        model_file=MODEL_FILE,
        bidders=list(pipeline.bidders),
        feature_names=list(pipeline.feature_names),
        features=pipeline.to_dict(),
        thresholds={b: float(thresholds[b]) for b in pipeline.bidders},
        metrics=dict(metrics),
        params=dict(params),
        files={MODEL_FILE: sha256_file(model_path)},
    )
    raw = manifest.to_json()
    _atomic_write(out / MANIFEST_FILE, raw)
    return ArtifactRef(out, sha256_bytes(raw), manifest)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(path: Path | str) -> tuple[Manifest, str]:
    """The manifest of the artifact directory `path` and its identity (sha256 of its bytes)."""
    d = Path(path)
    if not d.is_dir():
        raise ArtifactNotFoundError(f"artifact directory {str(d)!r} does not exist")
    mf = d / MANIFEST_FILE
    try:
        raw = mf.read_bytes()
    except FileNotFoundError:
        raise ArtifactNotFoundError(f"{str(mf)!r} does not exist") from None
    return Manifest.from_json(raw), sha256_bytes(raw)


def verify_artifact(path: Path | str, expected_sha256: str | None = None) -> Manifest:
    """Check the artifact's identity (when expected) and every listed file's sha256."""
    return _verify(Path(path), expected_sha256)[0]


def _verify(d: Path, expected_sha256: str | None) -> tuple[Manifest, str]:
    manifest, identity = read_manifest(d)
    if expected_sha256 is not None and identity != expected_sha256.lower():
        raise ChecksumMismatchError(
            f"{str(d / MANIFEST_FILE)!r}: artifact sha256 is {identity}, expected "
            f"{expected_sha256.lower()}"
        )
    for rel, expected in sorted(manifest.files.items()):
        f = d / rel
        if not f.is_file():
            raise MissingArtifactFileError(f"{str(f)!r} is listed in manifest.json but missing")
        actual = sha256_file(f)
        if actual != expected:
            raise ChecksumMismatchError(
                f"{str(f)!r}: sha256 is {actual}, manifest.json expects {expected}"
            )
    return manifest, identity


def load_artifact(path: Path | str, expected_sha256: str | None = None) -> LoadedModel:
    """Verify, then load the booster and rebuild the feature pipeline."""
    d = Path(path)
    manifest, identity = _verify(d, expected_sha256)
    try:
        pipeline = FeaturePipeline.from_dict(manifest.features)
    except ValueError as exc:
        raise InvalidManifestError(f"manifest.json features: {exc}") from None
    if pipeline.feature_names != manifest.feature_names or pipeline.bidders != manifest.bidders:
        raise InvalidManifestError("manifest.json features disagree with feature_names/bidders")
    try:
        booster = xgboost.Booster(model_file=str(d / manifest.model_file))
    except xgboost.core.XGBoostError as exc:
        raise InvalidManifestError(
            f"{manifest.model_file!r} is not a loadable model: {exc}"
        ) from None
    if booster.num_features() != pipeline.n_features:
        raise InvalidManifestError(
            f"model has {booster.num_features()} features, the feature spec {pipeline.n_features}"
        )
    booster.feature_names = None  # rows are positional; skip name checks on the hot path
    return LoadedModel(manifest, booster, pipeline, identity, d)
