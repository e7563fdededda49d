"""Which model a spec names: a change of other fields never moves to a newer S3 object."""

from __future__ import annotations

from rtbserve_operator.identity import ModelIdentity, same_model, to_verify
from rtbserve_operator.spec import ArtifactSpec

PINNED = ModelIdentity("s3://models/ctr/1/", "a" * 64, "v1", "ctr", "1")


def artifact(**fields: str) -> ArtifactSpec:
    return ArtifactSpec.model_validate({"uri": PINNED.uri, **fields})


def test_an_unpinned_spec_for_the_pinned_uri_reverifies_exactly_the_pinned_model() -> None:
    assert same_model(artifact(), PINNED)
    again = to_verify(artifact(), PINNED)
    assert (again.uri, again.sha256, again.version_id) == (PINNED.uri, "a" * 64, "v1")


def test_pins_that_agree_are_the_same_model() -> None:
    assert same_model(artifact(sha256="a" * 64, versionId="v1"), PINNED)


def test_a_new_uri_or_pin_is_a_new_model() -> None:
    for spec in (
        ArtifactSpec(uri="s3://models/ctr/2/"),
        artifact(sha256="b" * 64),
        artifact(versionId="v2"),
    ):
        assert not same_model(spec, PINNED)
        assert to_verify(spec, PINNED) == spec
    assert not same_model(artifact(), None)
    assert to_verify(artifact(), None) == artifact()
