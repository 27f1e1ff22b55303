"""Every example of the README runs as written: the Python blocks, and every ``entropykit`` command
(in the bash blocks and inline), in a temporary directory holding the files the commands name. The
README points only at files inside the repository."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from entropykit.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)
SUBCOMMANDS = ("score", "measure", "generate", "compress", "decompress", "detect", "detect-eval")
# Commands of the bash blocks that are not entropykit's: the installation and the test suite itself.
NOT_CLI = ("pip install torch==2.13.0 -e \".[hf,plot,dev]\"", "ruff check .", "mypy", "lint-imports",
           "pytest -q")


def cli_commands() -> list[str]:
    """Every ``entropykit SUBCOMMAND ...`` of the README, in reading order."""
    found: list[tuple[int, str]] = []
    for block in re.finditer(r"```bash\n(.*?)```", TEXT, re.S):
        for part in block.group(1).replace("\\\n", " ").split("&&"):
            part = part.strip()
            if part.startswith("entropykit "):
                found.append((block.start(), part))
            elif part:
                assert part in NOT_CLI, f"README command not run by this test: {part!r}"
    sub = "|".join(map(re.escape, sorted(SUBCOMMANDS, key=len, reverse=True)))
    for m in re.finditer(rf"`(entropykit (?:{sub}) [^`]*)`", TEXT):
        found.append((m.start(), m.group(1)))
    return [c for _, c in sorted(found)]


COMMANDS = cli_commands()


def test_readme_has_python_examples_and_commands() -> None:
    assert len(BLOCKS) >= 3
    assert {shlex.split(c)[1] for c in COMMANDS} == set(SUBCOMMANDS)  # every subcommand is shown


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int) -> None:
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})


def test_readme_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(README, tmp_path / "README.md")
    (tmp_path / "notes.txt").write_text("Entropy is the expected surprisal of a distribution. " * 4)
    for folder, texts in (("pos", ["aaaa aaaa aaaa aaaa", "abab abab abab", "the the the the"]),
                          ("neg", ["Qz7!pK#2 vW@9", "mN$4^rT&8*yU", "0xDEADBEEF?!"])):
        (tmp_path / folder).mkdir()
        for i, t in enumerate(texts):
            (tmp_path / folder / f"{i}.txt").write_text(t)
    monkeypatch.chdir(tmp_path)
    for command in COMMANDS:
        argv = shlex.split(command)
        code = main(argv[1:] + (["--no-progress"] if argv[1] in ("score", "compress", "decompress",
                                                               "detect", "detect-eval") else []))
        err = capsys.readouterr().err
        assert code == 0, f"{command}: {err}"
    for made in ("readme-score.html", "report.html", "report.png", "notes.txt.ekz", "roc.png"):
        assert (tmp_path / made).stat().st_size > 0, made
    assert (tmp_path / "notes.txt").read_text().startswith("Entropy is")  # the round trip restored it


def test_readme_points_only_inside_the_repository() -> None:
    links = re.findall(r"\]\(([^)#]+)\)", TEXT)
    paths = re.findall(r"`((?:\.\./|[\w.-]+/)[\w./-]+\.(?:md|py|json|txt))`", TEXT)
    assert links and paths
    for ref in links + paths:
        assert not ref.startswith(("http", "/", "..")), ref
        assert (ROOT / ref).resolve().is_relative_to(ROOT) and (ROOT / ref).exists(), ref
