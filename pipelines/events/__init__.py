"""Anomaly events: flagged windows of one entity grouped into the events a person acts on.

May import pipelines.lake and below; numpy and pandas."""
