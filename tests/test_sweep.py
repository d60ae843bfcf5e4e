"""benchmarks/sweep_default.py without running a sweep: variants parse, and the table shows each one or its error."""

from __future__ import annotations

from benchmarks.sweep_default import parse_variant, table


def test_a_variant_is_a_name_and_its_settings():
    assert parse_variant("base") == ("base", [])
    assert parse_variant("long: epochs=100 training.validation_fraction=0.1") == (
        "long",
        ["epochs=100", "training.validation_fraction=0.1"],
    )


def test_the_sweep_table_has_a_row_per_variant_and_detector_and_names_a_failed_one():
    summary = {
        "aggregate": {"dense_autoencoder": 0.5},
        "figures": {"nab": {"dense_autoencoder": {"vus_pr": 0.25, "overlap_segment_f1": None}}},
    }
    lines = table([("base", "(its yml)", summary), ("long", "epochs=100", {"error": "exit 2, see x.log"})]).splitlines()
    assert lines[2].startswith("| base | (its yml) | dense_autoencoder | 0.500 | 0.250 | – |")
    assert lines[3] == "| long | epochs=100 | exit 2, see x.log |" and len(lines) == 4
