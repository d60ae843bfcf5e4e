"""What writes raw partitions, the upstream side of the lake: imports of metrics files (CSV, TSV, Parquet; with
the catalog entry they need), image folders and text files, and the generator of synthetic telemetry with
labelled anomalies.

May import pipelines.features (decoding), pipelines.lake and below."""
