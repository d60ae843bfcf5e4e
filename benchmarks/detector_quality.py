"""Detection quality of detector families on public data, beside a PCA-reconstruction baseline in the same run.

    .venv/bin/python benchmarks/detector_quality.py --dataset asd --detector lstm_forecaster,dense_autoencoder
    .venv/bin/python benchmarks/detector_quality.py --dataset mnist --detector conv_autoencoder --epochs 5

Protocols (labels are used for the metric only):
- asd: per entity, train on `_train` windows (the last 20 % held out for early stopping), score `_test`
  windows, a window's label is its last step's; ROC-AUC per entity and their mean.
- mnist: one digit normal: half of its 500 images train, the rest of the set tests; mean over the 10 digits.
- sms: half of the ham trains; the other half and all spam test.
Each family runs with the parameters of pipelines/conf/detectors/<name>.yml (`--epochs` may cut training).
Prints one JSON object and writes it to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipelines import datasets  # noqa: E402
from pipelines.config import load_detector  # noqa: E402
from pipelines.settings import load_settings  # noqa: E402


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC (scikit-learn's, imported here so that models/ never needs it)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def pca_scores(train: np.ndarray, test: np.ndarray, components: int = 10) -> np.ndarray:
    """Squared reconstruction error of standardised, flattened samples under a PCA fitted on `train`."""
    from sklearn.decomposition import PCA

    flat_train, flat_test = train.reshape(len(train), -1), test.reshape(len(test), -1)
    mean, std = flat_train.mean(axis=0), flat_train.std(axis=0) + 1e-3
    pca = PCA(n_components=min(components, *flat_train.shape), random_state=0).fit((flat_train - mean) / std)
    z = (flat_test - mean) / std
    return np.square(pca.inverse_transform(pca.transform(z)) - z).sum(axis=1)


def tfidf_svd_scores(train: np.ndarray, test: np.ndarray, components: int = 50) -> np.ndarray:
    """Text baseline: TF-IDF vectors, reconstruction error under a truncated SVD fitted on `train`."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer().fit(train)
    svd = TruncatedSVD(n_components=components, random_state=0).fit(vectorizer.transform(train))
    x = vectorizer.transform(test)
    return np.asarray(np.square(x.toarray() - svd.inverse_transform(svd.transform(x))).sum(axis=1))


def make_detector(name: str, sample_shape: tuple[int, ...], feature_names: tuple[str, ...], epochs: int | None) -> Any:
    """The family of conf/detectors/<name>.yml with its default parameters, sized for these samples."""
    from models.registry import get_family

    spec = load_detector(name)
    family = get_family(spec.family)
    params = {**spec.params, "verbose": 0, "input_shape": sample_shape, "feature_names": feature_names}
    if epochs is not None:
        params["epochs"] = epochs
    return family(family.config_class.from_dict(params))


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


def evaluate(dataset: str, names: list[str], root: Path, window: int, epochs: int | None, groups: list[str] | None) -> dict:
    """ROC-AUC per group and mean for each detector and the baseline."""
    results: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    baseline = "baseline_tfidf_svd" if dataset == "sms" else "baseline_pca"
    for split in splits(dataset, root, window, groups):
        if dataset == "sms":
            results.setdefault(baseline, {})[split.group] = roc_auc(split.test_labels, tfidf_svd_scores(split.train, split.test))
        else:
            results.setdefault(baseline, {})[split.group] = roc_auc(split.test_labels, pca_scores(split.train, split.test))
        shape = () if dataset == "sms" else tuple(split.train.shape[1:])
        features = tuple(f"m{i}" for i in range(shape[-1])) if dataset == "asd" else ()
        for name in names:
            started = time.perf_counter()
            detector = make_detector(name, shape, features, epochs)
            cut = int(len(split.train) * 0.8)
            gap = window if dataset == "asd" else 0  # windows overlapping the cut stay out of both sides
            detector.fit(split.train[:cut], validation=split.train[cut + gap :])
            results.setdefault(name, {})[split.group] = roc_auc(split.test_labels, detector.score_samples(split.test))
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
            print(f"{dataset} {split.group} {name}: {results[name][split.group]:.3f} ({baseline} {results[baseline][split.group]:.3f})", file=sys.stderr, flush=True)
    return {
        "dataset": dataset,
        "window": window if dataset == "asd" else None,
        "epochs": epochs,
        "roc_auc_mean": {name: float(np.mean(list(per.values()))) for name, per in results.items()},
        "roc_auc": results,
        "train_and_score_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=["asd", "mnist", "sms"])
    parser.add_argument("--detector", required=True, help="comma-separated names of conf/detectors/*.yml")
    parser.add_argument("--window", type=int, default=16, help="ASD window length")
    parser.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: the config's)")
    parser.add_argument("--groups", default=None, help="comma-separated entities or classes (default: all)")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/quality_<dataset>.json)")
    args = parser.parse_args()
    root = Path(load_settings().datasets)
    groups = args.groups.split(",") if args.groups else None
    report = evaluate(args.dataset, args.detector.split(","), root, args.window, args.epochs, groups)
    out = Path(args.out or Path(__file__).parent / "results" / f"quality_{args.dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["roc_auc_mean"], indent=2))


if __name__ == "__main__":
    main()
