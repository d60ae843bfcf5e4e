"""`anomalake report`: one self-contained HTML page about a scored partition; `anomalake alert`: the night's new
events as one JSON message to a webhook.

May import pipelines.events, pipelines.lake and below; nothing on the nightly path imports it."""
