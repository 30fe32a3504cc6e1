"""spark-submit entry point: ingest, train, evaluate and save a model.

    spark-submit jobs/train.py --config conf/train.yaml [--set model.params.reg_param=0.1]

Only parses arguments and calls the library (the same code as
``sparkml-aiaas train``); the session comes from spark-submit.
"""

import sys

from sparkml_aiaas.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
