"""``python -m idsync_dev.daemon_demo``: the daemon in the foreground with the example
jobs, on a short schedule, against a throwaway OpenLDAP and the SQLite store.

It starts slapd on 127.0.0.1 with sample users (a few of them locked, so the
inactive job has work), builds a demo project in ``state/demo/`` of the current
project from ``conf/`` and ``jobs.d/`` with the schedules shortened to every few
seconds, and runs ``idsync run`` on it. The demo project, its store and its status
file are wiped at each start: every slapd is new, with new entryUUIDs, so links
kept from a previous demo would point at entries that no longer exist and fail
every user. ``idsync -p state/demo status`` and ``state/demo/state/status.json``
fill up while it runs; the project's own ``state/`` is never touched.
The HTTP API listens on 127.0.0.1 (port 8080, or a free one when 8080 is
taken) with the seeds' account ``openidm-admin`` / ``openidm-admin``, so their
``curl`` commands work as written; a sample password is refused anywhere but
on loopback. Ctrl-C stops it cleanly; slapd and the temporary directory go
with it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from idsync.cli import main as idsync

if TYPE_CHECKING:
    from idsync_dev.slapd import Slapd

__all__ = ["main"]

_LOCKED = ("user.3", "user.7")
_API_USER = "openidm-admin"  # the seeds' account; its password is the same, as in PingIDM's samples


def main() -> int:
    from idsync.api.auth import hash_password

    from idsync_dev.slapd import Slapd, sample_users_ldif

    project = Path(os.environ.get("IDSYNC_PROJECT") or Path.cwd()).resolve()
    if not Slapd.available():
        print("demo: slapd is not installed (apt-get install slapd ldap-utils)", file=sys.stderr)
        return os.EX_UNAVAILABLE
    users = int(os.environ.get("IDSYNC_DEMO_USERS", "20"))
    every = int(os.environ.get("IDSYNC_DEMO_EVERY", "10"))
    password = secrets.token_urlsafe(16)
    with Slapd(admin_password=password, tls=False) as ldap:
        people = f"ou=People,{ldap.base_dn}"
        ldap.add_ldif(sample_users_ldif(users, people))
        locked = _lock(ldap, people)
        demo = fresh_demo_project(project, "demo")
        _demo_jobs(project, demo, every)
        api_port = _api_port()
        os.environ.update(
            IDSYNC_API__ENABLED="true",
            IDSYNC_API__HOST="127.0.0.1",
            IDSYNC_API__PORT=str(api_port),
            IDSYNC_API__ACCOUNTS=json.dumps({_API_USER: hash_password(_API_USER)}),
            IDSYNC_LDAP_HOST="127.0.0.1",
            IDSYNC_LDAP_PORT=str(ldap.port),
            IDSYNC_LDAP_PASSWORD=password,
            **demo_state_env(demo),
        )
        print(f"demo: OpenLDAP on {ldap.url} with {users} users under {people} ({', '.join(locked) or 'none'} locked)")
        print(
            f"demo: jobs every {every} s from {demo / 'jobs.d'}; in another terminal try\n"
            f"  .venv/bin/idsync -p {demo} status\n"
            f"  cat {demo / 'state' / 'status.json'}\n"
            f"  curl -H 'X-OpenIDM-Username: {_API_USER}' -H 'X-OpenIDM-Password: {_API_USER}' "
            f"'http://127.0.0.1:{api_port}/openidm/managed/user?_queryId=query-all-ids'\n"
            "demo: Ctrl-C stops the daemon\n"
        )
        code = idsync(["-p", str(demo), "run"])
        print()
        idsync(["-p", str(demo), "status", "--limit", "6"])
        return code


def _api_port() -> int:
    """8080 as in the seeds' ``curl`` commands, or any free port when it is taken."""
    for port in (8080, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


def fresh_demo_project(project: Path, name: str) -> Path:
    """``state/NAME/`` of ``project``, wiped, with a copy of its ``conf/``: a demo's own
    throwaway project, whose store starts empty each time."""
    demo = project / "state" / name
    shutil.rmtree(demo, ignore_errors=True)
    shutil.copytree(project / "conf", demo / "conf")
    return demo


def demo_state_env(demo: Path) -> dict[str, str]:
    """The variables that keep a demo's records in its own project, whatever the environment says."""
    return {
        "IDSYNC_STATE_DIR": str(demo / "state"),
        "IDSYNC_STATUS_FILE": str(demo / "state" / "status.json"),
        "IDSYNC_STORE__URL": f"sqlite:///{demo / 'state' / 'idsync.db'}",
    }


def _demo_jobs(project: Path, demo: Path, every: int) -> None:
    (demo / "jobs.d").mkdir()
    offset = 0
    for job in sorted((project / "jobs.d").glob("*.toml")):
        text = job.read_text(encoding="utf-8")
        # The two example jobs take turns, half an interval apart.
        schedule = f'schedule = "{offset % 60}/{every} * * * * ?"'
        text = re.sub(r"(?m)^schedule\s*=.*$", schedule, text)
        (demo / "jobs.d" / job.name).write_text(text, encoding="utf-8")
        offset += max(every // 2, 1)


def _lock(ldap: Slapd, people: str) -> list[str]:
    import ldap3

    server = ldap3.Server(f"ldap://127.0.0.1:{ldap.port}")
    conn = ldap3.Connection(server, ldap.admin_dn, ldap.admin_password, auto_bind=True)
    locked: list[str] = []
    try:
        for uid in _LOCKED:
            # Administrative lock of the ppolicy overlay: locked until an administrator unlocks.
            change = {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, ["000001010000Z"])]}
            if conn.modify(f"uid={uid},{people}", change):
                locked.append(uid)
    finally:
        conn.unbind()
    return locked


if __name__ == "__main__":
    raise SystemExit(main())
