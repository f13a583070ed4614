"""The command line described from its own parser: a man page (``idsync man``), shell
completion (``idsync completion bash``) and the help's examples and exit codes, so none of
them can fall behind the options the parser really has."""

from __future__ import annotations

import argparse
import datetime as dt
import re
from collections.abc import Iterator

from idsync import __version__

__all__ = ["EPILOG", "EXIT_STATUS", "bash_completion", "manpage", "register"]

EXIT_STATUS: tuple[tuple[int, str], ...] = (
    (0, "success"),
    (1, "the run FAILED (a run in which every object failed is FAILED too)"),
    (2, "the command line does not parse"),
    (64, "a command line that cannot be acted on (EX_USAGE): no command, or an ambiguous run id prefix"),
    (65, "a bad query filter or bad object data (EX_DATAERR)"),
    (66, "no such object or run (EX_NOINPUT)"),
    (69, "a peer (directory, SCIM or Salesforce service, the store's database) is unreachable (EX_UNAVAILABLE)"),
    (70, "an internal error (EX_SOFTWARE); the traceback is in --log-level debug"),
    (75, "the mapping or job is already running, a stale --rev, or a push to retry (EX_TEMPFAIL)"),
    (77, "credentials refused, by a peer or by the store's database (EX_NOPERM)"),
    (78, "bad configuration (EX_CONFIG): the message names the file, the key and the problem"),
    (130, "canceled (Ctrl-C, SIGTERM, SIGHUP); the run is recorded CANCELED"),
)

_EXAMPLES = (
    ("idsync validate", "check every configuration file"),
    ("idsync recon systemLdapAccounts_managedUser --dry-run", "what a recon would change"),
    ("idsync status", "the last runs; idsync status 0193ab shows one in full"),
    ("idsync jobs", "schedules, next fires, last results"),
    ("idsync run-job sync-active-ldap-users", "run a job now"),
    ("idsync -p /etc/idsync run", "the daemon, in the foreground"),
)

EPILOG = ("examples:\n" + "\n".join(f"  {cmd:<56} {what}" for cmd, what in _EXAMPLES)
          + "\n\nexit status:\n" + "\n".join(f"  {code:<4} {what}" for code, what in EXIT_STATUS))


def register(sub: argparse._SubParsersAction, root: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    m = sub.add_parser("man", help="print the manual page (roff): idsync man > /usr/local/share/man/man1/idsync.1")
    m.set_defaults(handler=lambda _args, _dir: _print(manpage(root)))
    c = sub.add_parser("completion", help="print a shell completion script: eval \"$(idsync completion bash)\"")
    c.add_argument("shell", choices=["bash", "zsh"], help="the shell (zsh through bashcompinit)")
    c.set_defaults(handler=lambda args, _dir: _print(bash_completion(root, zsh=args.shell == "zsh")))


def _print(text: str) -> int:
    print(text, end="")
    return 0


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """(path, parser, help) of every command, depth first: ``managed query`` included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, child in action.choices.items():
                yield name, child, helps.get(name, "")
                for path, grandchild, text in _subcommands(child):
                    yield f"{name} {path}", grandchild, text


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction | argparse._VersionAction)]


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]


# -- man page --------------------------------------------------------------------------


def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.MULTILINE)


def _option_lines(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for action in _positionals(parser):
        lines += [".TP", f".I {_roff(str(action.metavar or action.dest))}", _roff(action.help or "")]
    for action in _options(parser):
        names = ", ".join(action.option_strings)
        value = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
        if action.choices and action.nargs != 0:
            value = " {" + ",".join(str(c) for c in action.choices) + "}"
        lines += [".TP", f".B {_roff(names)}{_roff(value)}", _roff(action.help or "")]
    return lines


def _usage(parser: argparse.ArgumentParser) -> str:
    first, *rest = parser.format_usage().strip().removeprefix("usage: ").splitlines()
    return "\n".join([first, *("    " + line.strip() for line in rest)])


def manpage(parser: argparse.ArgumentParser, today: dt.date | None = None) -> str:
    """idsync(1) in roff, from the parser."""
    date = (today or dt.date.today()).isoformat()
    out = [
        f'.TH IDSYNC 1 "{date}" "idsync {__version__}" "User Commands"',
        ".SH NAME", "idsync \\- " + _roff(parser.description or ""),
        ".SH SYNOPSIS", ".B idsync", "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        _roff("idsync keeps identities in step between external systems (LDAP directories, SCIM "
              "providers, Salesforce) and a SQL identity store, reading PingIDM-shaped configuration "
              "from a project directory (conf/ and jobs.d/). idsync run is the daemon; the other "
              "commands inspect and act on the same project."),
        ".SH OPTIONS", *_option_lines(parser),
        ".SH COMMANDS",
    ]
    for path, child, text in _subcommands(parser):
        out += [f".SS {_roff('idsync ' + path)}", _roff(text), ".PP",
                ".nf", _roff(_usage(child)), ".fi",
                *_option_lines(child)]
    out += [".SH EXIT STATUS"]
    for code, what in EXIT_STATUS:
        out += [".TP", f".B {code}", _roff(what)]
    out += [
        ".SH ENVIRONMENT",
        ".TP", ".B IDSYNC_PROJECT", _roff("the project directory when -p is not given"),
        ".TP", ".B IDSYNC_*", _roff("any setting of conf/idsync.toml, nested with a double underscore: "
                                   "IDSYNC_STORE__URL, IDSYNC_RECON__PAGE_SIZE, IDSYNC_LOG__FORMAT"),
        ".TP", ".B CREDENTIALS_DIRECTORY", _roff("where relative *_file secrets are looked up first "
                                                "(systemd's LoadCredential=)"),
        ".SH FILES",
        ".TP", ".I conf/idsync.toml", _roff("idsync's own settings"),
        ".TP", ".I conf/sync.json, conf/mapping\\-*.json", _roff("the mappings"),
        ".TP", ".I conf/managed.json", _roff("the managed object types"),
        ".TP", ".I conf/provisioner.openicf\\-*.json", _roff("the external systems"),
        ".TP", ".I jobs.d/*.toml", _roff("the schedules"),
        ".SH EXAMPLES",
    ]
    for cmd, what in _EXAMPLES:
        out += [".TP", f".B {_roff(cmd)}", _roff(what)]
    out += [".SH SEE ALSO", "systemd.service(5), journalctl(1)"]
    return "\n".join(out) + "\n"


# -- completion ------------------------------------------------------------------------


def bash_completion(parser: argparse.ArgumentParser, *, zsh: bool = False) -> str:
    """A bash completion function for every command and its options (for zsh through
    ``bashcompinit``); job and mapping names are completed from ``idsync jobs``/``mappings``
    of the project the line names (``-p``/``--project``), else of the current directory's."""
    top = [name for name, _, _ in _subcommands(parser) if " " not in name]
    cases: list[str] = []
    for path, child, _ in _subcommands(parser):
        words = [o for a in _options(child) for o in a.option_strings]
        words += [name for name, _, _ in _subcommands(child) if " " not in name]
        words += [str(c) for a in _positionals(child) for c in a.choices or ()]
        dynamic = ""
        if path in ("recon", "unlock"):
            dynamic = ' $(_idsync_names mappings)'
        elif path == "run-job":
            dynamic = ' $(_idsync_names jobs)'
        cases.append(f'        "{path}") words="{" ".join(words)}{dynamic}" ;;')
    global_options = " ".join(o for a in _options(parser) for o in a.option_strings)
    script = [
        "# idsync completion, generated by `idsync completion`",
        *(["autoload -U +X bashcompinit && bashcompinit"] if zsh else []),
        "_idsync_names() {",
        "    local project=${_idsync_project/#\\~/$HOME}",
        '    idsync ${project:+-p "$project"} "$1" --json 2>/dev/null '
        '| grep -o \'"name": *"[^"]*"\' | cut -d\'"\' -f4',
        "}",
        "_idsync() {",
        "    local cur=${COMP_WORDS[COMP_CWORD]} path='' i word words _idsync_project=''",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        word=${COMP_WORDS[i]}",
        '        case "$word" in',
        '            -p|--project) ((i++)); _idsync_project=${COMP_WORDS[i]}; continue ;;',
        '            --project=*) _idsync_project=${word#--project=}; continue ;;',
        '            --log-format|--log-level) ((i++)); continue ;;',
        '            -*) continue ;;',
        '        esac',
        '        if [ -z "$path" ]; then path=$word; '
        'elif [ -n "${_idsync_nested[$path]}" ]; then path="$path $word"; fi',
        "    done",
        '    case "$path" in',
        f'        "") words="{global_options} {" ".join(top)}" ;;',
        *cases,
        "        *) words='' ;;",
        "    esac",
        '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
        "}",
        "declare -A _idsync_nested=(" + " ".join(
            f'["{name}"]=1' for name, child, _ in _subcommands(parser)
            if " " not in name and any(" " in p for p, _, _ in _subcommands(parser) if p.startswith(name + " "))
        ) + ")",
        "complete -F _idsync idsync",
    ]
    return "\n".join(script) + "\n"
