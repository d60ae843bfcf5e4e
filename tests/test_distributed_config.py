"""How a deployment chooses cluster behaviour: settings for the code zip and training workers, the fallbacks."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from conftest import TINY_DETECTOR

from anomalake.pipelines.config import DetectorSpec
from anomalake.pipelines.errors import JobError
from anomalake.pipelines.settings import load_settings
from anomalake.pipelines.training.detectors import build_detector
from anomalake.pipelines.training.job import training_workers


def test_settings_read_the_code_zip_and_the_training_workers(monkeypatch, tmp_path):
    monkeypatch.setenv("ANOMALAKE_CODE", str(tmp_path / "anomalake.zip"))
    monkeypatch.setenv("ANOMALAKE_TRAIN_WORKERS", "3")
    settings = load_settings()
    assert settings.code == str(tmp_path / "anomalake.zip") and settings.train_workers == 3


def test_without_a_master_setting_spark_submit_chooses_it_and_a_plain_run_is_local(monkeypatch):
    monkeypatch.delenv("ANOMALAKE_MASTER", raising=False)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    assert load_settings().master == "local[*]"
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "40000")  # what spark-submit gives the Python driver
    assert load_settings().master == ""
    monkeypatch.setenv("ANOMALAKE_MASTER", "spark://127.0.0.1:7077")
    assert load_settings().master == "spark://127.0.0.1:7077"


def test_a_missing_code_zip_is_one_clear_error_before_spark_starts(tmp_path):
    from anomalake.pipelines.spark import get_spark

    settings = dataclasses.replace(load_settings(), code=str(tmp_path / "missing.zip"))
    with pytest.raises(JobError, match="missing.zip: no such file.*make package"):
        get_spark(settings)


@pytest.mark.parametrize(
    "master, family, wanted, expected, why",
    [
        ("spark://127.0.0.1:7077", "dense_autoencoder", 2, 2, None),
        ("spark://127.0.0.1:7077", "dense_autoencoder", 1, 1, None),
        ("local[2]", "dense_autoencoder", 2, 1, "on one machine training runs in one process"),
        ("spark://127.0.0.1:7077", "gan", 2, 1, "family gan trains in one process only"),
    ],
)
def test_training_runs_data_parallel_only_on_a_cluster_and_for_families_that_support_it(
    tiny_table, caplog, master, family, wanted, expected, why
):
    spec = DetectorSpec(
        name=family, family=family, params={"epochs": 1, "seed": 3}, calibration=TINY_DETECTOR.calibration
    )
    detector = build_detector(spec, tiny_table.kind, tiny_table.sample_shape, tiny_table.features, verbose=0)
    with caplog.at_level(logging.WARNING, logger="anomalake"):
        assert training_workers(master, detector, family, wanted) == expected
    assert (why in caplog.text) if why else not caplog.text


def test_every_residual_family_is_distributable_and_no_other():
    from anomalake.models.families.residual import ResidualDetector
    from anomalake.models.registry import discover

    for family in discover().values():
        assert family.distributable == issubclass(family, ResidualDetector), family.family
