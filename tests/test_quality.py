"""Detection quality on real public data (slow tier): every family beside a simple baseline in the same run.

Small epochs and a few entities or classes keep the tier short; benchmarks/detector_quality.py measures the
full protocol (all entities and classes, the configured epochs) for the figures in the README.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalake.models.registry import discover
from anomalake.pipelines.config import configured_detectors
from anomalake.pipelines.evaluation.one_class import evaluate
from anomalake.pipelines.settings import load_settings

pytestmark = pytest.mark.slow
ROOT = Path(load_settings().datasets)
FAMILIES = discover()


FAMILY_OF = {spec.name: FAMILIES[spec.family] for spec in configured_detectors()}


def detectors_for(kind: str) -> list[str]:
    """Configured detectors whose family takes `kind` input."""
    return [name for name, family in FAMILY_OF.items() if kind in family.input_kinds]


def require(folder: str) -> None:
    """Fail (never skip) when the public data is missing: set ANOMALAKE_DATASETS to the datasets folder."""
    if not (ROOT / folder).exists():
        pytest.fail(f"{ROOT / folder} is missing: the quality tests read ../shared/datasets (or ANOMALAKE_DATASETS)")


@pytest.mark.parametrize("name", detectors_for("timeseries"))
def test_time_series_detector_beats_pca_on_asd(name):
    require("asd")
    report = evaluate("asd", [name], ROOT, window=16, epochs=4, groups=["omi-2", "omi-12"])
    auc = report["roc_auc_mean"]
    assert auc[name] >= 0.82 and auc[name] > auc["baseline_pca"], auc


# The image families proper. dense_autoencoder and gan also take images, but rank them below PCA on MNIST
# (README, one-class table): they are the windows' families, and the README says to use these for images.
IMAGE_FAMILIES = [name for name, family in FAMILY_OF.items() if family.input_kinds == ("image",)]


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_image_detector_beats_pca_on_mnist(name):
    require("mnist_mlxtend5k")
    report = evaluate("mnist", [name], ROOT, window=0, epochs=None, groups=["3", "7"])
    auc = report["roc_auc_mean"]
    assert auc[name] > auc["baseline_pca"], auc


@pytest.mark.parametrize("name", detectors_for("text"))
def test_text_detector_on_sms_spam(name):
    require("sms_spam")
    report = evaluate("sms", [name], ROOT, window=0, epochs=3, groups=None)
    auc = report["roc_auc_mean"]
    assert auc[name] >= 0.85 and auc[name] > auc["baseline_tfidf_svd"], auc
