"""Anomaly events: each entity's window scores thresholded against its own trailing days (`detection`), written by
the events job to events/<table> with the day's is_anomaly set from them (`job`); `grouping` is the demo's printout.

May import pipelines.scoring (to score history days whose scores are missing), features, lake and below."""
