"""The manual page, shell completion and help are generated from the parser, so they name
every command and option the command line really has."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli
from idsync.cli import _parser
from idsync.cli.docs import EXIT_STATUS, _options, _positionals, _subcommands


def _run(*args: str) -> str:
    done = run_cli(args, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_cleanly_and_names_every_command_and_option(tmp_path: Path) -> None:
    """``idsync man`` is roff that groff renders without a warning; the rendered page names
    every command, every option of every command, and every exit status."""
    page = tmp_path / "idsync.1"
    page.write_text(_run("man"), encoding="utf-8")
    done = subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(page)], capture_output=True, text=True, check=True,
                          env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.stderr == ""
    text = re.sub(r"\x1b\[[0-9;]*m", "", re.sub(r".\x08", "", done.stdout))  # overstrikes and SGR
    text = text.replace("\u2010", "-").replace("\u2212", "-")
    parser = _parser()
    for path, child, _ in _subcommands(parser):
        assert f"idsync {path}" in text
        for action in _options(child):
            for option in action.option_strings:
                assert option in text, (path, option)
    for code, _ in EXIT_STATUS:
        assert re.search(rf"^ +{code} ", text, re.MULTILINE), code


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize(("line", "expected"), [
    ("idsync ma", {"managed", "mappings", "man"}),
    ("idsync managed q", {"query"}),
    ("idsync -p /etc/idsync recon --dr", {"--dry-run"}),
    ("idsync status --", {"--json", "--limit", "--mapping", "--audit", "--nodes"}),
    ("idsync completion ", {"bash", "zsh"}),
])
def test_bash_completion(line: str, expected: set[str]) -> None:
    """Completing a command line in bash with ``idsync completion bash`` loaded offers the
    commands, nested commands and options the parser has."""
    script = _run("completion", "bash")
    words = line.split(" ")
    probe = (f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\nCOMP_CWORD={len(words) - 1}\n"
             "_idsync\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert set(done.stdout.split()) == expected


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("option", ["-p {dir}", "--project {dir}", "--project={dir}", "-p ~/{name}"])
def test_bash_completion_names_the_mappings_of_the_project_given(option: str, tmp_path: Path) -> None:
    """``idsync -p DIR recon <TAB>`` offers DIR's mappings and ``run-job <TAB>`` its jobs,
    from any directory (before, the current directory's project was asked)."""
    project = tmp_path / "proj"
    shutil.copytree(Path(__file__).resolve().parent.parent / "conf", project / "conf")
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "hourly-sync.toml").write_text('schedule = "@hourly"\n'
                                                         'mappings = ["systemLdapAccounts_managedUser"]\n')
    script = _run("completion", "bash")
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    given = option.format(dir=project, name="proj").split(" ")
    for command, expected in (("recon", "systemLdapAccounts_managedUser"), ("run-job", "hourly-sync")):
        words = ["idsync", *given, command, ""]
        probe = (f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\nCOMP_CWORD={len(words) - 1}\n"
                 "_idsync\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True, timeout=60,
                              cwd=tmp_path, env=env)
        assert expected in done.stdout.split(), (command, done.stdout)


def test_help_shows_examples_and_exit_status() -> None:
    """``idsync --help`` ends with examples and the exit status table."""
    text = _run("--help")
    assert "examples:" in text and "idsync recon systemLdapAccounts_managedUser --dry-run" in text
    for code, what in EXIT_STATUS:
        assert f"  {code:<4} {what}" in text


def test_documented_exit_codes_are_the_commands() -> None:
    """docs/command-line.md's exit-code table lists exactly the codes the help and the man page list."""
    readme = (Path(__file__).resolve().parent.parent / "docs" / "command-line.md").read_text(encoding="utf-8")
    table = readme[readme.index("Exit codes, for every command:"):]
    table = table[: table.index("\n\n", table.index("| 0 |"))]
    assert [int(c) for c in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)] == [c for c, _ in EXIT_STATUS]


def test_every_command_and_option_has_help() -> None:
    """Each command, each of its options and each positional argument carries a help text."""
    parser = _parser()
    missing = [(path, a.option_strings or a.dest) for path, child, _ in [("", parser, ""), *_subcommands(parser)]
               for a in [*_options(child), *_positionals(child)] if not a.help]
    missing += [(path, "(command)") for path, _, text in _subcommands(parser) if not text]
    assert missing == []
