"""Anomaly events: each entity's window scores thresholded against its own trailing days (`detection`), and flagged
windows grouped into the events a person acts on (`grouping`, the demo's printout).

May import pipelines.config, pipelines.lake and below; numpy and pandas."""
