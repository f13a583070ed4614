#!/usr/bin/env python3
"""CPU seconds of short ``idsync`` commands, from the interpreter's start to its exit.

    .venv/bin/python bench/command_cpu.py [--code NAME=DAEMON_DIR ...] [--runs 10] [--no-bytecode]

Each command is a new ``python -m idsync`` process and its CPU (user + system, of the
process and what it reaped: ``os.wait4``) is what it costs to start, do its work and
end: ``idsync --help``, ``status``, ``validate`` and a ``recon`` of 20 users, on a copy of
the example project (``conf/``, ``jobs.d/``) in a temporary directory, SQLite store, over
a throwaway slapd. ``--code`` adds another checkout's ``daemon`` directory (this one's is
always timed, as ``this``); the versions run alternately, the order turned each round, so
a busy machine weighs on both alike. Each version's bytecode is cached in a directory of
its own, as an installed package's is; ``--no-bytecode`` compiles idsync's modules at
every start instead (as with ``PYTHONDONTWRITEBYTECODE`` and no cache). Prints the
median and the range of each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPING = "systemLdapActiveAccounts_managedUser"
# The recon first: it makes the store the others read.
COMMANDS = {"recon": ["recon", MAPPING, "--quiet"], "--help": ["--help"], "status": ["status"],
            "validate": ["validate"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", action="append", default=[], metavar="NAME=DAEMON_DIR",
                        help="another version to time beside this checkout's")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-bytecode", action="store_true", help="compile idsync's modules at every start")
    args = parser.parse_args()
    codes = {"this": ROOT / "daemon", **{n: Path(d).resolve() for n, d in (c.split("=", 1) for c in args.code)}}
    sys.path.insert(0, str(ROOT / "devtools"))
    from idsync_dev.slapd import loaded_slapd

    with tempfile.TemporaryDirectory(prefix="idsync-command-cpu-") as tmp:
        work = Path(tmp)
        project = work / "project"
        shutil.copytree(ROOT / "conf", project / "conf")
        shutil.copytree(ROOT / "jobs.d", project / "jobs.d")
        with loaded_slapd(20, work) as ldap:
            env = {**os.environ, "IDSYNC_LDAP_HOST": "127.0.0.1", "IDSYNC_LDAP_PORT": str(ldap.port),
                   "IDSYNC_LDAP_PASSWORD": "bench-secret", "IDSYNC_LOG__LEVEL": "warning"}

            def cpu(name: str, command: list[str]) -> float:
                environment = {**env, "PYTHONPATH": str(codes[name])}
                if not args.no_bytecode:
                    environment.pop("PYTHONDONTWRITEBYTECODE", None)
                    environment["PYTHONPYCACHEPREFIX"] = str(work / f"pycache-{name}")
                proc = subprocess.Popen([sys.executable, "-m", "idsync", "-p", str(project), *command],
                                        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                assert proc.stderr is not None
                err = proc.stderr.read()
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                if proc.returncode:
                    raise SystemExit(f"{name}: idsync {' '.join(command)}: exit {proc.returncode}: {err.decode()}")
                return usage.ru_utime + usage.ru_stime

            for name in codes:  # the store made, the bytecode cached, the files read once
                for command in COMMANDS.values():
                    cpu(name, command)
            seconds: dict[tuple[str, str], list[float]] = {(n, c): [] for n in codes for c in COMMANDS}
            for round_ in range(args.runs):
                for command, words in COMMANDS.items():
                    for name in (list(codes) if round_ % 2 == 0 else list(codes)[::-1]):
                        seconds[name, command].append(cpu(name, words))
    print(f"CPU seconds (user + system) of one command, median [min-max] of {args.runs} runs, "
          f"bytecode {'compiled at each start' if args.no_bytecode else 'cached'}")
    print(f"{'command':10s}" + "".join(f"{name:>22s}" for name in codes))
    for command in COMMANDS:
        cells = (f"{statistics.median(v):.3f} [{min(v):.2f}-{max(v):.2f}]"
                 for v in (seconds[name, command] for name in codes))
        print(f"{command:10s}" + "".join(f"{cell:>22s}" for cell in cells))


if __name__ == "__main__":
    main()
