"""spark-submit entry point: ingest a source into accepted rows and a quarantine.

    spark-submit jobs/ingest.py --config conf/ingest.yaml [--input PATH] [--set output.mode=append]

Only parses arguments and calls the library (the same code as
``sparkml-aiaas ingest``); the session comes from spark-submit.
"""

import sys

from sparkml_aiaas.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["ingest", *sys.argv[1:]]))
