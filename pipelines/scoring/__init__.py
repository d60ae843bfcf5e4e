"""The score side: the mapInArrow function that scores in the tasks (one model load per Python worker), the
explanations it writes, and the score job.

May import pipelines.features, pipelines.lake and below, and anomalake.models."""
