"""A model's identity: what exactly a Deployment serves, and how status reports it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rtbserve_operator.constants import (
    ANNOTATION_MODEL_NAME,
    ANNOTATION_MODEL_SHA256,
    ANNOTATION_MODEL_URI,
    ANNOTATION_MODEL_VERSION,
    ANNOTATION_MODEL_VERSION_ID,
)
from rtbserve_operator.spec import ArtifactSpec


@dataclass(frozen=True)
class ModelIdentity:
    """A verified artifact, pinned: its URI, the S3 version of manifest.json and its sha256."""

    uri: str
    sha256: str
    version_id: str | None
    name: str
    version: str

    @property
    def short_sha(self) -> str:
        return self.sha256[:12]

    def describe(self) -> str:
        """One line for events, change-cause and messages."""
        pinned = f", S3 version {self.version_id}" if self.version_id else ""
        return f"{self.name} {self.version} (sha256 {self.short_sha}{pinned})"

    def annotations(self) -> dict[str, str]:
        """Pod-template annotations; any change yields a new ReplicaSet revision."""
        out = {
            ANNOTATION_MODEL_URI: self.uri,
            ANNOTATION_MODEL_SHA256: self.sha256,
            ANNOTATION_MODEL_NAME: self.name,
            ANNOTATION_MODEL_VERSION: self.version,
        }
        if self.version_id:
            out[ANNOTATION_MODEL_VERSION_ID] = self.version_id
        return out

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> ModelIdentity | None:
        """The identity a pod template carries, or None if it carries none."""
        sha = annotations.get(ANNOTATION_MODEL_SHA256)
        uri = annotations.get(ANNOTATION_MODEL_URI)
        if not sha or not uri:
            return None
        return cls(
            uri=uri,
            sha256=sha,
            version_id=annotations.get(ANNOTATION_MODEL_VERSION_ID) or None,
            name=annotations.get(ANNOTATION_MODEL_NAME, ""),
            version=annotations.get(ANNOTATION_MODEL_VERSION, ""),
        )

    def to_status(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "sha256": self.sha256,
            "versionId": self.version_id,
            "name": self.name,
            "version": self.version,
        }

    @classmethod
    def from_status(cls, data: Mapping[str, Any] | None) -> ModelIdentity | None:
        if not data or not data.get("sha256") or not data.get("uri"):
            return None
        return cls(
            uri=str(data["uri"]),
            sha256=str(data["sha256"]),
            version_id=data.get("versionId") or None,
            name=str(data.get("name") or ""),
            version=str(data.get("version") or ""),
        )


def identity_of_deployment(deployment: Mapping[str, Any] | None) -> ModelIdentity | None:
    """The model a Deployment's current pod template runs (what is really serving)."""
    if not deployment:
        return None
    template = deployment.get("spec", {}).get("template", {})
    return ModelIdentity.from_annotations(template.get("metadata", {}).get("annotations") or {})


def same_model(artifact: ArtifactSpec, pinned: ModelIdentity | None) -> bool:
    """Whether the spec's artifact still names the model already pinned (so a change of other
    fields, say replicas, must not move to a newer object at the same S3 URI)."""
    if pinned is None or artifact.uri != pinned.uri:
        return False
    if artifact.sha256 is not None and artifact.sha256 != pinned.sha256:
        return False
    return artifact.version_id is None or artifact.version_id == pinned.version_id


def to_verify(artifact: ArtifactSpec, pinned: ModelIdentity | None) -> ArtifactSpec:
    """What to verify for a spec: the pinned identity again when the spec still names it,
    else the spec's artifact as written."""
    if not same_model(artifact, pinned):
        return artifact
    assert pinned is not None
    return ArtifactSpec(uri=pinned.uri, sha256=pinned.sha256, version_id=pinned.version_id)
