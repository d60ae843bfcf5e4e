"""One module per job, plus the console script."""
