"""One conformance suite over every registered detector family and every input kind it declares.

scikit-learn's check_estimator idea: a new family file is picked up here without edits. Each input kind has
a tiny sample generator with a 'normal' class, an injected anomaly at a known place, and the place its
explanation must point at.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from samples import KINDS, Kind

from anomalake.models.base import Detector, NotFittedError
from anomalake.models.registry import discover

FAMILIES = discover()

CASES = sorted((name, kind) for name, family in FAMILIES.items() for kind in family.input_kinds)
IDS = [f"{name}-{kind}" for name, kind in CASES]


def tiny_config(family: type[Detector], kind: Kind, seed: int = 0):
    """The family's config at test size (a family may define `tiny_params` for its own smallest sizes)."""
    params = {"epochs": 3, "batch_size": 64, "verbose": 0, **family.tiny_params}
    return family.config_class.from_dict(
        {**params, "input_shape": kind.shape, "feature_names": kind.feature_names, "seed": seed}
    )


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def case(request):
    name, kind_name = request.param
    family, kind = FAMILIES[name], KINDS[kind_name]
    detector = family(tiny_config(family, kind))
    returned = detector.fit(kind.normal(600, 0), validation=kind.normal(100, 1))
    return detector, returned, kind


def test_registry_has_every_family_of_the_product():
    expected = {
        "dense_autoencoder",
        "lstm_forecaster",
        "lstm_autoencoder",
        "aer",
        "conv1d_autoencoder",
        "gan",
        "conv_autoencoder",
        "cnn_feature_stats",
        "text_transformer",
        "text_lstm",
    }
    assert expected <= set(FAMILIES), f"missing: {sorted(expected - set(FAMILIES))}"
    assert all(set(f.input_kinds) <= set(KINDS) and f.describe() for f in FAMILIES.values())


def test_fit_returns_self(case):
    detector, returned, _ = case
    assert returned is detector and detector.is_fitted


def test_scores_are_finite_one_per_sample(case):
    detector, _, kind = case
    scores = detector.score_samples(kind.normal(50, 2))
    assert scores.shape == (50,) and np.all(np.isfinite(scores))


def test_batch_size_and_order_do_not_change_scores(case):
    detector, _, kind = case
    x = kind.normal(64, 4)
    whole = detector.score_samples(x)
    pieces = np.concatenate([detector.score_samples(x[i : i + 7]) for i in range(0, 64, 7)])
    order = np.random.default_rng(0).permutation(64)
    np.testing.assert_allclose(whole, pieces, rtol=1e-5)
    np.testing.assert_allclose(whole[order], detector.score_samples(x[order]), rtol=1e-5)


def test_explanations_have_the_input_shape_and_are_non_negative(case):
    detector, _, kind = case
    contributions = detector.explain(kind.normal(5, 5))
    assert contributions.shape == (5, *detector.explanation_shape) and np.all(contributions >= 0)
    if kind.shape:
        assert detector.explanation_shape == kind.shape


def test_save_load_gives_identical_scores(case, tmp_path):
    detector, _, kind = case
    x = kind.normal(30, 6)
    folder = detector.save(tmp_path / "artifact")
    loaded = Detector.load(folder)
    assert type(loaded) is type(detector) and loaded.config == detector.config
    np.testing.assert_array_equal(detector.score_samples(x), loaded.score_samples(x))
    assert {p.suffix for p in folder.iterdir()} <= {".keras", ".json"}, "artifacts are .keras + JSON, never pickle"


def test_an_injected_anomaly_scores_above_the_normal_samples(case):
    detector, _, kind = case
    x = kind.normal(200, 7)
    assert detector.score_samples(kind.anomalous(x[:20])).min() > np.quantile(detector.score_samples(x), 0.99)


def test_explanation_points_at_the_anomaly(case):
    detector, _, kind = case
    contributions = detector.explain(kind.anomalous(kind.normal(10, 8)))
    located = np.array([kind.anomaly_at(c) for c in contributions])
    assert np.all(located == np.array(kind.expected_at)), located


def test_short_explanation_names_the_anomaly_first(case):
    detector, _, kind = case
    short = detector.top_contributors(kind.anomalous(kind.normal(5, 8)), k=3)
    assert len(short) == 5 and all(1 <= len(row) <= 3 for row in short)
    assert all(0 <= share <= 1 for row in short for _, share in row)
    assert {row[0][0] for row in short} == {kind.anomaly_part}, short


def test_wrong_shape_or_dtype_says_what_was_expected(case):
    detector, _, kind = case
    if kind.shape:
        wrong_shape = np.zeros((4, *kind.shape[:-1], kind.shape[-1] + 1), dtype=np.float32)
        with pytest.raises(ValueError, match=r"expected samples of shape"):
            detector.score_samples(wrong_shape)
        with pytest.raises(TypeError, match=r"expected numeric samples"):
            detector.score_samples(np.full((2, *kind.shape), "x", dtype=object))
    else:
        with pytest.raises(TypeError, match=r"expected text"):
            detector.score_samples(np.zeros((3, 4), dtype=np.float32))


@pytest.mark.parametrize("name, kind_name", CASES, ids=IDS)
def test_same_seed_same_model(name, kind_name):
    family, kind = FAMILIES[name], KINDS[kind_name]
    train, probe = kind.normal(300, 0), kind.normal(20, 9)
    a = family(tiny_config(family, kind, seed=5)).fit(train).score_samples(probe)
    b = family(tiny_config(family, kind, seed=5)).fit(train).score_samples(probe)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, kind_name", CASES, ids=IDS)
def test_unfitted_detector_refuses_to_score(name, kind_name):
    family, kind = FAMILIES[name], KINDS[kind_name]
    with pytest.raises(NotFittedError, match="not fitted"):
        family(tiny_config(family, kind)).score_samples(kind.normal(2, 0))


@pytest.mark.parametrize("name, kind_name", CASES, ids=IDS)
def test_config_round_trips_through_json_dict(name, kind_name):
    family, kind = FAMILIES[name], KINDS[kind_name]
    config = tiny_config(family, kind)
    assert family.config_class.from_dict(config.to_dict()) == config


def test_image_turns_and_mirrored_turns_are_numpys_and_a_flips_model_tells_eight_apart(tmp_path):
    from anomalake.models.families.cnn_feature_stats import CnnFeatureStats, rotate

    images = np.random.default_rng(0).random((2, 5, 5, 1)).astype("float32")
    for turns in range(8):
        expected = np.rot90(images[:, :, ::-1] if turns >= 4 else images, turns % 4, axes=(1, 2))
        np.testing.assert_array_equal(np.asarray(rotate(images, turns)), expected)
    kind = KINDS["image"]
    detector = CnnFeatureStats(dataclasses.replace(tiny_config(CnnFeatureStats, kind), flips=True))
    assert detector.turns == (0, 1, 2, 3, 4, 5, 6, 7)
    detector.fit(kind.normal(200, 0), validation=kind.normal(50, 1))
    x = kind.normal(20, 2)
    loaded = Detector.load(detector.save(tmp_path / "artifact"))
    np.testing.assert_array_equal(detector.score_samples(x), loaded.score_samples(x))
