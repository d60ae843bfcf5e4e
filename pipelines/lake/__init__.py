"""The lake: table layout, reading partitions, Delta tables (one commit per job) and task files, every table schema,
row accounting, run records, the job context, the nightly check, SQL over the tables and the persistent catalog.

May import pipelines.settings / config / errors / spark and anomalake.models; nothing above it."""
