"""Spark glue: lake tables in, lake tables out."""
