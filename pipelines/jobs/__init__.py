"""The top: the `anomalake` console script (argument parsing, one thin entry point per command) and `doctor`.

May import everything in anomalake.pipelines; nothing imports it."""
