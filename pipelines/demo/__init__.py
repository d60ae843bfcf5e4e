"""`anomalake demo`: synthetic telemetry, MNIST or SMS through windows, train, score and a report of the results.

May import evaluation and every nightly-path package; only jobs imports it."""
