"""Artifact folders are tamper-evident (checksums.json) and unsafe models are refused even with rewritten checksums."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from anomalake.models.artifacts import (
    CHECKSUMS_FILE,
    CURRENT_FILE,
    ArtifactError,
    check_signature,
    input_signature,
    load_artifact,
    read_current,
    save_artifact,
    verify_artifact,
    write_current,
)
from anomalake.models.base import CONFIG_FILE, MODEL_FILE
from anomalake.models.calibration import fit_calibration
from anomalake.models.registry import get_family
from anomalake.models.scaling import EntityScaling

FEATURES = ("cpu", "memory", "latency", "requests")
SIGNATURE = input_signature("timeseries", (8, 4), FEATURES, 8, 1, 300)
PICKLE_OF_ONE = b"\x80\x04K\x01."  # what a pickle of the int 1 looks like (protocol 4); harmless, never loaded


def rewrite_checksums(folder: Path) -> None:
    """The attacker's move: recompute checksums.json over whatever the folder now holds."""
    files = {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != CHECKSUMS_FILE and not p.name.startswith((".", "_"))
    }
    (folder / CHECKSUMS_FILE).write_text(json.dumps({"algorithm": "sha256", "files": files}))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One tiny dense autoencoder artifact (hidden [8, 2], one epoch on 64 random windows) and its probe windows."""
    family = get_family("dense_autoencoder")
    config = family.config_class.from_dict(
        {
            "input_shape": (8, 4),
            "feature_names": FEATURES,
            "hidden": (8, 2),
            "epochs": 1,
            "batch_size": 64,
            "verbose": 0,
        }
    )
    x = np.random.default_rng(0).normal(size=(64, 8, 4)).astype(np.float32)
    detector = family(config).fit(x)
    calibration = fit_calibration(detector.score_samples(x), method="robust_z")
    meta = {"detector": "dense_autoencoder", "table": "telemetry", "signature": SIGNATURE}
    folder = save_artifact(
        tmp_path_factory.mktemp("artifacts") / "v1", detector, EntityScaling.identity(), calibration, meta
    )
    return folder, detector, x[:5]


@pytest.fixture
def artifact(saved, tmp_path):
    """A fresh copy of the saved artifact folder that a test may tamper with."""
    return Path(shutil.copytree(saved[0], tmp_path / "models" / "v1"))


def refused(folder: Path, *needles: str) -> str:
    """load_artifact's one-line ArtifactError message, checked to name the folder and every needle."""
    with pytest.raises(ArtifactError) as caught:
        load_artifact(folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message
    for needle in needles:
        assert needle in message
    return message


def test_save_then_load_round_trips(saved, artifact):
    _, detector, probe = saved
    checksums = json.loads((artifact / CHECKSUMS_FILE).read_text())
    assert checksums["algorithm"] == "sha256"
    assert set(checksums["files"]) == {MODEL_FILE, CONFIG_FILE, "baseline.json", "calibration.json", "meta.json"}
    loaded = load_artifact(artifact)
    assert loaded.version == "v1" and loaded.meta["signature"] == SIGNATURE
    np.testing.assert_array_equal(loaded.detector.score_samples(probe), detector.score_samples(probe))


def test_one_flipped_byte_of_the_model_is_a_sha256_mismatch(artifact):
    data = bytearray((artifact / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (artifact / MODEL_FILE).write_bytes(bytes(data))
    refused(artifact, "model.keras was changed after training (sha256 mismatch)")


def test_missing_checksums_is_refused(artifact):
    (artifact / CHECKSUMS_FILE).unlink()
    refused(artifact, "no checksums.json", "retrain")


def test_a_missing_listed_file_is_refused(artifact):
    (artifact / "calibration.json").unlink()
    refused(artifact, "calibration.json", "missing")


def test_a_pickle_is_refused_even_with_rewritten_checksums(artifact):
    (artifact / MODEL_FILE).write_bytes(PICKLE_OF_ONE)
    rewrite_checksums(artifact)
    refused(artifact, "pickle")


def test_an_hdf5_file_is_refused_even_with_rewritten_checksums(artifact):
    (artifact / MODEL_FILE).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    rewrite_checksums(artifact)
    refused(artifact, "not a Keras v3 .keras archive")


def test_a_lambda_layer_is_refused_even_with_rewritten_checksums(artifact):
    import keras

    inputs = keras.Input((8, 4))
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs)).save(artifact / MODEL_FILE)
    rewrite_checksums(artifact)
    refused(artifact, "pre-scan: model.keras needs unsafe deserialisation (a Lambda layer at $.config.layers[1])")


def test_an_unregistered_family_is_refused(artifact):
    payload = json.loads((artifact / CONFIG_FILE).read_text())
    (artifact / CONFIG_FILE).write_text(json.dumps({**payload, "family": "os.system"}))
    rewrite_checksums(artifact)
    refused(artifact, "os.system", "not a registered family")


def test_an_extra_model_file_is_refused(artifact):
    (artifact / "evil.pkl").write_bytes(PICKLE_OF_ONE)
    with pytest.raises(ArtifactError, match="evil.pkl"):
        verify_artifact(artifact)
    refused(artifact, "evil.pkl")


def test_current_round_trips_and_refuses_a_path(artifact):
    root = artifact.parent
    write_current(root, "v1")
    assert read_current(root) == "v1"
    (root / CURRENT_FILE).write_text("../../etc\n")
    with pytest.raises(ArtifactError, match=CURRENT_FILE):
        read_current(root)


def test_current_is_replaced_whole_or_not_at_all(artifact, monkeypatch):
    import anomalake.models.files as files

    root = artifact.parent
    write_current(root, "v1")

    def crash(*_):  # the process dies between writing the new pointer and putting it in place
        raise OSError("killed")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        write_current(root, "v2")
    assert (root / CURRENT_FILE).read_text() == "v1\n"  # the old pointer, complete: never truncated or half new
    monkeypatch.undo()
    write_current(root, "v1")
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == [], "no temp file is left behind"


def test_checksums_are_written_after_every_other_file(saved, tmp_path, monkeypatch):
    import anomalake.models.artifacts as artifacts

    _, detector, probe = saved
    present_when_written = []
    real = artifacts.write_checksums

    def watched(folder):
        present_when_written.append(sorted(p.name for p in folder.iterdir()))
        return real(folder)

    monkeypatch.setattr(artifacts, "write_checksums", watched)
    folder = save_artifact(tmp_path / "v2", detector, EntityScaling.identity(), fit_calibration(np.arange(50.0)), {})
    assert present_when_written == [sorted(p.name for p in folder.iterdir() if p.name != CHECKSUMS_FILE)]
    assert {MODEL_FILE, CONFIG_FILE, "baseline.json", "calibration.json", "meta.json"} <= set(present_when_written[0])


def test_current_pointing_at_a_missing_version_says_so(artifact):
    (artifact.parent / CURRENT_FILE).write_text("v2\n")
    with pytest.raises(FileNotFoundError, match="v2"):
        read_current(artifact.parent)


def test_check_signature_names_the_fields_that_differ():
    meta = json.loads(json.dumps({"signature": SIGNATURE}))  # as read back from meta.json
    check_signature(meta, SIGNATURE)
    with pytest.raises(ArtifactError, match="features") as caught:
        check_signature(meta, input_signature("timeseries", (8, 4), ("cpu", "disk", "latency", "requests"), 8, 1, 300))
    assert "window" not in str(caught.value)
    with pytest.raises(ArtifactError, match="no input signature; retrain"):
        check_signature({"detector": "d"}, SIGNATURE)
