"""Every README example runs as written.

What runs, in README order, in one scratch folder (so a later example can use what an earlier one
wrote, e.g. a model folder), with ``configs/`` of this checkout linked in and ``magtok`` meaning this
checkout's command:

* every ```python block, unless the line just before its fence is ``<!-- readme-test: skip REASON -->``
  (for blocks that need data a reader brings, or a network);
* the lines of a ```bash block whose fence is preceded by ``<!-- readme-test: run -->``; each line is
  one command (``# ...`` comments are stripped; blank and comment-only lines skipped). A block marked
  ``<!-- readme-test: skip REASON -->`` never runs, nor does an unmarked bash block (install steps,
  ``make``, ``accelerate launch``).

A marker is an HTML comment, so it does not show on the rendered page. A failure names the README line
of the example and shows its output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKER = re.compile(r"^<!--\s*readme-test:\s*(run|skip)\b(.*?)-->\s*$")
pytestmark = pytest.mark.slow


@dataclass
class Example:
    lang: str      # "python" or "bash"
    line: int      # README line of the opening fence
    code: str
    mark: str      # "run", "skip" or "" (no marker)


def extract(text: str) -> list[Example]:
    """The fenced ```python / ```bash blocks of ``text`` with the marker just above each."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w+)\s*$", lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.match(prev.strip())
        if lang in ("python", "bash"):
            out.append(Example(lang, start + 1, "\n".join(lines[start + 1:j]), marker.group(1) if marker else ""))
        i = j + 1
    return out


def bash_commands(code: str) -> list[str]:
    cmds = []
    for raw in code.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            cmds.append(line)
    return cmds


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run_bash(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(cmd)
    if argv and argv[0] == "magtok":
        argv = [sys.executable, "-m", "magtok.cli.main", *argv[1:]]
    elif argv and argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    return subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)


def test_extract_finds_markers_and_commands():
    text = ("x\n```python\nprint(1)\n```\n<!-- readme-test: skip needs videos -->\n```python\nboom\n```\n"
            "<!-- readme-test: run -->\n```bash\nmagtok --help   # the commands\n\n# a comment\nls\n```\n"
            "```bash\nmake demo\n```\n")
    ex = extract(text)
    assert [(e.lang, e.mark, e.line) for e in ex] == [("python", "", 2), ("python", "skip", 6), ("bash", "run", 10),
                                                      ("bash", "", 16)]
    assert bash_commands(ex[2].code) == ["magtok --help", "ls"]


def test_readme_examples_run(tmp_path):
    examples = extract(README.read_text())
    assert examples, "README.md has no examples"
    (tmp_path / "configs").symlink_to(REPO / "configs")
    # the reader's own media the CLI examples name: clip.mp4 and a folder videos/
    from magtok.data import sample_videos
    clips = sample_videos()
    (tmp_path / "clip.mp4").symlink_to(clips["carphone_pristine"])
    (tmp_path / "videos").mkdir()
    for name in ("bikes", "carphone_pristine"):
        (tmp_path / "videos" / f"{name}.mp4").symlink_to(clips[name])
    ran = 0
    for ex in examples:
        if ex.mark == "skip" or (ex.lang == "bash" and ex.mark != "run"):
            continue
        if ex.lang == "python":
            res = subprocess.run([sys.executable, "-c", ex.code], cwd=tmp_path, env=_env(), capture_output=True,
                                 text=True, timeout=900)
            assert res.returncode == 0, f"README.md line {ex.line} (python) failed:\n{res.stderr[-3000:]}"
            ran += 1
        else:
            for cmd in bash_commands(ex.code):
                res = _run_bash(cmd, tmp_path)
                assert res.returncode == 0, (f"README.md line {ex.line}: `{cmd}` exited {res.returncode}:\n"
                                             f"{res.stderr[-3000:]}")
                ran += 1
    assert ran > 0
