"""The README's command-line section is executed, so its examples cannot drift.

Between ``<!-- cli-examples:start -->`` and ``<!-- cli-examples:end -->`` every ``sh`` block
is a shell session: a line starting with ``$ `` is a command, the lines after it (up to the
next command or the end of the block) are its output, where ``...`` stands for any text
(doctest's ``ELLIPSIS``; runs of spaces compare equal to one). All the commands run, in order,
in one ``bash`` against an emulator with the README's seed (0) and installation count (12), so
ids shown in the README are the ids the reader gets. ``text`` blocks are shown, not run.
"""

from __future__ import annotations

import doctest
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import REPO, EmulatorThread

START = "<!-- cli-examples:start -->"
END = "<!-- cli-examples:end -->"
MARK = "@@icr-readme-command-{}@@"
BLOCK_TIMEOUT = 120.0  # a dozen CLI runs of about half a second each, with a wide margin


def cli_section() -> str:
    """The README text between the CLI markers."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = text.index(START), text.index(END)
    assert start < end
    return text[start + len(START) : end]


def blocks(section: str, language: str) -> list[list[str]]:
    """The lines of every fenced block in ``language``."""
    found = re.findall(rf"^```{language}\n(.*?)^```$", section, flags=re.M | re.S)
    return [block.splitlines() for block in found]


def sessions(section: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` for every ``$ `` line of the ``sh`` blocks."""
    commands: list[tuple[str, str]] = []
    for lines in blocks(section, "sh"):
        for line in lines:
            if line.startswith("$ "):
                commands.append((line[2:], ""))
            else:
                assert commands, f"output before any command: {line!r}"
                command, output = commands[-1]
                commands[-1] = (command, output + line + "\n")
    return commands


@pytest.fixture(scope="module")
def emu(private_key_pem: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorThread]:
    """The emulator the README describes: ``icr-async emulator --installations 12`` (seed 0)."""
    with EmulatorThread(
        private_key_pem, tmp_path_factory.mktemp("readme"), seed=0, installations=12
    ) as emulator:
        yield emulator


def test_the_section_has_examples_of_every_command_group() -> None:
    commands = " ".join(command for command, _ in sessions(cli_section()))
    for group in ("installations list", "installations export", "token installation"):
        assert f"icr-async {group}" in commands
    for group in ("token revoke", "request", "key check"):
        assert f"icr-async {group}" in commands


def test_the_emulator_block_matches_the_emulator(emu: EmulatorThread) -> None:
    # The `text` block is not run (the emulator serves until Ctrl-C), but the app id it shows
    # is the one every example below relies on.
    (shown,) = [b for b in blocks(cli_section(), "text") if b[0].startswith("$ icr-async emulator")]
    assert "--installations 12" in shown[0]
    assert f"export ICR_APP_ID={emu.app.app_id}" in shown


def test_readme_cli_examples_run_and_print_what_they_show(
    emu: EmulatorThread, tmp_path: Path
) -> None:
    commands = sessions(cli_section())
    assert len(commands) >= 10
    script = ["set -euo pipefail"]
    for number, (command, _) in enumerate(commands):
        script += [f"printf '%s\\n' '{MARK.format(number)}'", command]
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=emu.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    ran = result.stdout.count("@@icr-readme-command-")
    failed = commands[ran - 1][0] if ran else "(none)"
    assert result.returncode == 0, f"README command failed: {failed}\n{result.stderr}"
    assert result.stderr == "", result.stderr
    outputs = re.split(r"^@@icr-readme-command-\d+@@\n", result.stdout, flags=re.M)[1:]
    assert len(outputs) == len(commands)
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for (command, want), got in zip(commands, outputs, strict=True):
        assert checker.check_output(want, got, flags), (
            f"$ {command}\n--- README shows ---\n{want}--- it printed ---\n{got}"
        )
