"""Model inputs: the windows job (raw partitions -> features), windowing of metrics, decoding of images and texts, and
per-entity scaling in Spark.

May import pipelines.lake and below, and anomalake.models."""
