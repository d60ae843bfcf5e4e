"""anomalake.pipelines: Spark glue, lake tables in and lake tables out.

Top level: settings (the only reader of the environment), config (YAML -> frozen objects), errors, spark (the
session). Sub-packages, lowest first: lake, features | events, ingest, training | scoring, evaluation | reporting,
demo, jobs. A package imports only packages below it and anomalake.models; never airflow (import-linter checks)."""
