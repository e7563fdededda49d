"""The native tree evaluator must give XGBoost's predictions, on every kind of model it accepts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from numpy.typing import NDArray

from model_server.native import _forest
from model_server.predictor import (
    NativePredictor,
    UnsupportedModelError,
    XGBoostPredictor,
    forest_from_json,
    make_predictor,
    probe_rows,
)

pytestmark = pytest.mark.native

TOLERANCE = 1e-5


def _data(n: int = 3000, k: int = 12, missing: float = 0.2, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)).astype(np.float32)
    x[:, 3] = np.round(x[:, 3])  # a feature with ties, so thresholds sit on data values
    logit = x[:, 0] - 0.5 * x[:, 1] * x[:, 2] + np.sin(x[:, 3])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    x[rng.random(x.shape) < missing] = np.nan
    return x, y


def _train(params: dict[str, Any], rounds: int = 30, **data: Any) -> xgb.Booster:
    x, y = _data(**data)
    if params.get("objective") == "reg:squarederror":
        y = y * 3.0 + np.nan_to_num(x[:, 0])
    return xgb.train({"nthread": 1, "seed": 0, **params}, xgb.DMatrix(x, y), rounds)


def _test_rows(booster: xgb.Booster, n: int = 4000) -> NDArray[np.float32]:
    x, _ = _data(n=n, k=booster.num_features(), seed=99)
    forest = forest_from_json(bytes(booster.save_raw("json")))
    return np.ascontiguousarray(np.vstack([x, probe_rows(forest, n, seed=1)]))


def _assert_same(booster: xgb.Booster, rows: NDArray[np.float32] | None = None) -> NativePredictor:
    native = NativePredictor.from_booster(booster)
    rows = _test_rows(booster) if rows is None else rows
    expected = booster.inplace_predict(rows, missing=np.nan)
    got = native.predict(rows)
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    return native


MODELS = {
    "logistic depth 6": {"objective": "binary:logistic", "max_depth": 6},
    "logistic depth 1 (stumps)": {"objective": "binary:logistic", "max_depth": 1},
    "logistic depth 10 (deepest perfect)": {"objective": "binary:logistic", "max_depth": 10},
    "logistic depth 13 (linked layout)": {
        "objective": "binary:logistic",
        "max_depth": 13,
        "min_child_weight": 0,
    },
    "lossguide, unbalanced": {
        "objective": "binary:logistic",
        "grow_policy": "lossguide",
        "max_leaves": 40,
        "max_depth": 0,
        "tree_method": "hist",
    },
    "explicit base_score": {"objective": "binary:logistic", "base_score": 0.13, "max_depth": 4},
    "exact tree method": {"objective": "binary:logistic", "tree_method": "exact", "max_depth": 5},
    "random forest (parallel trees)": {
        "objective": "binary:logistic",
        "num_parallel_tree": 4,
        "subsample": 0.8,
        "colsample_bynode": 0.8,
        "max_depth": 5,
    },
    "reg:logistic": {"objective": "reg:logistic", "max_depth": 4},
    "binary:logitraw": {"objective": "binary:logitraw", "max_depth": 4},
    "reg:squarederror": {"objective": "reg:squarederror", "max_depth": 5},
}


@pytest.mark.parametrize("params", MODELS.values(), ids=MODELS.keys())
def test_native_matches_xgboost(params: dict[str, Any]) -> None:
    _assert_same(_train(params))


def test_deep_trees_use_the_linked_layout_and_shallow_ones_the_perfect_layout() -> None:
    deep = NativePredictor.from_booster(_train(MODELS["logistic depth 13 (linked layout)"]))
    shallow = NativePredictor.from_booster(_train(MODELS["logistic depth 6"]))
    assert deep._forest.layout == "linked"
    assert shallow._forest.layout == "perfect"


def test_both_layouts_agree_on_the_same_model() -> None:
    booster = _train(MODELS["logistic depth 6"])
    f = forest_from_json(bytes(booster.save_raw("json")))
    args = (f.left, f.feature, f.default_left, f.cond, f.roots, f.depths, f.n_features)
    perfect = _forest.Forest(*args, f.base_margin, _forest.TRANSFORM_SIGMOID)
    linked = _forest.Forest(*args, f.base_margin, _forest.TRANSFORM_SIGMOID, perfect_max_depth=0)
    assert (perfect.layout, linked.layout) == ("perfect", "linked")
    rows = _test_rows(booster)
    a, b = np.empty(len(rows), np.float32), np.empty(len(rows), np.float32)
    perfect.predict(rows, a)
    linked.predict(rows, b)
    np.testing.assert_array_equal(a, b)


def test_every_model_the_trainer_produces(tiny_artifact: Any) -> None:
    """The artifact trainer's own model, on the feature rows the server builds."""
    from model_server.artifact import load_artifact
    from model_server.synthetic import TrafficGenerator

    model = load_artifact(tiny_artifact.path)
    gen = TrafficGenerator(seed=4, n_bidders=8)
    idx = model.pipeline.bidder_indices([])
    rows = np.vstack(
        [model.pipeline.rows(sr.request, idx, sr.timestamp) for sr in gen.requests(300)]
    )
    native = _assert_same(model.booster, rows)
    _assert_same(model.booster, probe_rows(native.arrays, 3000))


def test_trainer_settings_are_all_supported() -> None:
    """TrainConfig's knobs (depth, eta, bins, child weight) all give native-servable models."""
    from model_server.training import TrainConfig, synthetic_examples, train

    examples = synthetic_examples(300, seed=5, n_bidders=3)
    for cfg in (
        TrainConfig(trees=5, max_depth=1, threads=1),
        TrainConfig(trees=5, max_depth=9, eta=1.0, max_bin=16, min_child_weight=0.0, threads=1),
    ):
        booster = train(examples, cfg).booster
        booster.feature_names = None
        _assert_same(booster)


@pytest.mark.parametrize("batch", [0, 1, 2, 7, 15, 16, 17, 33, 200])
def test_every_batch_size_and_block_boundary(batch: int) -> None:
    booster = _train(MODELS["logistic depth 6"])
    native = NativePredictor.from_booster(booster)
    rows = _test_rows(booster)[:batch]
    expected = booster.inplace_predict(rows, missing=np.nan) if batch else np.empty(0)
    np.testing.assert_allclose(native.predict(rows), expected, rtol=0, atol=TOLERANCE)


def test_output_buffer_is_filled_in_place() -> None:
    booster = _train(MODELS["logistic depth 6"])
    native = NativePredictor.from_booster(booster)
    rows = _test_rows(booster)[:16]
    out = np.full(32, -1.0, dtype=np.float32)
    result = native.predict(rows, out[:16])
    assert np.shares_memory(result, out)
    assert (out[16:] == -1.0).all()
    assert (out[:16] >= 0.0).all()


def test_probe_rows_hit_exact_thresholds_and_missing_values() -> None:
    forest = forest_from_json(bytes(_train(MODELS["logistic depth 6"]).save_raw("json")))
    rows = probe_rows(forest, 2000)
    thresholds = set(forest.cond[~forest.is_leaf()].tolist())
    assert np.isnan(rows).any()
    assert sum(v in thresholds for v in rows[:, 0].tolist()) > 50


def test_multiclass_models_are_refused_and_auto_falls_back_to_xgboost() -> None:
    x, _ = _data()
    y = np.arange(len(x)) % 3
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(x, y), 3)
    with pytest.raises(UnsupportedModelError, match="multi"):
        NativePredictor.from_booster(booster)
    with pytest.raises(UnsupportedModelError):
        make_predictor(booster, "native")
    assert make_predictor(booster, "auto").backend == "xgboost"


def test_dart_and_categorical_models_are_refused() -> None:
    dart = _train({"booster": "dart", "objective": "binary:logistic"}, rounds=3)
    with pytest.raises(UnsupportedModelError, match="gbtree"):
        NativePredictor.from_booster(dart)
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.integers(0, 5, 500), rng.random(500)]).astype(np.float32)
    y = (x[:, 0] == 2).astype(np.float32)
    data = xgb.DMatrix(x, y, feature_types=["c", "q"], enable_categorical=True)
    categorical = xgb.train({"objective": "binary:logistic", "tree_method": "hist"}, data, 3)
    with pytest.raises(UnsupportedModelError, match="categorical"):
        NativePredictor.from_booster(categorical)


def test_xgboost_backend_on_request() -> None:
    booster = _train(MODELS["logistic depth 6"])
    predictor = make_predictor(booster, "xgboost")
    assert predictor.backend == "xgboost"
    rows = _test_rows(booster)[:50]
    np.testing.assert_allclose(
        predictor.predict(rows), booster.inplace_predict(rows), rtol=0, atol=0
    )
    assert isinstance(predictor, XGBoostPredictor)
    with pytest.raises(ValueError, match="unknown backend"):
        make_predictor(booster, "fastest")


def test_bad_rows_get_clear_errors() -> None:
    native = NativePredictor.from_booster(_train(MODELS["logistic depth 6"]))
    with pytest.raises(ValueError, match=r"shape \(n, 12\)"):
        native.predict(np.zeros((3, 11), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        native.predict(np.zeros((3, 12), dtype=np.float64))
    with pytest.raises(ValueError, match="at least 3"):
        native.predict(np.zeros((3, 12), dtype=np.float32), np.zeros(2, dtype=np.float32))


def test_forest_refuses_arrays_that_would_read_out_of_bounds() -> None:
    f = forest_from_json(bytes(_train(MODELS["logistic depth 6"]).save_raw("json")))
    left = f.left.copy()
    left[0] = len(left) + 5
    with pytest.raises(ValueError, match="out of range"):
        _forest.Forest(left, f.feature, f.default_left, f.cond, f.roots, f.depths,
                       f.n_features, f.base_margin, 1)  # fmt: skip
    feature = f.feature.copy()
    feature[0] = f.n_features
    with pytest.raises(ValueError, match="out of range"):
        _forest.Forest(f.left, feature, f.default_left, f.cond, f.roots, f.depths,
                       f.n_features, f.base_margin, 1)  # fmt: skip
    with pytest.raises(ValueError, match="depth"):
        _forest.Forest(f.left, f.feature, f.default_left, f.cond, f.roots, f.depths + 1,
                       f.n_features, f.base_margin, 1)  # fmt: skip
    with pytest.raises(TypeError, match="int32"):
        _forest.Forest(f.left.astype(np.int64), f.feature, f.default_left, f.cond, f.roots,
                       f.depths, f.n_features, f.base_margin, 1)  # fmt: skip
