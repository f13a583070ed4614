"""The recon's progress on a terminal: a status line with the count, the last complete run's
count as the expected total, rate, elapsed time and ETA, and log lines printed above it whole,
never glued to a stale status line or cut by it."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

from api_server import add_users
from idsync_dev.slapd import Slapd

from samples import FORWARD, IDSYNC, sample_project

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _on_terminal(project: Path) -> str:
    """``idsync recon`` on a pseudo-terminal 160 columns wide; everything it showed."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm", "IDSYNC_LOG__LEVEL": "info",
           "IDSYNC_LOG__FORMAT": "console", "IDSYNC_RECON__PAGE_SIZE": "20"}
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "recon", FORWARD], stdin=terminal, stdout=terminal,
                            stderr=terminal, env=env, close_fds=True)
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(30)
    os.close(controller)
    return b"".join(chunks).decode("utf-8", "replace")


def test_progress_line_and_log_lines_on_a_terminal(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A second recon of 600 entries shows ``N/~602 objects`` (the first run's count), a rate,
    elapsed time and an ETA; its ``recon.start`` and ``recon.end`` lines arrive whole, each
    on a line of its own."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    add_users(slapd, ldap_subtree, 600)
    _on_terminal(project)
    # The second run takes a few seconds (3 ms per entry in a transform), so the line is drawn with an ETA.
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    forward = next(m for m in sync["mappings"] if m["name"] == FORWARD)
    forward["properties"].append({"source": "sn", "target": "description", "transform": {
        "type": "text/javascript", "source": "var t = Date.now(); while (Date.now() - t < 3) {} source"}})
    sync_file.write_text(json.dumps(sync))
    shown = _ANSI.sub("", _on_terminal(project)).replace("\r\n", "\n")
    assert re.search(r"\[source\] [0-9,]+/~602 objects, [0-9,]+/s, elapsed \d+:\d\d", shown), shown[-2000:]
    assert ", ETA " in shown
    lines = [line.split("\r")[-1] for line in shown.split("\n")]
    ends = [line for line in lines if "recon.end" in line]
    assert len(ends) == 1, lines
    assert ends[0].lstrip().startswith(tuple("0123456789")), ends[0]  # a timestamp first: nothing glued before it
    assert "state=SUCCESS" in ends[0]
    assert "objects," not in ends[0]
    assert any("recon.start" in line and "objects," not in line for line in lines)
