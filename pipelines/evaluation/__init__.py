"""Detection quality on public benchmarks: the data sets, their cases as lake tables, metrics, result tables, the
reference detectors (PCA, IsolationForest, rolling z), the in-process one-class protocol and `anomalake evaluate`.

May import every nightly-path package (lake, features, training, scoring, events, ingest); never demo, reporting
or jobs. Nothing on the nightly path imports it."""
