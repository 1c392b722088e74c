"""The README is the front page: its set-up commands, its quick start and its links are checked.

* The two set-up commands between ``<!-- setup-commands:start -->`` and
  ``<!-- setup-commands:end -->`` are what ``.ci/run`` executes word for word: one ``sh``
  block of exactly two lines.
* The quick start's ``python`` block runs against an emulator (seed 0, 12 installations), with
  the ``app_id`` and ``private_key_pem`` it leaves to the reader.
* Every relative link points at a file of the repository or a heading of the README, and the
  "Documentation" list links every guide of the documentation site.

The command-line examples moved to the documentation site (``docs/cli.md``, between
``<!-- cli-examples:start -->`` and ``<!-- cli-examples:end -->``): ``tests/test_docs.py``
runs every command there against a seed-0 emulator with 12 installations and compares what
it prints; the last test here checks that those examples still cover every command group.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import REPO, EmulatorThread

README = REPO / "README.md"
DOCS = REPO / "docs"
SETUP_START = "<!-- setup-commands:start -->"
SETUP_END = "<!-- setup-commands:end -->"
CLI_PAGE = DOCS / "cli.md"
CLI_START = "<!-- cli-examples:start -->"
CLI_END = "<!-- cli-examples:end -->"


def readme() -> str:
    return README.read_text(encoding="utf-8")


def between(text: str, start: str, end: str) -> str:
    """The text between two markers, which must both be there, in that order."""
    first, last = text.index(start), text.index(end)
    assert first < last
    return text[first + len(start) : last]


def section(text: str, heading: str) -> str:
    """A ``## `` section of the README, up to the next one."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def blocks(text: str, language: str) -> list[str]:
    """The bodies of every fenced block in ``language``."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.M | re.S)


# --------------------------------------------------------------------------- the README


def test_the_setup_commands_are_one_block_of_two_lines() -> None:
    (block,) = blocks(between(readme(), SETUP_START, SETUP_END), "sh")
    commands = block.splitlines()
    assert len(commands) == 2, ".ci/run executes exactly two set-up commands"
    assert commands[0].endswith("-m icr_async demo")
    assert "-m pytest" in commands[1]


@pytest.fixture
def emulator_env(
    private_key_pem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmulatorThread]:
    """A seed-0 emulator with 12 installations; ``ICR_BASE_URL`` is the only setting set."""
    with EmulatorThread(private_key_pem, tmp_path, seed=0, installations=12) as emulator:
        for name in [n for n in os.environ if n.startswith("ICR_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("ICR_BASE_URL", emulator.url)
        yield emulator


def test_the_quick_start_runs(emulator_env: EmulatorThread, private_key_pem: str) -> None:
    (code,) = blocks(section(readme(), "Quick start"), "python")
    namespace = {
        "__name__": "readme_quick_start",
        "app_id": emulator_env.app.app_id,
        "private_key_pem": private_key_pem,
    }
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (Quick start)", "exec"), namespace)  # our own docs
    names = out.getvalue().splitlines()
    assert len(names) == 12, out.getvalue()
    assert names[0] == "Andean Kelp Partners"
    assert sum(emulator_env.emulator.stats.mints.values()) == 12  # one token per installation


def test_the_links_resolve() -> None:
    text = readme()
    headings = {
        re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.M)
    }
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        if link.startswith("#"):
            assert link[1:] in headings, f"README: no heading for {link}"
        else:
            assert (REPO / link.split("#")[0]).exists(), f"README: {link} does not exist"


def test_the_documentation_list_links_every_guide() -> None:
    listed = set(re.findall(r"\]\((docs/[^)#\s]+)\)", section(readme(), "Documentation")))
    guides = {f"docs/{page.name}" for page in DOCS.glob("*.md") if page.name != "index.md"}
    assert guides <= listed, f"not in the README's Documentation list: {sorted(guides - listed)}"
    assert "docs/reference/index.md" in listed


# ------------------------------------------------------------ the command-line examples


def test_the_cli_page_has_examples_of_every_command_group() -> None:
    examples = between(CLI_PAGE.read_text(encoding="utf-8"), CLI_START, CLI_END)
    # Every sh block is a session tests/test_docs.py runs: none is marked to be skipped.
    assert "<!-- docs-test:" not in examples
    commands = [
        line[2:]
        for block in blocks(examples, "sh")
        for line in block.splitlines()
        if line.startswith("$ ")
    ]
    assert len(commands) >= 10
    joined = " ".join(commands)
    for group in (
        "installations list",
        "installations export",
        "installations get",
        "token installation",
        "token revoke",
        "request",
        "key check",
    ):
        assert f"icr-async {group}" in joined
    for flag in ("--output", "--include", "--paginate", "--lines", "--data @"):
        assert flag in joined
