"""Every example on the documentation site (``docs/**/*.md``) is executed, so none can drift.

The rules a page follows (``docs/index.md`` and the guides show them in use):

* A ``python`` block runs. The blocks of one page run in order in one module namespace, as
  in a notebook, with the working directory a fresh temporary one and the environment of a
  reader who pasted the ``export`` lines of ``icr-async emulator``: ``ICR_APP_ID``,
  ``ICR_PRIVATE_KEY_PATH`` and ``ICR_BASE_URL`` point at an emulator (seed 0, 12
  installations) served on 127.0.0.1 for that page. The module is not ``__main__``: a line
  under ``if __name__ == "__main__":`` (the one that would serve an app forever) is compiled,
  not run.
* A ``text`` block right after a python block, marked ``<!-- docs-test: output -->``, is what
  that block prints (``...`` matches any text, runs of spaces compare equal).
* An ``sh`` block whose lines start with ``$ `` is a shell session: every command runs, in
  order, in one ``bash`` against the page's emulator, and prints what the lines after it show.
* A marker comment on the line before a block changes how it is run:
  ``<!-- docs-test: pytest -->`` a test module, run with every other one in a scratch project
  under pytest (pytest-asyncio strict mode, warnings as errors);
  ``<!-- docs-test: subprocess -->`` a script run by a fresh interpreter (for ``fork``);
  ``<!-- docs-test: redis -->`` runs with ``REDIS_URL`` naming a throwaway ``redis-server``;
  ``<!-- docs-test: compile REASON -->`` compiled only (a block that needs a real HSM or
  KMS, or one that another test reads from the page and runs: ``test_pytest_plugin.py``,
  ``test_signers.py`` and ``test_app_e2e.py`` do, and the reason names that test);
  ``<!-- docs-test: show REASON -->`` a shell block that is not run (installing packages, a
  server that runs until Ctrl-C).
  Every python and sh block is run or says why not: a test checks it.
* A block that imports a framework which is not installed (FastAPI, Flask) is compiled and
  skipped, with every later block of the page importing it; with ``ICR_REQUIRE_DOCS_DEPS``
  set (CI sets it, with the ``docs`` dependency group installed) that is a failure instead.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import importlib.util
import io
import itertools
import os
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_support import REPO, TIMEOUT, EmulatorThread, child_env

import icr_async

DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
SHELL_MARK = "@@icr-docs-command-{}@@"
SHELL_TIMEOUT = 120.0  # a few CLI runs of about half a second each, with a wide margin
PYTEST_TIMEOUT = 180.0  # one scratch pytest session over every pytest block

_FENCE = re.compile(
    r"^(?:(?P<indent>[ ]*)<!-- docs-test: (?P<mode>[a-z-]+)(?: (?P<reason>[^\n]*?))? -->\n)?"
    r"(?P<fence_indent>[ ]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=fence_indent)```[ ]*$",
    re.M | re.S,
)
PYTHON_MODES = {"run", "pytest", "subprocess", "redis", "compile"}
SHELL_MODES = {"session", "show"}
OTHER_LANGUAGES = {"text", "toml", "ini", "json"}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    lang: str
    code: str
    mode: str
    reason: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, dedented, with their mode (``run`` by default)."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        lang = match["lang"]
        mode = match["mode"] or ("session" if lang == "sh" else "run" if lang == "python" else "")
        code = textwrap.dedent(match["body"])
        line = text.count("\n", 0, match.start("fence_indent")) + 1
        found.append(Block(page, line, lang, code, mode, (match["reason"] or "").strip()))
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks_of(page)]


def page_id(page: Path) -> str:
    return str(page.relative_to(DOCS))


def pages_with(*modes: str) -> list[Path]:
    """The pages holding at least one block of these modes."""
    return [page for page in PAGES if any(b.mode in modes for b in blocks_of(page))]


def output_after(block: Block) -> str | None:
    """The expected output of ``block``: the ``output``-marked text block right after it."""
    blocks = blocks_of(block.page)
    index = blocks.index(block)
    if index + 1 < len(blocks) and blocks[index + 1].mode == "output":
        return blocks[index + 1].code
    return None


def assert_prints(want: str, got: str, where: str) -> None:
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    assert checker.check_output(want, got, flags), (
        f"{where}\n--- the page shows ---\n{want}--- it printed ---\n{got}"
    )


def missing_imports(code: str) -> set[str]:
    """Top-level modules ``code`` imports that are not installed."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return {name for name in names if importlib.util.find_spec(name) is None}


def require(modules: set[str], where: str) -> None:
    """Skip for a missing framework, or fail when CI says the docs group is installed."""
    if not modules:
        return
    message = f"{where} needs {', '.join(sorted(modules))}, which is not installed"
    if os.environ.get("ICR_REQUIRE_DOCS_DEPS"):
        pytest.fail(f"{message} (ICR_REQUIRE_DOCS_DEPS is set: install the docs group)")
    pytest.skip(message)


# -------------------------------------------------------------------------------- the rules


def test_the_site_has_its_pages() -> None:
    names = {page_id(page) for page in PAGES}
    for name in (
        "index.md",
        "getting-started.md",
        "async.md",
        "blocking.md",
        "testing.md",
        "webhooks.md",
        "fleets.md",
        "cli.md",
        "errors.md",
        "performance.md",
        "reference/index.md",
    ):
        assert name in names
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    for name in names:
        assert f" {name}" in nav, f"docs/{name} is not in mkdocs.yml's nav"


def test_every_example_is_run_or_says_why() -> None:
    assert len([b for b in ALL_BLOCKS if b.lang == "python" and b.mode != "compile"]) >= 25
    for block in ALL_BLOCKS:
        if block.lang == "python":
            assert block.mode in PYTHON_MODES, f"{block.where}: unknown mode {block.mode!r}"
            if block.mode == "compile":
                assert block.reason, f"{block.where}: say why it is only compiled"
        elif block.lang == "sh":
            assert block.mode in SHELL_MODES, f"{block.where}: unknown mode {block.mode!r}"
            if block.mode == "show":
                assert block.reason, f"{block.where}: say why it is not run"
            else:
                lines = block.code.splitlines()
                assert lines, f"{block.where}: an empty block"
                assert lines[0].startswith("$ "), f"{block.where}: not a session"
        else:
            assert block.lang in OTHER_LANGUAGES, f"{block.where}: language {block.lang!r}"
            assert block.mode in ("", "output"), f"{block.where}: {block.mode!r} on {block.lang}"


def test_output_blocks_follow_a_python_block() -> None:
    for page in PAGES:
        blocks = blocks_of(page)
        for before, block in itertools.pairwise(blocks):
            if block.mode == "output":
                assert before.lang == "python", block.where
                assert before.mode in ("run", "redis", "subprocess"), block.where


def test_every_python_example_compiles() -> None:
    for block in ALL_BLOCKS:
        if block.lang == "python":
            compile(block.code, block.where, "exec")


def test_the_reference_documents_the_public_api() -> None:
    directives = set()
    for page in (DOCS / "reference").glob("*.md"):
        directives.update(re.findall(r"^::: ([\w.]+)$", page.read_text(encoding="utf-8"), re.M))
    missing = {name for name in icr_async.__all__ if f"icr_async.{name}" not in directives}
    assert not missing, f"not in the API reference: {sorted(missing)}"
    for module in (
        "icr_async.webhooks",
        "icr_async.testing",
        "icr_async.testing.pytest_plugin",
        "icr_async.contrib.redis",
    ):
        assert module in directives


# ---------------------------------------------------------------------------- running them


@pytest.fixture
def emulator_env(
    private_key_pem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmulatorThread]:
    """A reader's environment: the ``export`` lines of ``icr-async emulator`` pasted."""
    keys = tmp_path / "keys"
    keys.mkdir()
    with EmulatorThread(private_key_pem, keys, seed=0, installations=12) as emulator:
        for name in list(os.environ):
            if name.startswith("ICR_") and name != "ICR_REQUIRE_DOCS_DEPS":
                monkeypatch.delenv(name)
        monkeypatch.setenv("ICR_APP_ID", emulator.app.app_id)
        monkeypatch.setenv("ICR_PRIVATE_KEY_PATH", str(emulator.key_path))
        monkeypatch.setenv("ICR_BASE_URL", emulator.url)
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)
        yield emulator


@contextlib.contextmanager
def redis_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``REDIS_URL`` naming a throwaway redis-server on 127.0.0.1, stopped by PID."""
    from _redis_server import RedisServer, require_redis_server

    server = RedisServer(require_redis_server())
    server.start()
    try:
        monkeypatch.setenv("REDIS_URL", server.url)
        yield
    finally:
        server.stop()


@pytest.mark.parametrize("page", pages_with("run", "redis"), ids=page_id)
def test_the_python_examples_of_a_page_run(
    page: Path, emulator_env: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "docs_" + re.sub(r"\W", "_", page_id(page).removesuffix(".md"))
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses and pickle look modules up
    unavailable: set[str] = set()
    skipped: list[str] = []
    ran = 0
    for block in blocks_of(page):
        if block.lang != "python" or block.mode not in ("run", "redis"):
            continue
        code = compile(block.code, block.where, "exec")
        missing = missing_imports(block.code) | (
            unavailable & {n.split(".")[0] for n in _imported(block.code)}
        )
        if missing:
            unavailable |= missing
            skipped.append(f"{block.where} ({', '.join(sorted(missing))})")
            continue
        out = io.StringIO()
        with contextlib.ExitStack() as stack:
            if block.mode == "redis":
                stack.enter_context(redis_url(monkeypatch))
            stack.enter_context(contextlib.redirect_stdout(out))
            exec(code, module.__dict__)  # our own documentation: trusted code
        ran += 1
        want = output_after(block)
        if want is not None:
            assert_prints(want, out.getvalue(), block.where)
    if skipped:
        require(unavailable, "; ".join(skipped))
    assert ran


def _imported(code: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "block", [b for b in ALL_BLOCKS if b.mode == "subprocess"], ids=lambda b: b.where
)
def test_the_script_examples_run(block: Block, emulator_env: EmulatorThread) -> None:
    script = Path("example.py")
    script.write_text(block.code, encoding="utf-8")
    env = child_env(**{k: v for k, v in os.environ.items() if k.startswith("ICR_")})
    result = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{block.where}\n{result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    want = output_after(block)
    if want is not None:
        assert_prints(want, result.stdout, block.where)


def test_the_pytest_examples_pass(tmp_path: Path) -> None:
    examples = [b for b in ALL_BLOCKS if b.mode == "pytest"]
    assert examples
    require(set().union(*(missing_imports(b.code) for b in examples)), "the pytest examples")
    for number, block in enumerate(examples):
        (tmp_path / f"test_docs_example_{number}.py").write_text(block.code, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings = error\nasyncio_mode = strict\n"
        "asyncio_default_fixture_loop_scope = function\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ICR_"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--timeout=60", "-q", "-rA"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PYTEST_TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = output.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in .*", summary), output
    tests = sum(len(re.findall(r"^(?:async )?def test_", b.code, re.M)) for b in examples)
    assert int(summary.split()[0]) >= tests, output


def sessions(page: Path) -> list[tuple[str, str]]:
    """``(command, expected output)`` for every ``$ `` line of the page's sh sessions."""
    commands: list[tuple[str, str]] = []
    for block in blocks_of(page):
        if block.mode != "session":
            continue
        for line in block.code.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], ""))
            else:
                command, output = commands[-1]
                commands[-1] = (command, output + line + "\n")
    return commands


@pytest.mark.parametrize("page", pages_with("session"), ids=page_id)
def test_the_shell_sessions_of_a_page_run(page: Path, emulator_env: EmulatorThread) -> None:
    commands = sessions(page)
    script = ["set -euo pipefail"]
    for number, (command, _) in enumerate(commands):
        script += [f"printf '%s\\n' '{SHELL_MARK.format(number)}'", command]
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env=emulator_env.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT,
        check=False,
    )
    ran = result.stdout.count("@@icr-docs-command-")
    failed = commands[ran - 1][0] if ran else "(none)"
    assert result.returncode == 0, f"{page_id(page)}: {failed}\n{result.stderr}"
    assert result.stderr == "", result.stderr
    outputs = re.split(r"^@@icr-docs-command-\d+@@\n", result.stdout, flags=re.M)[1:]
    assert len(outputs) == len(commands)
    for (command, want), got in zip(commands, outputs, strict=True):
        assert_prints(want, got, f"{page_id(page)}: $ {command}")


def test_the_emulator_blocks_show_the_emulator_readers_get(emulator_env: EmulatorThread) -> None:
    # `icr-async emulator` serves until Ctrl-C, so its `text` blocks are shown, not run; the
    # app id they print is the one a seed-0 emulator makes, which the sessions rely on.
    shown = [
        b for b in ALL_BLOCKS if b.lang == "text" and b.code.startswith("$ icr-async emulator")
    ]
    assert shown
    for block in shown:
        assert "--installations 12" in block.code.splitlines()[0], block.where
        assert f"export ICR_APP_ID={emulator_env.app.app_id}\n" in block.code, block.where
