"""Two layers refuse an unsafe model archive, each on its own, each with its own message.

The pre-scan parses the archive's config.json (not a string match) before Keras sees it; Keras then loads with
safe_mode=True. Every archive here needs unsafe deserialisation somewhere and is refused by the pre-scan. Past
the pre-scan (the test-only `prescan=False`), the Lambda archives are refused by Keras's safe_mode alone (they
load with safe_mode=False), and the foreign-object archives by Keras whatever safe_mode says, under their own
label. Turning off either layer fails a test in this file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from anomalake.models.artifacts import load_artifact, save_artifact
from anomalake.models.base import MODEL_FILE, Detector, registered_keras_objects
from anomalake.models.calibration import fit_calibration
from anomalake.models.keras_archive import (
    PRESCAN,
    SAFE_MODE,
    UNREADABLE,
    ArtifactError,
    load_keras_model,
    unsafe_objects,
)
from anomalake.models.registry import get_family
from anomalake.models.scaling import EntityScaling

SAVED = Path(__file__).parent / "data" / "models_saved_before_the_layout"


def _save(model, path: Path) -> Path:
    model.save(path)
    return path


def _rewrite_config(path: Path, change: Callable[[dict], None], compact: bool = False) -> Path:
    """Rewrite the archive's config.json (as an attacker would); `compact`: without spaces after ':' and ','."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    change(config)
    members["config.json"] = json.dumps(config, separators=(",", ":") if compact else None).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _dense(path: Path) -> Path:
    import keras

    inputs = keras.Input((4,))
    return _save(keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs)), path)


def lambda_in_a_sub_model(path: Path) -> Path:
    import keras

    inner = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2.0)], name="inner")
    inputs = keras.Input((4,))
    return _save(keras.Model(inputs, keras.layers.Dense(2)(inner(inputs))), path)


def lambda_in_compact_json(path: Path) -> Path:
    """A Lambda layer in a config.json written without spaces: a search for '"class_name": "Lambda"' misses it."""
    import keras

    _save(keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t + 1.0)]), path)
    return _rewrite_config(path, lambda config: None, compact=True)


def foreign_function(path: Path) -> Path:
    """A layer whose activation names a function outside Keras and the registered names (os.system)."""

    def change(config: dict) -> None:
        layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
        layer["config"]["activation"] = {
            "module": "os",
            "class_name": "function",
            "config": "system",
            "registered_name": "function",
        }

    return _rewrite_config(_dense(path), change)


def foreign_class(path: Path) -> Path:
    """A layer that names a class outside Keras and the registered names (subprocess.Popen)."""

    def change(config: dict) -> None:
        layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
        layer.update({"module": "subprocess", "class_name": "Popen", "registered_name": "subprocess>Popen"})

    return _rewrite_config(_dense(path), change)


SAFE_MODE_REFUSES = {  # archives that Keras loads with safe_mode=False and refuses only because of safe_mode
    "lambda_in_a_sub_model": (lambda_in_a_sub_model, "a Lambda layer at $.config.layers[1].config.layers"),
    "lambda_in_compact_json": (lambda_in_compact_json, "a Lambda layer at $.config.layers[1])"),
}
KERAS_CANNOT_BUILD = {  # archives that Keras refuses whatever safe_mode says: only the pre-scan names the danger
    "foreign_function": (foreign_function, "the function os.system, which is not a registered Keras object"),
    "foreign_class": (foreign_class, "the class subprocess.Popen, which is not a registered Keras object"),
}
UNSAFE = {**SAFE_MODE_REFUSES, **KERAS_CANNOT_BUILD}


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_the_prescan_refuses_what_needs_unsafe_deserialisation(kind, tmp_path):
    make, problem = UNSAFE[kind]
    path = make(tmp_path / MODEL_FILE)
    with pytest.raises(ArtifactError) as refused:
        load_keras_model(path, registered_keras_objects())
    message = str(refused.value)
    assert f"{PRESCAN}: model.keras needs unsafe deserialisation" in message and problem in message, message
    assert SAFE_MODE not in message and "\n" not in message


@pytest.mark.parametrize("kind", sorted(SAFE_MODE_REFUSES))
def test_past_the_prescan_kerass_safe_mode_refuses_the_lambda_archives(kind, tmp_path):
    import keras

    make, _ = SAFE_MODE_REFUSES[kind]
    path = make(tmp_path / MODEL_FILE)
    assert keras.models.load_model(path, safe_mode=False, compile=False) is not None  # only safe_mode stands in the way
    with pytest.raises(ArtifactError) as refused:
        load_keras_model(path, registered_keras_objects(), prescan=False)
    message = str(refused.value)
    assert (
        message.startswith(f"model artifact {tmp_path}: {SAFE_MODE} refused model.keras: ") and PRESCAN not in message
    ), message


@pytest.mark.parametrize("kind", sorted(KERAS_CANNOT_BUILD))
def test_past_the_prescan_keras_refusals_of_other_causes_are_not_called_safe_mode(kind, tmp_path):
    make, _ = KERAS_CANNOT_BUILD[kind]
    path = make(tmp_path / MODEL_FILE)
    with pytest.raises(ArtifactError) as refused:
        load_keras_model(path, registered_keras_objects(), prescan=False)
    message = str(refused.value)
    assert message.startswith(f"model artifact {tmp_path}: {UNREADABLE} model.keras: ") and SAFE_MODE not in message


def test_both_layers_let_every_familys_models_through():
    registered = registered_keras_objects()
    assert {"anomalake>PositionEmbedding", "anomalake>Rotate90", "anomalake>standardize_text"} <= registered
    for folder in sorted(p for p in SAVED.iterdir() if p.is_dir()):
        with zipfile.ZipFile(folder / MODEL_FILE) as archive:
            assert list(unsafe_objects(json.loads(archive.read("config.json")), registered)) == [], folder.name
        assert load_keras_model(folder / MODEL_FILE, registered) is not None
        assert load_keras_model(folder / MODEL_FILE, registered, prescan=False) is not None


def test_an_artifact_with_an_unsafe_model_is_refused_by_the_prescan_before_keras(tmp_path):
    from anomalake.models.artifacts import write_checksums

    family = get_family("dense_autoencoder")
    config = family.config_class.from_dict({"input_shape": (4, 1), "hidden": (4, 2), "epochs": 1, "verbose": 0})
    x = np.random.default_rng(0).normal(size=(32, 4, 1)).astype(np.float32)
    detector = family(config).fit(x)
    folder = save_artifact(
        tmp_path / "v1", detector, EntityScaling.identity(), fit_calibration(detector.score_samples(x)), {}
    )
    lambda_in_compact_json(folder / MODEL_FILE)
    write_checksums(folder)  # the attacker rewrites the checksums too
    with pytest.raises(ArtifactError, match=rf"^model artifact {folder}: {PRESCAN}: model.keras needs unsafe"):
        load_artifact(folder)
    with pytest.raises(ArtifactError, match=rf"{PRESCAN}: model.keras needs unsafe"):
        Detector.load(folder)
