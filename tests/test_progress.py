"""The training progress bar through the CLI: drawn on a terminal (one nobody sized too) in
place of the per-iteration lines; never in a pipe or a file, with ``CI`` set, with
``TERM=dumb`` or under ``--quiet``."""

import fcntl
import io
import logging
import os
import pty
import struct
import sys
import termios
import threading

import pytest

from sparkml_aiaas.cli import main
from sparkml_aiaas.engine import progress

BAR = "%|"  # tqdm's "  40%|████      | 4/10 [...]"


@pytest.fixture
def terminal_env(monkeypatch):
    """An interactive terminal's environment, whatever the CI running the tests sets."""
    for name in ("CI", "SPARKML_AIAAS_PROGRESS", "COLUMNS", "LINES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    # main() configures the package's logger; leave it as the other tests expect it.
    logger = logging.getLogger("sparkml_aiaas")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


class Pty:
    """A pseudo-terminal: ``file`` writes to its slave side, ``text()`` is what a terminal
    attached to it would have received."""

    def __init__(self, rows=0, cols=0):
        self.master, slave = pty.openpty()
        if rows or cols:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.file = os.fdopen(slave, "w", buffering=1, encoding="utf-8")
        self._chunks = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the slave side is closed
                break
            if not data:
                break
            self._chunks.append(data)

    def text(self) -> str:
        self.file.close()
        self._reader.join(timeout=10)
        os.close(self.master)
        return b"".join(self._chunks).decode("utf-8", "replace")


def _train_args(tmp_path, *extra):
    csv = tmp_path / "small.csv"
    csv.write_text("id,a,b,label\n" + "".join(
        f"{i},{(i * 37 % 101) / 10},{(i * 53 % 89) / 10},{int((i * 37 % 101) > (i * 53 % 89))}\n"
        for i in range(120)))
    config = tmp_path / "train.yaml"
    config.write_text(f"""
input: {{path: {csv}, schema: "id INT, a DOUBLE, b DOUBLE, label INT"}}
model:
  features: [a, b]
  params: {{max_iter: 6, tol: 0.0, reg_param: 0.1, num_partitions: 2}}
output: {{model_path: {tmp_path / 'model'}, report: false}}
""")
    return ["train", "--config", str(config), *extra]


def test_bar_only_for_an_interactive_terminal(terminal_env, monkeypatch):
    terminal = Pty()
    try:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stderr", terminal.file)
            assert progress.bar_wanted()
            patch.setenv("CI", "true")
            assert not progress.bar_wanted()
            patch.setenv("CI", "")
            patch.setenv("TERM", "dumb")
            assert not progress.bar_wanted()
            patch.setenv("TERM", "xterm")
            logging.getLogger("sparkml_aiaas").setLevel(logging.WARNING)  # --quiet
            assert not progress.bar_wanted()
            logging.getLogger("sparkml_aiaas").setLevel(logging.INFO)
            assert progress.bar_wanted()
            patch.setenv("SPARKML_AIAAS_PROGRESS", "0")
            assert not progress.bar_wanted()
            patch.setattr(sys, "stderr", io.StringIO())  # a pipe or a file
            patch.setenv("SPARKML_AIAAS_PROGRESS", "")
            assert not progress.bar_wanted()
    finally:
        terminal.text()


def test_train_on_a_terminal_shows_the_bar_instead_of_iteration_lines(
        spark, tmp_path, terminal_env, monkeypatch):
    # An unsized pseudo-terminal (0 x 0, as `script` gives without a parent terminal, or
    # `docker exec -t`): tqdm alone draws nothing there.
    terminal = Pty()
    try:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stdout", terminal.file)
            patch.setattr(sys, "stderr", terminal.file)
            status = main(_train_args(tmp_path))
    finally:
        text = terminal.text()
    assert status == 0, text
    assert BAR in text and "LogisticRegression:" in text, text
    assert "objective=" in text, text  # the bar shows the current objective
    assert "LogisticRegression iter" not in text, text  # the bar replaces those lines
    assert "trained model_path=" in text, text


def test_train_without_a_terminal_prints_lines_and_no_bar(spark, tmp_path, terminal_env,
                                                           monkeypatch, capsys):
    status = main(_train_args(tmp_path))
    out, err = capsys.readouterr()
    assert status == 0, out + err
    assert "LogisticRegression iter    1  objective" in out
    assert "trained model_path=" in out
    for stream in (out, err):
        assert BAR not in stream and "\r" not in stream and "iter/s" not in stream

    # --quiet on a terminal: the summary only, no bar.
    terminal = Pty(rows=24, cols=100)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stdout", terminal.file)
            patch.setattr(sys, "stderr", terminal.file)
            status = main(_train_args(tmp_path, "--quiet"))
    finally:
        text = terminal.text()
    assert status == 0, text
    assert BAR not in text and "LogisticRegression iter" not in text, text
    assert text.startswith("trained model_path="), text
