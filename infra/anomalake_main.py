"""spark-submit's entry point for the anomalake jobs, with the code shipped as a zip:

    spark-submit --master spark://127.0.0.1:7077 --py-files dist/anomalake-0.1.0.zip infra/anomalake_main.py score ...

takes the same arguments as the `anomalake` command; the master is spark-submit's unless ANOMALAKE_MASTER is set.
"""

import sys

from anomalake.pipelines.jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
