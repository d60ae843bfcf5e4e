"""anomalake.models: pure ML on numpy, Keras and tf.data: the detector contract, the family registry, artifacts,
calibration and per-entity scaling. Imports no Spark, Airflow, Petastorm, and nothing of anomalake.pipelines."""
