"""`anomalake report`: one self-contained HTML page about a scored partition.

May import pipelines.events, pipelines.lake and below; nothing on the nightly path imports it."""
