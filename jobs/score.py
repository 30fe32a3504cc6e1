"""spark-submit entry point: batch-score input with a saved model.

    spark-submit jobs/score.py --config conf/score.yaml [--input PATH] [--output PATH]
        [--model NAME@ALIAS --registry ROOT] [--run-id ID] [--incremental] [--batch-size N]

Exits 0 after printing one summary line (rows in, rows out, seconds, rows/s),
2 on a user error (one ``error:`` line), non-zero on any other failure.

Only parses arguments and calls the library (the same code as
``sparkml-aiaas score``); the session comes from spark-submit.
"""

import sys

from sparkml_aiaas.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["score", *sys.argv[1:]]))
