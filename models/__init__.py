"""Detectors: pure ML on numpy and tf.data; never imports Spark, Airflow or Petastorm."""
