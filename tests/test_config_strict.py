"""Configuration is strict: an unknown key in a table or detector yml, or in a calibration block, is an error naming
the file and the key, before any job starts (a misspelt setting must not silently do nothing)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from conftest import TINY_DETECTOR, TINY_TABLE

from anomalake.models.base import Detector, DetectorConfig
from anomalake.models.keras_archive import ArtifactError
from anomalake.pipelines.config import CALIBRATION_KEYS, ConfigError, load_detector, load_tables
from anomalake.pipelines.jobs.cli import main
from anomalake.pipelines.training.detectors import build_detector


def _tables(tmp_path, entry: dict):
    path = tmp_path / "tables.yml"
    path.write_text(yaml.safe_dump({"telemetry": entry}))
    return path


@pytest.mark.parametrize(
    "change, where, key",
    [
        ({"windw": {"length": 8}}, "table telemetry", "windw"),
        ({"window": {"length": 8, "strid": 2}}, "table telemetry: window", "strid"),
        ({"kind": "image", "image": {"height": 8, "width": 8, "channel": 1}}, "table telemetry: image", "channel"),
        ({"kind": "text", "text": {"column": "body", "max_char": 10}}, "table telemetry: text", "max_char"),
    ],
)
def test_an_unknown_key_in_the_tables_file_names_the_file_and_the_key(tmp_path, change, where, key):
    path = _tables(tmp_path, {**TINY_TABLE, **change})
    with pytest.raises(ConfigError, match=rf"^{path}: {where}: unknown key '{key}' \(known: "):
        load_tables(path)


def _detector_file(tmp_path, body: dict):
    (tmp_path / "detectors").mkdir(exist_ok=True)
    (tmp_path / "detectors" / "mine.yml").write_text(yaml.safe_dump(body))
    return tmp_path / "detectors" / "mine.yml"


def test_an_unknown_key_in_a_detector_file_or_its_calibration_block_names_both(tmp_path):
    path = _detector_file(tmp_path, {"family": "dense_autoencoder", "paramz": {"epochs": 1}})
    with pytest.raises(ConfigError, match=rf"^{path}: unknown key 'paramz'"):
        load_detector("mine", tmp_path)
    path = _detector_file(
        tmp_path, {"family": "dense_autoencoder", "calibration": {"method": "pot", "threshold_zz": 3}}
    )
    with pytest.raises(
        ConfigError, match=rf"^{path}: calibration: unknown key 'threshold_zz' \(known: holdout_fraction, method"
    ):
        load_detector("mine", tmp_path)


def test_the_training_block_takes_a_validation_share_and_nothing_else(tmp_path):
    path = _detector_file(tmp_path, {"family": "dense_autoencoder", "training": {"validation_fraction": 0.1}})
    assert load_detector("mine", tmp_path).validation_fraction == 0.1
    path = _detector_file(tmp_path, {"family": "dense_autoencoder", "training": {"patience": 5}})
    with pytest.raises(ConfigError, match=rf"^{path}: training: unknown key 'patience' \(known: validation_fraction"):
        load_detector("mine", tmp_path)
    path = _detector_file(tmp_path, {"family": "dense_autoencoder", "training": {"validation_fraction": 1.5}})
    with pytest.raises(ConfigError, match=rf"^{path}: training: validation_fraction: expected a share in \[0, 1\)"):
        load_detector("mine", tmp_path)


def test_a_sweep_replaces_settings_by_name_and_refuses_a_key_no_section_has():
    spec = TINY_DETECTOR.with_setting("epochs", 9).with_setting("training.validation_fraction", 0.1)
    spec = spec.with_setting("calibration.threshold_z", 4.0)
    assert spec.params["epochs"] == 9 and spec.validation_fraction == 0.1 and spec.calibration["threshold_z"] == 4.0
    assert spec.params["hidden"] == TINY_DETECTOR.params["hidden"] and spec.calibration["method"] == "robust_z"
    with pytest.raises(ConfigError, match=r"setting 'training.patience': expected NAME, params.NAME, training.NAME"):
        TINY_DETECTOR.with_setting("training.patience", 5)
    with pytest.raises(ConfigError, match=r"training: validation_fraction: expected a share in \[0, 1\), got 1$"):
        TINY_DETECTOR.with_setting("training.validation_fraction", 1)


def test_a_sweep_setting_is_key_equals_a_yaml_value():
    from anomalake.pipelines.config import parse_setting

    assert parse_setting("hidden=[64, 8]") == ("hidden", [64, 8])
    assert parse_setting(" calibration.threshold_z=4") == ("calibration.threshold_z", 4)
    assert parse_setting("statistic=peak") == ("statistic", "peak")
    for bad in ("epochs", "=3"):
        with pytest.raises(ValueError, match=r"expected KEY=VALUE, for example epochs=60"):
            parse_setting(bad)


def test_a_sweep_replaces_events_settings_of_a_table_and_checks_them(tiny_table):
    assert tiny_table.with_events(merge_gap=30, z_min=3.0).events.merge_gap == 30
    assert tiny_table.with_events(merge_gap=30).events.padding == tiny_table.events.padding
    with pytest.raises(ConfigError, match=r"^table telemetry: events: unknown key 'merge_gapp' \(known: history_days"):
        tiny_table.with_events(merge_gapp=3)
    with pytest.raises(ConfigError, match=r"^table telemetry: events: events z range \[-1, 10.0\] must be positive"):
        tiny_table.with_events(z_min=-1)


def test_every_calibration_key_is_one_fit_calibration_takes_or_the_holdout_fraction():
    from inspect import signature

    from anomalake.models.calibration import fit_calibration

    assert set(CALIBRATION_KEYS) == {"holdout_fraction"} | set(list(signature(fit_calibration).parameters)[1:])


def test_an_unknown_family_parameter_names_the_detector_file_and_the_key(tmp_path, tiny_table):
    path = _detector_file(tmp_path, {"family": "dense_autoencoder", "params": {"hiden": [8, 2]}})
    spec = load_detector("mine", tmp_path)
    with pytest.raises(ConfigError, match=rf"^{path}: params: unknown setting 'hiden' \(known: .*hidden"):
        build_detector(spec, tiny_table.kind, tiny_table.sample_shape, tiny_table.features)


def test_detector_configs_refuse_unknown_settings_and_artifacts_say_so_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"unknown setting 'epochz'"):
        DetectorConfig.from_dict({"input_shape": [4], "epochz": 3})
    (tmp_path / "config.json").write_text(
        '{"family": "dense_autoencoder", "config": {"input_shape": [4, 1], "hiden": [2]}}'
    )
    with pytest.raises(
        ArtifactError, match=r"config.json does not configure a dense_autoencoder: unknown setting 'hiden'"
    ):
        Detector.load(tmp_path)


def test_the_shipped_configs_are_valid_under_the_strict_rules():
    from anomalake.models.registry import get_family
    from anomalake.pipelines.config import CONF_DIR, configured_detectors

    by_kind = {table.kind: table for table in load_tables(CONF_DIR / "tables.yml").values()}
    for spec in configured_detectors():
        for kind in get_family(spec.family).input_kinds:
            table = by_kind[kind]
            assert isinstance(build_detector(spec, kind, table.sample_shape, table.features), Detector)


def test_a_misspelt_setting_stops_the_job_with_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    path = _tables(tmp_path, {**TINY_TABLE, "fill_limt": 3})
    monkeypatch.setenv("ANOMALAKE_TABLES", str(path))
    assert main(["--lake", str(tmp_path / "lake"), "windows", "--table", "telemetry", "--date", "2026-03-01"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: table telemetry: unknown key 'fill_limt'" in err[0]


def test_specs_built_in_code_can_still_replace_params(tiny_table):
    from conftest import TINY_DETECTOR

    spec = TINY_DETECTOR.with_params(epochs=1)
    assert spec.params["epochs"] == 1 and spec.params["hidden"] == TINY_DETECTOR.params["hidden"]
    assert dataclasses.replace(spec, name="x").calibration_options == {"method": "robust_z", "threshold_z": 3.0}


def test_the_raw_format_is_parquet_by_default_delta_when_asked_and_nothing_else(tmp_path):
    from anomalake.pipelines.config import parse_table

    assert parse_table("telemetry", TINY_TABLE).format == "parquet"
    assert parse_table("telemetry", {**TINY_TABLE, "format": "delta"}).format == "delta"
    with pytest.raises(ConfigError, match="table telemetry: format 'iceberg' is not one of parquet, delta"):
        parse_table("telemetry", {**TINY_TABLE, "format": "iceberg"})
