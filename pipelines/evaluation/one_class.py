"""One-class detection quality of detector families on the public datasets, beside simple baselines.

Used by benchmarks/detector_quality.py (full sizes) and the slow test tier (small epochs). Protocols
(labels are used for the metric only):
- asd: per entity, train on `_train` windows (the last 20 % held out for early stopping), score `_test`
  windows, a window's label is its last step's; ROC-AUC per entity.
- mnist: one digit normal: half of its 500 images train, the rest of the set tests; one group per digit.
- sms: half of the ham trains; the other half and all spam test.
Each family runs with the parameters of pipelines/conf/detectors/<name>.yml (`epochs` may cut training,
`settings` replace any other, as `evaluate --set` does). `ensemble` adds the mean of the detectors' score ranks
within each group (a rank-average ensemble, measured before any of it is built into the product).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from anomalake.models.base import Detector
from anomalake.pipelines.config import load_detector
from anomalake.pipelines.evaluation import datasets
from anomalake.pipelines.evaluation.reference_detectors import pca_scores, text_pca_scores
from anomalake.pipelines.training.detectors import build_detector


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC (scikit-learn's, imported here so that models/ never needs it)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def make_detector(
    name: str,
    sample_shape: tuple[int, ...],
    feature_names: tuple[str, ...],
    epochs: int | None,
    settings: tuple[tuple[str, Any], ...] = (),
) -> Detector:
    """The family of conf/detectors/<name>.yml with its parameters (some replaced), sized for these samples."""
    spec = load_detector(name)
    if epochs is not None:
        spec = spec.with_params(epochs=epochs)
    for key, value in settings:
        spec = spec.with_setting(key, value)
    kind = "text" if not sample_shape else ("image" if len(sample_shape) == 3 else "timeseries")
    return build_detector(spec, kind, sample_shape, feature_names, verbose=0)


def splits(dataset: str, root: Path, window: int, groups: list[str] | None) -> Iterator[datasets.OneClassSplit]:
    """The benchmark's (train, test, labels) splits, one per entity or normal class."""
    if dataset == "asd":
        for entity in groups or datasets.asd_entities(root / "asd"):
            yield datasets.load_asd(root / "asd", entity, window)
    elif dataset == "mnist":
        images, digits = datasets.load_mnist(root / "mnist_mlxtend5k")
        for digit in groups or [str(d) for d in range(10)]:
            yield datasets.one_class_split(images, digits, int(digit))
    elif dataset == "sms":
        texts, labels = datasets.load_sms(root / "sms_spam")
        yield datasets.one_class_split(texts, labels, "ham")
    else:
        raise SystemExit(f"unknown dataset {dataset} (asd, mnist, sms)")


def evaluate(
    dataset: str,
    names: list[str],
    root: Path,
    window: int,
    epochs: int | None,
    groups: list[str] | None,
    settings: tuple[tuple[str, Any], ...] = (),
    ensemble: bool = False,
) -> dict:
    """ROC-AUC per group and mean for each detector and the baseline (and the detectors' rank average)."""
    results: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    baseline = "baseline_tfidf_svd" if dataset == "sms" else "baseline_pca"
    for split in splits(dataset, root, window, groups):
        if dataset == "sms":
            results.setdefault(baseline, {})[split.group] = roc_auc(
                split.test_labels, text_pca_scores(split.train, split.test)
            )
        else:
            results.setdefault(baseline, {})[split.group] = roc_auc(
                split.test_labels, pca_scores(split.train, split.test)
            )
        shape = () if dataset == "sms" else tuple(split.train.shape[1:])
        features = tuple(f"m{i}" for i in range(shape[-1])) if dataset == "asd" else ()
        ranks = []
        for name in names:
            started = time.perf_counter()
            detector = make_detector(name, shape, features, epochs, settings)
            cut = int(len(split.train) * 0.8)
            gap = window if dataset == "asd" else 0  # windows overlapping the cut stay out of both sides
            detector.fit(split.train[:cut], validation=split.train[cut + gap :])
            scores = detector.score_samples(split.test)
            ranks.append(np.argsort(np.argsort(scores)))
            results.setdefault(name, {})[split.group] = roc_auc(split.test_labels, scores)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
            print(
                f"{dataset} {split.group} {name}: {results[name][split.group]:.3f} ({baseline} "
                f"{results[baseline][split.group]:.3f})",
                file=sys.stderr,
                flush=True,
            )
        if ensemble and len(names) > 1:
            results.setdefault("rank_mean(" + "+".join(names) + ")", {})[split.group] = roc_auc(
                split.test_labels, np.mean(ranks, axis=0)
            )
    return {
        "dataset": dataset,
        "window": window if dataset == "asd" else None,
        "epochs": epochs,
        "roc_auc_mean": {name: float(np.mean(list(per.values()))) for name, per in results.items()},
        "roc_auc": results,
        "train_and_score_seconds": seconds,
    }
