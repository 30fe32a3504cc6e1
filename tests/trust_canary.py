"""A module no test may ever import through a model: importing or calling it leaves a record.

The model-trust tests write its names (``trust_canary:boom``, ``trust_canary.Something``)
into saved models; loading them must refuse before any import.  Spark executors are other
processes, so the records are files (in a per-user folder of the temporary directory)
rather than module state.
"""

import os
import tempfile

RECORD_DIR = os.path.join(tempfile.gettempdir(), f"sparkml_aiaas_trust_canary-{os.getuid()}")


def _record(event: str) -> None:
    os.makedirs(RECORD_DIR, exist_ok=True)
    with open(os.path.join(RECORD_DIR, f"{event}-{os.getpid()}"), "w") as f:
        f.write(event)


_record("imported")


def boom(**kwargs):
    """A 'network factory' that records the call (and returns a working network, so that a
    call that should never happen cannot hide behind a failure)."""
    _record("called")
    import torch

    return torch.nn.Sequential(torch.nn.Linear(4, 3))


class Something:
    """A 'model class' a tampered metadata.json may name."""

    def __init__(self):
        _record("instantiated")
