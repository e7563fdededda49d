"""The capacity profile: what one pod of one model sustains, measured by a saturation search.

`rtbserve loadgen --find-saturation --profile-out DEST` writes it (a file or an s3:// URI);
`rtbserve capacity` reads it to size a fleet. It names the model (sha256, trees, depth,
features), the pod measured (workers, CPU limit, CPU model, architecture), the bidders per
request, and for each latency objective the highest rate whose probe met it, with every probe
as the latency curve. A profile of another kind or version, or one missing a field, is refused
with the reason (`ProfileError`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loadgen.saturation import Probe

KIND: Literal["rtbserve.io/capacity-profile"] = "rtbserve.io/capacity-profile"
VERSION: Literal[1] = 1
DEFAULT_SLOS_MS = (2.0, 10.0)


class ProfileError(ValueError):
    """A profile that cannot be read or used; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelIdentity(_Strict):
    name: str
    version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    trees: int | None = Field(default=None, ge=1)
    max_depth: int | None = Field(default=None, ge=1)
    features: int = Field(ge=1)


class PodShape(_Strict):
    workers: int = Field(ge=1)
    cpu_limit: float = Field(gt=0, description="vCPUs the measured pod could use")
    cpu_model: str
    arch: Literal["amd64", "arm64"] | str


class SloCapacity(_Strict):
    p99_ms: float = Field(gt=0)
    #: the highest probed rate that met the objective; None when none did. It may be absent:
    #: status.capacity is written by a JSON merge patch, where a null removes the key.
    requests_per_second: float | None = Field(default=None, ge=0)


class CurvePoint(_Strict):
    rate: float
    achieved: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    error_ratio: float
    #: errors within the limit, the rate reached, the generator on schedule (latency aside)
    healthy: bool


class CapacityProfile(_Strict):
    kind: Literal["rtbserve.io/capacity-profile"] = KIND
    version: Literal[1] = VERSION
    measured_at: str
    model: ModelIdentity
    pod: PodShape
    bidders_per_request: float = Field(gt=0)
    slos: list[SloCapacity] = Field(min_length=1)
    curve: list[CurvePoint]

    def capacity(self, p99_ms: float) -> float:
        """Requests/s one pod sustains within `p99_ms`; ProfileError when not measured."""
        for slo in self.slos:
            if abs(slo.p99_ms - p99_ms) < 1e-9:
                if slo.requests_per_second is None:
                    raise ProfileError(f"no probed rate met p99 <= {p99_ms:g} ms")
                return slo.requests_per_second
        measured = ", ".join(f"{s.p99_ms:g} ms" for s in self.slos)
        raise ProfileError(
            f"the profile has no figure for p99 <= {p99_ms:g} ms (it has {measured})"
        )


def _point(probe: Probe) -> CurvePoint:
    r = probe.result
    latency_reasons = [x for x in probe.reasons if x.startswith("p99 ")]
    return CurvePoint(
        rate=probe.rate,
        achieved=round(r.achieved_rate, 1),
        p50_ms=round(r.percentile_ms(50), 4),
        p99_ms=round(r.percentile_ms(99), 4),
        p999_ms=round(r.percentile_ms(99.9), 4),
        error_ratio=round(r.error_ratio, 6),
        healthy=len(probe.reasons) == len(latency_reasons) and r.ok > 0,
    )


def capacity_within(curve: Iterable[CurvePoint], p99_ms: float) -> float | None:
    """The highest healthy probed rate whose p99 met `p99_ms`."""
    rates = [p.rate for p in curve if p.healthy and p.p99_ms <= p99_ms]
    return max(rates) if rates else None


def build_profile(
    info: Any,
    probes: Sequence[Probe],
    slos_ms: Sequence[float],
    bidders_per_request: float,
    measured_at: dt.datetime | None = None,
) -> CapacityProfile:
    """A profile from the server's `info` reply and every probe of the searches."""
    curve = sorted((_point(p) for p in probes), key=lambda c: c.rate)
    when = measured_at or dt.datetime.now(dt.UTC)
    return CapacityProfile(
        measured_at=when.isoformat(timespec="seconds"),
        model=ModelIdentity(
            name=info.name,
            version=info.version,
            sha256=info.sha256,
            trees=info.trees,
            max_depth=info.max_depth,
            features=info.feature_count,
        ),
        pod=PodShape(
            workers=info.workers or 1,
            cpu_limit=info.cpu_limit or 1.0,
            cpu_model=info.cpu_model or "unknown",
            arch=info.arch or "unknown",
        ),
        bidders_per_request=round(bidders_per_request, 3),
        slos=[
            SloCapacity(p99_ms=s, requests_per_second=capacity_within(curve, s))
            for s in sorted(set(slos_ms))
        ],
        curve=curve,
    )


def parse_profile(data: bytes | str, origin: str) -> CapacityProfile:
    """Validate a profile's JSON; ProfileError names `origin` and what is wrong."""
    import orjson

    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProfileError(f"{origin}: not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{origin}: a profile is a JSON object")
    if raw.get("kind") != KIND:
        raise ProfileError(f"{origin}: kind {raw.get('kind')!r} is not {KIND!r}")
    if raw.get("version") != VERSION:
        raise ProfileError(
            f"{origin}: profile version {raw.get('version')!r}; this rtbserve reads version "
            f"{VERSION}: measure it again with this version's `rtbserve loadgen --profile-out`"
        )
    try:
        return CapacityProfile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ProfileError(f"{origin}: {problems}") from None


def to_json(profile: CapacityProfile) -> bytes:
    return profile.model_dump_json(indent=2).encode() + b"\n"


INFERENCE_MODEL_PREFIXES = ("inferencemodel/", "inferencemodels/", "im/")


def read_profile(source: str, namespace: str | None = None) -> CapacityProfile:
    """A profile from a file, an s3:// URI, or an InferenceModel's status.capacity
    (`inferencemodel/NAME` or `im/NAME`, in `namespace` or the kubeconfig's)."""
    import orjson

    from loadgen import k8s_status, s3io
    from loadgen.exit_codes import LoadgenError

    kind_prefix = next((p for p in INFERENCE_MODEL_PREFIXES if source.startswith(p)), None)
    if kind_prefix is not None:
        name = source[len(kind_prefix) :]
        try:
            ns, capacity = k8s_status.read_capacity(name, namespace)
        except LoadgenError as exc:
            raise ProfileError(exc.message) from None
        return parse_profile(orjson.dumps(capacity), f"InferenceModel {ns}/{name} status.capacity")
    if s3io.is_s3_uri(source):
        try:
            data = b"".join(s3io.iter_object_chunks(source))
        except LoadgenError as exc:
            raise ProfileError(exc.message) from None
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ProfileError(f"cannot read {source}: {exc.strerror}") from None
    return parse_profile(data, source)


def write_profile(profile: CapacityProfile, dest: str) -> None:
    """Write to a file or an s3:// URI."""
    from botocore.exceptions import BotoCoreError, ClientError

    from loadgen import s3io

    body = to_json(profile)
    try:
        if s3io.is_s3_uri(dest):
            bucket, key = s3io.split_s3_uri(dest)
            s3io.client().put_object(
                Bucket=bucket, Key=key, Body=body, ContentType="application/json"
            )
        else:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            Path(dest).write_bytes(body)
    except (OSError, ClientError, BotoCoreError) as exc:
        raise ProfileError(f"cannot write the profile to {dest}: {exc}") from None
