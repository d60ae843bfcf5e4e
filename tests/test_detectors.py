"""One conformance suite over every registered detector family (scikit-learn's check_estimator idea)."""
from __future__ import annotations

import numpy as np
import pytest

from models.base import Detector, NotFittedError
from models.registry import discover

FAMILIES = discover()
SHAPE = (16, 3)


def tiny_config(family: type[Detector], seed: int = 0):
    """The family's config at test size (a family may define `tiny_params` for its own smallest sizes)."""
    params = {"epochs": 3, "batch_size": 64, "verbose": 0, **getattr(family, "tiny_params", {})}
    return family.config_class.from_dict({**params, "input_shape": SHAPE, "feature_names": ("a", "b", "c"), "seed": seed})


def normal_windows(n: int, seed: int = 0) -> np.ndarray:
    """Smooth periodic windows plus noise: the 'normal' class."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    t = np.arange(SHAPE[0])[None, :, None]
    base = np.concatenate([np.sin(t / 3 + phase), np.cos(t / 3 + phase), 0.5 * np.sin(t / 3 + phase)], axis=2)
    return (base + rng.normal(0, 0.05, (n, *SHAPE))).astype(np.float32)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def fitted(request):
    family = FAMILIES[request.param]
    train = normal_windows(600)
    detector = family(tiny_config(family))
    returned = detector.fit(train, validation=normal_windows(100, seed=1))
    return detector, returned


def test_registry_lists_the_foundation_family():
    assert "dense_autoencoder" in FAMILIES


def test_fit_returns_self(fitted):
    detector, returned = fitted
    assert returned is detector and detector.is_fitted


def test_scores_are_finite_one_per_sample(fitted):
    detector, _ = fitted
    scores = detector.score_samples(normal_windows(50, seed=2))
    assert scores.shape == (50,) and np.all(np.isfinite(scores))


def test_flat_and_shaped_inputs_score_the_same(fitted):
    detector, _ = fitted
    x = normal_windows(20, seed=3)
    np.testing.assert_allclose(detector.score_samples(x), detector.score_samples(x.reshape(20, -1)), rtol=1e-6)


def test_batch_size_and_order_do_not_change_scores(fitted):
    detector, _ = fitted
    x = normal_windows(64, seed=4)
    whole = detector.score_samples(x)
    pieces = np.concatenate([detector.score_samples(x[i : i + 7]) for i in range(0, 64, 7)])
    order = np.random.default_rng(0).permutation(64)
    np.testing.assert_allclose(whole, pieces, rtol=1e-5)
    np.testing.assert_allclose(whole[order], detector.score_samples(x[order]), rtol=1e-5)


def test_explanations_have_the_input_shape_and_are_non_negative(fitted):
    detector, _ = fitted
    contributions = detector.explain(normal_windows(5, seed=5))
    assert contributions.shape == (5, *SHAPE) and np.all(contributions >= 0)


def test_save_load_gives_identical_scores(fitted, tmp_path):
    detector, _ = fitted
    x = normal_windows(30, seed=6)
    detector.save(tmp_path / "artifact")
    loaded = Detector.load(tmp_path / "artifact")
    assert type(loaded) is type(detector) and loaded.config == detector.config
    np.testing.assert_array_equal(detector.score_samples(x), loaded.score_samples(x))


def test_saved_folder_has_no_pickle(fitted, tmp_path):
    detector, _ = fitted
    folder = detector.save(tmp_path / "artifact")
    assert {p.suffix for p in folder.iterdir()} <= {".keras", ".json"}


def test_an_injected_anomaly_scores_above_every_normal_sample(fitted):
    detector, _ = fitted
    x = normal_windows(200, seed=7)
    anomalous = x[:20].copy()
    anomalous[:, 8, 1] += 3.0  # a spike in one feature
    assert detector.score_samples(anomalous).min() > np.quantile(detector.score_samples(x), 0.99)


def test_explanation_points_at_the_anomalous_feature(fitted):
    detector, _ = fitted
    x = normal_windows(10, seed=8)
    x[:, 8, 1] += 3.0
    contributions = detector.explain(x)
    assert np.all(contributions.sum(axis=1).argmax(axis=1) == 1)
    assert np.all(contributions.sum(axis=2).argmax(axis=1) == 8)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_same_seed_same_model(name):
    family = FAMILIES[name]
    train, probe = normal_windows(300), normal_windows(20, seed=9)
    a = family(tiny_config(family, seed=5)).fit(train).score_samples(probe)
    b = family(tiny_config(family, seed=5)).fit(train).score_samples(probe)
    np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_unfitted_detector_refuses_to_score(name):
    family = FAMILIES[name]
    with pytest.raises(NotFittedError):
        family(tiny_config(family)).score_samples(normal_windows(2))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_config_round_trips_through_json_dict(name):
    family = FAMILIES[name]
    config = tiny_config(family)
    assert family.config_class.from_dict(config.to_dict()) == config
