#!/usr/bin/env python3
"""Where a first recon's wall time goes: its phases, and how busy the machine's cores are in each.

    .venv/bin/python bench/recon_timeline.py [--users 100000] [--repeat 1] [--workers N]

Loads N generated users into a throwaway slapd and runs ``idsync recon`` of the example
mapping into a new SQLite store with JSON logs at debug level, sampling the machine's
busy cores (``/proc/stat``) every 100 ms meanwhile. Prints, from the run's own log
events, when each phase began (the process start, the run's start, the source's
id-only read when the run is split, each partition, the target phase, the end) and the
mean busy cores between one event and the next: where the run keeps one core busy and
where two, which is what a faster first load on a machine of few cores has to change.
On a shared machine, compare within one run.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "devtools"))

from idsync_dev.slapd import loaded_slapd  # noqa: E402

MAPPING = "systemLdapAccounts_managedUser"
_SHOWN = ("recon.start", "ldap.search", "recon.workers_started", "recon.split", "recon.partition_end",
          "recon.phase", "recon.end")


def _busy() -> tuple[int, int]:
    """Jiffies since boot: all, and idle (idle and waiting for I/O)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]


class _Sampler(threading.Thread):
    """The machine's busy cores every ``every`` seconds: (wall time, busy cores)."""

    def __init__(self, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()
        self.cores = os.cpu_count() or 1

    def run(self) -> None:
        total, idle = _busy()
        while not self.stop.wait(self.every):
            now_total, now_idle = _busy()
            spent = max(1, now_total - total)
            self.samples.append((time.time(), self.cores * (1 - (now_idle - idle) / spent)))
            total, idle = now_total, now_idle

    def mean(self, start: float, end: float) -> float | None:
        inside = [busy for at, busy in self.samples if start < at <= end]
        return sum(inside) / len(inside) if inside else None


def _round(ldap: object, work: Path, n: int, workers: str | None) -> None:
    project = work / f"project-{n}"
    shutil.copytree(ROOT / "conf", project / "conf")
    env = {**os.environ, "IDSYNC_STORE__URL": f"sqlite:///{project / 'state' / 'idsync.db'}",
           "IDSYNC_LDAP_PORT": str(ldap.port), "IDSYNC_LDAP_PASSWORD": ldap.admin_password,  # type: ignore[attr-defined]
           "IDSYNC_LOG__FORMAT": "json", "IDSYNC_LOG__LEVEL": "debug"}
    if workers:
        env["IDSYNC_RECON__WORKERS"] = workers
    sampler = _Sampler()
    sampler.start()
    started = time.time()
    done = subprocess.run([str(Path(sys.executable).parent / "idsync"), "-p", str(project), "recon", MAPPING],
                          env=env, capture_output=True, text=True)
    ended = time.time()
    sampler.stop.set()
    sampler.join()
    events = [(started, "process started", "")]
    for line in (done.stdout + done.stderr).splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        name = event.get("event")
        if name not in _SHOWN:
            continue
        at = dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        detail = event.get("stage") or event.get("partition", "")
        if name == "ldap.search":
            detail = "id-only read" if "entryUUID'" in event.get("command", "") or \
                event.get("command", "").rstrip().endswith(" entryUUID") else "a listing"
        events.append((at, name, str(detail)))
    events.append((ended, "process ended", f"rc {done.returncode}"))
    print(f"\nround {n + 1}: {ended - started:.2f} s wall, {sampler.mean(started, ended) or 0:.2f} cores busy "
          f"on average, exit {done.returncode}")
    print(f"  {'at s':>6}  {'event':<24} {'':<26} busy cores until the next")
    for (at, name, detail), following in zip(events, [*events[1:], None], strict=True):
        busy = sampler.mean(at, following[0]) if following else None
        shown = f"{busy:.2f}" if busy is not None else "-"
        print(f"  {at - started:6.2f}  {name:<24} {detail:<26} {shown:>6}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", help="[recon] workers for the run (default: one per core)")
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "daemon" / "idsync", quiet=1)
    work = Path(tempfile.mkdtemp(prefix="idsync-timeline-"))
    try:
        with loaded_slapd(args.users, work) as ldap:
            for n in range(args.repeat):
                _round(ldap, work, n, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":  # the listing's fork server imports this module again
    raise SystemExit(main())
