"""The train side: the hold-out split, detector construction, the Petastorm feed (the only Petastorm import), the
distributed fit on barrier tasks, the train job and the promote gate.

May import pipelines.features, pipelines.lake and below, and anomalake.models."""
