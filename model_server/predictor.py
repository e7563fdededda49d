"""Prediction backends: the native tree evaluator and XGBoost's own `inplace_predict`.

XGBoost pays ~0.5 ms of fixed overhead per call, which alone would cap a core at ~2,000
requests/s. The native backend (``model_server/native/forest.c``) walks the same trees from
flat arrays in about a microsecond per call plus the walks themselves. Both return what the
model's objective returns (probabilities for ``binary:logistic``) as float32.

``make_predictor(booster, "auto")`` uses the native backend when the model is one it evaluates
exactly, after checking its outputs against XGBoost on probe rows, and XGBoost otherwise.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import orjson
import xgboost as xgb
from numpy.typing import NDArray

from model_server.logs import kv

log = logging.getLogger(__name__)

Backend = Literal["auto", "native", "xgboost"]
BACKENDS: tuple[Backend, ...] = ("auto", "native", "xgboost")

# Largest |native - xgboost| accepted by the start-up self-check.
TOLERANCE = 1e-5

# objective -> (output transform, how base_score becomes the base margin)
_OBJECTIVES: dict[str, tuple[str, str]] = {
    "binary:logistic": ("sigmoid", "logit"),
    "reg:logistic": ("sigmoid", "logit"),
    "binary:logitraw": ("identity", "identity"),
    "reg:squarederror": ("identity", "identity"),
}


class UnsupportedModelError(ValueError):
    """The model uses something the native evaluator does not implement."""


class NativeUnavailableError(RuntimeError):
    """The native extension was not built (no C compiler at install time)."""


class PredictorMismatchError(RuntimeError):
    """The native evaluator disagreed with XGBoost on the start-up probe rows."""


class Predictor(Protocol):
    """Scores float32 feature rows of shape (n, n_features)."""

    @property
    def backend(self) -> str: ...

    @property
    def n_features(self) -> int: ...

    def predict(
        self, rows: NDArray[np.float32], out: NDArray[np.float32] | None = None
    ) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class ForestArrays:
    """A gbtree model as flat node arrays: what the native evaluator is built from.

    Nodes are laid out tree by tree, each tree breadth-first with the two children of a split
    next to each other (the right child is ``left + 1``); a leaf's ``left`` is its own index.
    """

    left: NDArray[np.int32]
    feature: NDArray[np.int32]
    default_left: NDArray[np.int32]
    cond: NDArray[np.float32]  # split threshold, or the leaf value for a leaf
    roots: NDArray[np.int32]
    depths: NDArray[np.int32]
    n_features: int
    base_margin: float
    transform: str  # "identity" | "sigmoid"
    objective: str

    def is_leaf(self) -> NDArray[np.bool_]:
        return np.asarray(self.left == np.arange(self.left.size, dtype=np.int32))


def _parse_base_score(raw: str) -> float:
    # XGBoost 3.x stores a vector like "[5E-1]"; 2.x a plain number like "5E-1".
    parts = [p for p in raw.strip().strip("[]").split(",") if p.strip()]
    if len(parts) != 1:
        raise UnsupportedModelError(f"base_score {raw!r} has {len(parts)} values; expected one")
    return float(parts[0])


def _base_margin(base_score: float, kind: str) -> float:
    if kind == "identity":
        return float(np.float32(base_score))
    if not 0.0 < base_score < 1.0:
        raise UnsupportedModelError(f"base_score {base_score} is not a probability")
    bs = np.float32(base_score)
    return float(np.float32(-np.log(np.float32(1.0) / bs - np.float32(1.0))))


@dataclass
class _NodeLists:
    left: list[int] = field(default_factory=list)
    feature: list[int] = field(default_factory=list)
    default_left: list[int] = field(default_factory=list)
    cond: list[float] = field(default_factory=list)


def _append_tree(tree: dict[str, Any], out: _NodeLists) -> int:
    """Append one XGBoost tree breadth-first with adjacent children; returns its depth."""
    t_left, t_right = tree["left_children"], tree["right_children"]
    t_feature, t_cond = tree["split_indices"], tree["split_conditions"]
    t_default = tree["default_left"]
    n = len(t_left)
    base = len(out.left)
    # (xgboost node id, depth) in the order their slots are allocated: slot = base + position.
    queue = [(0, 0)]
    depth = 0
    for position in range(n):
        if position >= len(queue):
            break
        node, d = queue[position]
        if not 0 <= node < n:
            raise UnsupportedModelError("a tree has a child index out of range")
        if t_left[node] == -1:
            out.left.append(base + position)
            out.feature.append(0)
            out.default_left.append(0)
            depth = max(depth, d)
        else:
            out.left.append(base + len(queue))
            out.feature.append(int(t_feature[node]))
            out.default_left.append(1 if t_default[node] else 0)
            queue.append((t_left[node], d + 1))
            queue.append((t_right[node], d + 1))
        out.cond.append(float(t_cond[node]))
    if len(queue) > n:
        raise UnsupportedModelError("a tree's children do not form a tree")
    return depth


def forest_from_json(model_json: bytes) -> ForestArrays:
    """Flatten an XGBoost JSON model (``booster.save_raw("json")``) into node arrays."""
    try:
        learner = orjson.loads(model_json)["learner"]
        params = learner["learner_model_param"]
        objective = learner["objective"]["name"]
        booster = learner["gradient_booster"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise UnsupportedModelError(f"not an XGBoost JSON model: {exc}") from exc
    if booster.get("name") != "gbtree":
        raise UnsupportedModelError(f"booster {booster.get('name')!r}: only gbtree is supported")
    if objective not in _OBJECTIVES:
        raise UnsupportedModelError(f"objective {objective!r} is not supported natively")
    if int(params.get("num_class", "0")) > 1 or int(params.get("num_target", "1")) > 1:
        raise UnsupportedModelError("multi-class and multi-target models are not supported")
    transform, margin_kind = _OBJECTIVES[objective]
    n_features = int(params["num_feature"])
    trees = booster["model"]["trees"]
    if not trees:
        raise UnsupportedModelError("the model has no trees")

    nodes = _NodeLists()
    roots: list[int] = []
    depths: list[int] = []
    for tree in trees:
        if any(tree["split_type"]):
            raise UnsupportedModelError("categorical splits are not supported natively")
        if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise UnsupportedModelError("vector leaves are not supported natively")
        roots.append(len(nodes.left))
        depths.append(_append_tree(tree, nodes))

    left = np.asarray(nodes.left, dtype=np.int32)
    feature = np.asarray(nodes.feature, dtype=np.int32)
    cond = np.asarray(nodes.cond, dtype=np.float32)
    split_cond = cond[left != np.arange(left.size, dtype=np.int32)]
    if np.isnan(split_cond).any() or np.isneginf(split_cond).any():
        raise UnsupportedModelError("a split condition is NaN or -inf")
    if feature.size and int(feature.max()) >= n_features:
        raise UnsupportedModelError("a split uses a feature index beyond num_feature")
    return ForestArrays(
        left=left,
        feature=feature,
        default_left=np.asarray(nodes.default_left, dtype=np.int32),
        cond=cond,
        roots=np.asarray(roots, dtype=np.int32),
        depths=np.asarray(depths, dtype=np.int32),
        n_features=n_features,
        base_margin=_base_margin(_parse_base_score(params["base_score"]), margin_kind),
        transform=transform,
        objective=objective,
    )


def probe_rows(forest: ForestArrays, n: int, seed: int = 0) -> NDArray[np.float32]:
    """Rows that exercise the trees' edges: exact thresholds, their float32 neighbours, NaN.

    Random rows rarely land on a split threshold, where a wrong comparison (``<=`` vs ``<``,
    float64 vs float32) would show; these rows do, on every feature the model splits on.
    """
    rng = np.random.default_rng(seed)
    is_split = ~forest.is_leaf()
    thresholds: list[NDArray[np.float32]] = [
        forest.cond[is_split & (forest.feature == f)] for f in range(forest.n_features)
    ]
    rows = rng.normal(scale=3.0, size=(n, forest.n_features)).astype(np.float32)
    for f, th in enumerate(thresholds):
        if th.size == 0:
            continue
        picked = th[rng.integers(0, th.size, size=n)]
        nudge = rng.integers(-1, 2, size=n)  # -1: just below, 0: exactly on, 1: just above
        values = np.where(
            nudge < 0,
            np.nextafter(picked, np.float32(-np.inf)),
            np.where(nudge > 0, np.nextafter(picked, np.float32(np.inf)), picked),
        )
        use = rng.random(n) < 0.7
        rows[use, f] = values[use]
    rows[rng.random(rows.shape) < 0.15] = np.nan
    return np.ascontiguousarray(rows, dtype=np.float32)


class XGBoostPredictor:
    """XGBoost's ``inplace_predict``: exact by definition, slow per call."""

    backend = "xgboost"

    def __init__(self, booster: xgb.Booster) -> None:
        self._booster = booster
        # One prediction thread per worker process: OpenMP threads would fight the other workers.
        self._booster.set_param({"nthread": 1})
        self._n_features = int(booster.num_features())

    @property
    def n_features(self) -> int:
        return self._n_features

    def predict(
        self, rows: NDArray[np.float32], out: NDArray[np.float32] | None = None
    ) -> NDArray[np.float32]:
        pred = np.asarray(
            self._booster.inplace_predict(rows, missing=np.nan, validate_features=False),
            dtype=np.float32,
        ).reshape(-1)
        if out is None:
            return pred
        out[: pred.size] = pred
        return out[: pred.size]


class NativePredictor:
    """The compiled tree evaluator from ``model_server/native/forest.c``."""

    backend = "native"

    def __init__(self, forest: ForestArrays) -> None:
        try:
            from model_server.native import _forest
        except ImportError as exc:
            raise NativeUnavailableError(
                "the native evaluator is not built; reinstall rtbserve with a C compiler "
                "available, or use --backend xgboost"
            ) from exc
        transform = (
            _forest.TRANSFORM_SIGMOID
            if forest.transform == "sigmoid"
            else _forest.TRANSFORM_IDENTITY
        )
        self._forest = _forest.Forest(
            forest.left,
            forest.feature,
            forest.default_left,
            forest.cond,
            forest.roots,
            forest.depths,
            forest.n_features,
            forest.base_margin,
            transform,
        )
        self._n_features = forest.n_features
        self.arrays = forest

    @classmethod
    def from_booster(cls, booster: xgb.Booster) -> NativePredictor:
        return cls(forest_from_json(bytes(booster.save_raw("json"))))

    @property
    def forest(self) -> Any:
        """The compiled evaluator (`model_server.native._forest.Forest`)."""
        return self._forest

    @property
    def n_features(self) -> int:
        return self._n_features

    @property
    def n_trees(self) -> int:
        return self._forest.n_trees

    def predict(
        self, rows: NDArray[np.float32], out: NDArray[np.float32] | None = None
    ) -> NDArray[np.float32]:
        n = rows.shape[0]
        if out is None:
            out = np.empty(n, dtype=np.float32)
        self._forest.predict(rows, out)
        return out[:n]


def max_abs_difference(a: Predictor, b: Predictor, rows: NDArray[np.float32]) -> float:
    diff = np.abs(a.predict(rows).astype(np.float64) - b.predict(rows).astype(np.float64))
    return float(diff.max()) if diff.size else 0.0


def _checked_native(booster: xgb.Booster, probe_count: int) -> NativePredictor:
    native = NativePredictor.from_booster(booster)
    reference = XGBoostPredictor(booster)
    worst = max_abs_difference(native, reference, probe_rows(native.arrays, probe_count))
    if not math.isfinite(worst) or worst > TOLERANCE:
        raise PredictorMismatchError(
            f"native evaluator differs from XGBoost by {worst:.3g} (> {TOLERANCE}) on probe rows"
        )
    return native


def make_predictor(
    booster: xgb.Booster, backend: str = "auto", probe_count: int = 512
) -> Predictor:
    """The predictor for ``backend``; "auto" prefers native and falls back to XGBoost."""
    if backend == "xgboost":
        return XGBoostPredictor(booster)
    if backend == "native":
        return _checked_native(booster, probe_count)
    if backend != "auto":
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    try:
        return _checked_native(booster, probe_count)
    except (UnsupportedModelError, NativeUnavailableError, PredictorMismatchError) as exc:
        log.warning("native evaluator unavailable, using xgboost", extra=kv(reason=str(exc)))
        return XGBoostPredictor(booster)


def describe(predictor: Predictor) -> dict[str, Any]:
    """A loggable summary of a predictor."""
    info: dict[str, Any] = {"backend": predictor.backend, "n_features": predictor.n_features}
    if isinstance(predictor, NativePredictor):
        info["n_trees"] = predictor.n_trees
    return info
