"""``make demo``: a throwaway OpenLDAP loaded with sample users, reconciled into
the embedded SQLite store with the project's own configuration (``conf/``).

It starts slapd on 127.0.0.1 from a temporary directory, runs the mapping
``systemLdapAccounts_managedUser`` exactly as ``idsync recon`` would, shows the
run summary and the managed users, and stops slapd again. It works in its own
project, ``state/recon-demo/``, wiped at each start (each slapd is new, so links
kept from a previous demo would fail every user); the project's own ``state/``
is never touched.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from idsync.cli import main as idsync

from idsync_dev.daemon_demo import demo_state_env, fresh_demo_project

__all__ = ["main"]

MAPPING = "systemLdapAccounts_managedUser"


def main() -> int:
    from idsync_dev.slapd import Slapd, sample_users_ldif

    project = Path(os.environ.get("IDSYNC_PROJECT") or Path.cwd())
    if not Slapd.available():
        print("demo: slapd is not installed (apt-get install slapd ldap-utils)", file=sys.stderr)
        return os.EX_UNAVAILABLE
    users = int(os.environ.get("IDSYNC_DEMO_USERS", "20"))
    password = secrets.token_urlsafe(16)
    with Slapd(admin_password=password, tls=False) as ldap:
        ldap.add_ldif(sample_users_ldif(users, f"ou=People,{ldap.base_dn}"))
        demo = fresh_demo_project(project, "recon-demo")
        os.environ.update(IDSYNC_LDAP_HOST="127.0.0.1", IDSYNC_LDAP_PORT=str(ldap.port),
                          IDSYNC_LDAP_PASSWORD=password, **demo_state_env(demo))
        print(f"demo: OpenLDAP on {ldap.url} with {users} users under ou=People,{ldap.base_dn}\n")
        args = ["-p", str(demo)]
        code = idsync([*args, "recon", MAPPING])
        print()
        idsync([*args, "status", "--limit", "5"])
        print()
        idsync([*args, "managed", "query", "user", "--filter", "true",
                "--fields", "userName,displayName,mail,accountStatus", "--limit", "5"])
        print(f"\ndemo: store is {demo / 'state' / 'idsync.db'}; try:\n"
              f"  .venv/bin/idsync -p {demo} status\n"
              f"  .venv/bin/idsync -p {demo} managed query user --filter 'userName eq \"bjensen\"'")
        return code


if __name__ == "__main__":
    raise SystemExit(main())
