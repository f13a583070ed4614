"""Under systemd, log events reach journald as native entries with one field per key, so
``journalctl IDSYNC_EVENT=recon.end`` and ``-p err`` select them (systemd.journal-fields(7))."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest


def _parse(datagram: bytes) -> dict[str, str]:
    """The native journal protocol: ``KEY=value\\n``, or ``KEY\\n`` + little-endian 64-bit
    length + data + ``\\n`` for values holding a newline."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line_end = rest.index(b"\n")
        head = rest[:line_end]
        if b"=" in head:
            key, _, value = head.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = rest[line_end + 1 :]
        else:
            (size,) = struct.unpack("<Q", rest[line_end + 1 : line_end + 9])
            fields[head.decode()] = rest[line_end + 9 : line_end + 9 + size].decode()
            rest = rest[line_end + 10 + size :]
    return fields


@pytest.fixture
def journal(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.socket"))
    sock.settimeout(10)
    return sock


def test_events_are_native_journal_entries_with_their_fields(tmp_path: Path, journal: socket.socket) -> None:
    """On the journal stream, a structlog event and a library's stdlib record each arrive as one
    entry: readable MESSAGE, PRIORITY (3 for an error), SYSLOG_IDENTIFIER, IDSYNC_EVENT and one
    IDSYNC_ field per key; a traceback is kept whole in MESSAGE; nothing goes to the stream."""
    out_path = tmp_path / "stdout"
    script = (
        "import logging, sys\n"
        "import structlog\n"
        "from idsync.log import configure_logging\n"
        f"configure_logging('json', 'info', stream=sys.stdout, journal_socket={str(tmp_path / 'journal.socket')!r})\n"
        "log = structlog.get_logger('idsync.sync')\n"
        "log.error('recon.end', run_id='0193abcd', mapping='systemLdapAccounts_managedUser', state='FAILED',"
        " counts={'created': 2})\n"
        "logging.getLogger('apscheduler.scheduler').warning('from the library')\n"
        "try:\n"
        "    raise ValueError('boom')\n"
        "except ValueError:\n"
        "    log.exception('recon.crash', mapping='m')\n"
    )
    with out_path.open("w") as out:
        st = os.fstat(out.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        subprocess.run([sys.executable, "-c", script], stdout=out, env=env, check=True, timeout=60)
    entries = [_parse(journal.recv(65536)) for _ in range(3)]
    assert out_path.read_text(encoding="utf-8") == ""
    end, library, crash = entries
    assert end["PRIORITY"] == "3"
    assert end["SYSLOG_IDENTIFIER"] == "idsync"
    assert end["IDSYNC_EVENT"] == "recon.end"
    assert end["IDSYNC_RUN_ID"] == "0193abcd"
    assert end["IDSYNC_MAPPING"] == "systemLdapAccounts_managedUser"
    assert end["IDSYNC_STATE"] == "FAILED"
    assert end["IDSYNC_COUNTS"] == '{"created":2}'
    assert end["MESSAGE"].startswith("recon.end run_id=0193abcd mapping=systemLdapAccounts_managedUser state=FAILED")
    assert (library["PRIORITY"], library["IDSYNC_EVENT"], library["IDSYNC_LOGGER"]) == (
        "4", "from the library", "apscheduler.scheduler")
    assert crash["PRIORITY"] == "3"
    assert "Traceback" in crash["MESSAGE"] and "ValueError: boom" in crash["MESSAGE"]
