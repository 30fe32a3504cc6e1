"""README's commands, run as a new user runs them, so that README cannot go stale.

Every ```bash block preceded by the line ``<!-- readme-test: run -->`` runs, in README's
order, in one bash session (variables and background jobs carry over), in a fresh folder
holding a copy of ``conf/``, with this checkout's ``sparkml-aiaas`` on PATH.  A ``` block
preceded by ``<!-- readme-test: output -->`` is the output README promises for the block
before it: each of its lines must be found in what the commands printed, in order, with
the volatile parts (paths, ids, times, figures: any word holding a digit or a '/', and
'...' or '…') matching anything.

Blocks left unmarked are not run here, each for a reason: the set-up (CI has just run it),
``spark-submit`` (tests/test_jobs_submit.py runs the same jobs), notebooks, clusters and
Connect (their own tests), and benchmarks (run by hand).
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN, OUTPUT = "<!-- readme-test: run -->", "<!-- readme-test: output -->"
#: ``<!-- readme-test: run: COMMAND -->``: run only COMMAND of the next block (which must
#: hold it verbatim), e.g. the quickstart of the set-up block, without its pip install.
RUN_ONE = re.compile(r"<!-- readme-test: run: (.+) -->")
FENCE = re.compile(r"^```(\w*)\s*$")


def marked_blocks(text: str):
    """``[(kind, language, body)]`` of the marked fenced blocks, in order."""
    lines = text.splitlines()
    blocks, index = [], 0
    while index < len(lines):
        marker = lines[index].strip()
        one = RUN_ONE.fullmatch(marker)
        if (marker in (RUN, OUTPUT) or one) and index + 1 < len(lines) and \
                FENCE.match(lines[index + 1]):
            language = FENCE.match(lines[index + 1]).group(1)
            end = index + 2
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            assert end < len(lines), f"README line {index + 2}: the block never closes"
            body = "\n".join(lines[index + 2:end])
            if one:
                assert one.group(1) in body, (f"README line {index + 1}: {one.group(1)!r} is "
                                              "not in the block it marks")
                body = one.group(1)
            kind = "output" if marker == OUTPUT else "run"
            blocks.append((kind, language, body))
            index = end
        index += 1
    return blocks


def _volatile(word: str) -> bool:
    return bool(re.search(r"[0-9/…]", word)) or "..." in word


def line_pattern(line: str) -> "re.Pattern":
    """A promised output line as a regex: its fixed words in order, volatile words (and
    the text between words) free."""
    words = line.split()
    parts = [r".*?" if _volatile(w) else re.escape(w) for w in words]
    return re.compile(r"\s*".join(p if p == r".*?" else p + r"\S*?" for p in parts))


def check_output(promised: str, printed: str) -> None:
    """Each non-empty promised line matches a printed line, in order."""
    lines = printed.splitlines()
    position = 0
    for promise in (p for p in promised.splitlines() if p.strip()):
        pattern = line_pattern(promise.strip())
        for offset, line in enumerate(lines[position:]):
            if pattern.search(line):
                position += offset + 1
                break
        else:
            raise AssertionError(f"README promises the line\n  {promise.strip()}\nbut the "
                                 "commands printed (from there on):\n  "
                                 + "\n  ".join(lines[position:][-40:]))


def test_marked_blocks_and_patterns():
    text = (f"a\n{RUN}\n```bash\necho hi\n```\n{OUTPUT}\n```\nhi 12 /x\n```\n"
            "<!-- readme-test: run: echo two -->\n```bash\npip install x && echo two\n```\n")
    assert marked_blocks(text) == [("run", "bash", "echo hi"), ("output", "", "hi 12 /x"),
                                   ("run", "bash", "echo two")]
    check_output("registered m/2 (m@production) from /a/b; digest c90f; ok",
                 "noise\nregistered m/1 (m@production) from /tmp/x; digest 123abc; ok\n")
    with pytest.raises(AssertionError):
        check_output("reproduced m bit for bit", "m NOT reproduced")


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("curl") is None,
                    reason="README's commands need bash and curl")
def test_readme_commands_run_as_written(tmp_path):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = marked_blocks(f.read())
    assert sum(kind == "run" for kind, _, _ in blocks) >= 4, "README marks too few blocks"
    shutil.copytree(os.path.join(ROOT, "conf"), tmp_path / "conf")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("SPARKML_AIAAS_REGISTRY_KEY", None)
    env.pop("SPARK_REMOTE", None)
    # One bash session for every block: what a reader types in one terminal.  Each block's
    # output is delimited so that it is compared with the output README shows after it.
    script = ["set -euo pipefail"]
    for number, (kind, _, body) in enumerate(blocks):
        if kind == "run":
            script += [f"echo '@@block {number}'", body]
    script.append("wait")
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (f"README's commands failed (exit {done.returncode}):\n"
                                  f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    printed = {}
    for chunk in done.stdout.split("@@block ")[1:]:
        number, _, text = chunk.partition("\n")
        printed[int(number)] = text
    last_run = None
    for number, (kind, _, body) in enumerate(blocks):
        if kind == "run":
            last_run = number
        elif last_run is not None:
            check_output(body, printed.get(last_run, ""))
