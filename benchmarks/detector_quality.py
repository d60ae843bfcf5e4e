"""Detection quality of detector families on public data, beside a PCA-reconstruction baseline in the same run.

    .venv/bin/python -m benchmarks.detector_quality --dataset asd --detector lstm_forecaster,dense_autoencoder
    .venv/bin/python -m benchmarks.detector_quality --dataset mnist --detector conv_autoencoder --epochs 5
    .venv/bin/python -m benchmarks.detector_quality --dataset mnist --detector conv_autoencoder --set latent=64 \
        --out /tmp/latent64.json
    .venv/bin/python -m benchmarks.detector_quality --dataset mnist --ensemble \
        --detector conv_autoencoder,cnn_feature_stats

The protocols are those of anomalake.pipelines.evaluation.one_class. Prints the mean ROC-AUC per detector and writes the
whole report (per entity or class, wall times) as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anomalake.pipelines.config import parse_setting
from anomalake.pipelines.evaluation.one_class import evaluate
from anomalake.pipelines.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=["asd", "mnist", "sms"])
    parser.add_argument("--detector", required=True, help="comma-separated names of conf/detectors/*.yml")
    parser.add_argument("--window", type=int, default=16, help="ASD window length")
    parser.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: the config's)")
    parser.add_argument("--groups", default=None, help="comma-separated entities or classes (default: all)")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/quality_<dataset>.json)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replace a setting of every detector (NAME, training.NAME, calibration.NAME; the value read as YAML)",
    )
    parser.add_argument("--ensemble", action="store_true", help="also the rank average of the detectors' scores")
    args = parser.parse_args()
    root = Path(load_settings().datasets)
    groups = args.groups.split(",") if args.groups else None
    try:
        settings = tuple(parse_setting(text) for text in args.set)
    except ValueError as error:
        raise SystemExit(f"--set {error}") from None
    report = evaluate(
        args.dataset, args.detector.split(","), root, args.window, args.epochs, groups, settings, args.ensemble
    )
    out = Path(args.out or Path(__file__).parent / "results" / f"quality_{args.dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["roc_auc_mean"], indent=2))


if __name__ == "__main__":
    main()
