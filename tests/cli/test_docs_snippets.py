"""Every code block of the README and the docs pages runs as written.

A ```python block is executed; each line of a ```bash block is run, `gdsoftmax` commands in this
process through the command line's ``main`` (that saves a second of imports per command) and
anything else in a shell. They run in a scratch copy of the checkout (``configs`` and ``.venv``
linked, ``docs`` copied, ``../shared`` beside it), so nothing they write lands in the repository.

An HTML comment just before a block changes how it runs:

* ``<!-- snippet: fast: ARGS -->`` appends ARGS to each ``gdsoftmax train`` / ``sweep`` line: the
  small settings under which a long or data-hungry command is tested (fewer epochs, one cell of the
  grid via ``--shard``);
* ``<!-- snippet: slow: ARGS -->`` is ``fast`` for a block that still takes a minute (a real data set
  loaded whole): it runs in ``make test-all`` only;
* ``<!-- snippet: skip: REASON -->`` leaves it out, and says why (the set-up commands themselves, a GPU).

An untagged fence holding a command is an error: tag it ``bash`` so that it runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "docs" / "results" / "README.md",
         ROOT / "docs" / "results" / "summary.md"]
FENCE = re.compile(r"(?:<!-- snippet: (?P<kind>skip|fast|slow): (?P<arg>.*?) -->\s*\n)?"
                   r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
COMMAND = re.compile(r"^(\.venv/bin/|python -m |\$ )?(gdsoftmax|make|pip|mkdocs|torchrun|python)\b")
RUNS = ("python", "bash")


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int
    lang: str
    body: str
    kind: str | None  # "skip", "fast", "slow" or None
    arg: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def snippets(pages=PAGES) -> list[Snippet]:
    found = []
    for page in pages:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start("lang")) + 1
            found.append(Snippet(page, line, match["lang"], match["body"], match["kind"], match["arg"] or ""))
    return found


def shell_lines(body: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", body)
    return [line.split(" #")[0].strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


@pytest.fixture(scope="module")
def checkouts(tmp_path_factory):
    """One scratch copy of the checkout per page, with ../shared beside it: a page's blocks run in
    order in the same folder, as a reader runs them (a report reads the runs of the block before)."""
    made = {}

    def checkout(page: Path) -> Path:
        if page not in made:
            base = tmp_path_factory.mktemp(page.stem)
            repo = base / "repo"
            repo.mkdir()
            for name in ("configs", ".venv", "src", "bench"):
                if (ROOT / name).exists():
                    (repo / name).symlink_to(ROOT / name)
            shutil.copytree(ROOT / "docs", repo / "docs")
            if SHARED.exists():
                (base / "shared").symlink_to(SHARED)
            made[page] = repo
        return made[page]

    return checkout


def run_command(command: str, fast: str) -> None:
    from gdsoftmax.cli import main

    argv = shlex.split(command)
    if argv[0] in (".venv/bin/gdsoftmax", "gdsoftmax"):
        args = argv[1:] + (shlex.split(fast) if fast and argv[1] in ("train", "sweep") else [])
        if "--no-progress" not in args and args and args[0] in ("train", "sweep"):
            args.append("--no-progress")
        with contextlib.suppress(SystemExit):  # --help exits 0 through argparse
            assert main(args) == 0, f"{command!r} failed"
        return
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command!r} failed:\n{done.stderr[-2000:]}"


ALL = snippets()


def test_the_pages_have_snippets_and_every_skip_says_why():
    assert len([s for s in ALL if s.lang in RUNS and s.kind != "skip"]) >= 10
    assert all(s.arg.strip() for s in ALL if s.kind == "skip")


def test_no_command_hides_in_an_untagged_block():
    hidden = [s.id for s in ALL if s.lang not in RUNS and s.lang not in ("text", "toml")
              and any(COMMAND.match(line) for line in s.body.splitlines())]
    assert hidden == [], "tag these blocks ```bash (or ```text for output) so that they run or say why not"


def test_the_markers_are_read(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("a\n\n<!-- snippet: fast: --set train.epochs=1 -->\n```bash\ngdsoftmax sweep c.toml \\\n"
                    "  --out x   # note\n```\n\n```python\nprint(1)\n```\n")
    first, second = snippets([page])
    assert (first.kind, first.arg, first.line) == ("fast", "--set train.epochs=1", 4)
    assert shell_lines(first.body) == ["gdsoftmax sweep c.toml --out x"]
    assert (second.kind, second.lang) == (None, "python")


@pytest.mark.parametrize("snippet", [pytest.param(s, marks=[pytest.mark.slow] if s.kind == "slow" else [], id=s.id)
                                     for s in ALL if s.lang in RUNS])
def test_snippet_runs(snippet, checkouts, monkeypatch):
    checkout = checkouts(snippet.page)
    monkeypatch.chdir(checkout)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if snippet.kind == "skip":
        pytest.skip(snippet.arg)
    if "../shared" in snippet.body + snippet.arg and not SHARED.exists():
        pytest.skip("needs ../shared/datasets")
    if snippet.lang == "python":
        exec(compile(snippet.body, snippet.id, "exec"), {"__name__": "__snippet__"})
        return
    for command in shell_lines(snippet.body):
        run_command(command, snippet.arg if snippet.kind in ("fast", "slow") else "")
    assert os.getcwd() == str(checkout)


def test_the_site_fences_doctests_but_not_code_blocks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "mkdocs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    lines = ["Text.", "", ">>> 1 + 1", "2", "", "```python", ">>> inside a fence", "```", "    >>> x", "    1"]
    assert hooks.DoctestBlocks(None).run(lines) == [
        "Text.", "", "", "```pycon", ">>> 1 + 1", "2", "```", "", "", "```python", ">>> inside a fence", "```",
        "", "    ```pycon", "    >>> x", "    1", "    ```"]
