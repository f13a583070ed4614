"""File connectors' benchmark: N generated users in a CSV file and in an XML file, each
reconciled into a SQLite store by ``idsync recon`` (a subprocess): the first recon (all
creates) and one with no change, next to the floor on the same file (Python's own
``csv`` reader, and ``xml.parsers.expat`` with no handler, reading it once).

    .venv/bin/python bench/file_bench.py [--users 100000] [--repeat 1]

Then the store out to a new file of each kind (``managed/user`` to the file: creates,
which rewrite the file once per page) and a no-change run of that. Prints entries per
second, peak RSS and CPU seconds. Figures on a shared machine are noisy: compare
within a run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.parsers import expat
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
ICF = "http://openidm.forgerock.com/xml/ns/public/resource/openicf/resource-schema-1.xsd"
RI = "http://example.com/ns/people"
PROPS = {"uid": {"nativeName": "__NAME__"}, "givenName": {}, "sn": {}, "mail": {}, "telephoneNumber": {}}
IN = {"properties": [{"source": "uid", "target": "userName"}, {"source": "givenName", "target": "givenName"},
                     {"source": "sn", "target": "sn"}, {"source": "mail", "target": "mail"},
                     {"source": "telephoneNumber", "target": "telephoneNumber"}],
      "policies": [{"situation": s, "action": a} for s, a in (
          ("CONFIRMED", "UPDATE"), ("FOUND", "UPDATE"), ("ABSENT", "CREATE"), ("SOURCE_MISSING", "DELETE"),
          ("MISSING", "CREATE"), ("UNQUALIFIED", "DELETE"))]}
OUT = {"properties": [{"source": "userName", "target": "uid"}, {"source": "sn", "target": "sn"},
                      {"source": "mail", "target": "mail"}],
       "policies": IN["policies"]}


def _users(n: int) -> list[tuple[str, ...]]:
    return [(f"user.{i}", f"Given{i % 997}", f"Surname{i}", f"user.{i}@example.com", f"+1 555 {i:07d}")
            for i in range(n)]


def _write_files(folder: Path, users: list[tuple[str, ...]]) -> None:
    with open(folder / "people.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["uid", "givenName", "sn", "mail", "telephoneNumber"])
        writer.writerows(users)
    with open(folder / "people.xml", "w") as out:
        out.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<icf:OpenICFContainer xmlns:icf="{ICF}" '
                  f'xmlns:ri="{RI}">\n')
        for uid, given, sn, mail, phone in users:
            out.write(f"<ri:__ACCOUNT__><icf:__UID__>{uid}</icf:__UID__><icf:__NAME__>{uid}</icf:__NAME__>"
                      f"<ri:givenName>{escape(given)}</ri:givenName><ri:sn>{sn}</ri:sn><ri:mail>{mail}</ri:mail>"
                      f"<ri:telephoneNumber>{phone}</ri:telephoneNumber></ri:__ACCOUNT__>\n")
        out.write("</icf:OpenICFContainer>\n")
    (folder / "out.csv").write_text("uid,sn,mail\n")


def _project(work: Path, kind: str) -> Path:
    project = work / f"project-{kind}"
    shutil.rmtree(project, ignore_errors=True)
    (project / "conf").mkdir(parents=True)
    shutil.copy(ROOT / "conf" / "managed.json", project / "conf" / "managed.json")
    ref = ({"connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"} if kind == "csv"
           else {"connectorName": "org.forgerock.openicf.connectors.xml.XMLConnector"})
    props = {"csvFile": str(work / "people.csv")} if kind == "csv" else {"xmlFilePath": str(work / "people.xml")}
    types = {"account": {"nativeType": "__ACCOUNT__", "properties": PROPS}}
    (project / "conf" / "provisioner.openicf-people.json").write_text(json.dumps(
        {"connectorRef": ref, "configurationProperties": props, "objectTypes": types}))
    out_props = ({"csvFile": str(work / "out.csv")} if kind == "csv"
                 else {"xmlFilePath": str(work / "out.xml"), "createFileIfNotExists": True})
    (work / "out.xml").unlink(missing_ok=True)
    (project / "conf" / "provisioner.openicf-out.json").write_text(json.dumps(
        {"connectorRef": ref, "configurationProperties": out_props,
         "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
             "uid": {"nativeName": "__NAME__"}, "sn": {}, "mail": {}}}}}))
    write_in_out(project)
    return project


def write_in_out(project: Path) -> None:
    """The two mappings every bench here runs (``system/people`` into the store, the
    store out to ``system/out``) and a SQLite store under ``project/state``."""
    (project / "conf" / "sync.json").write_text(json.dumps({"mappings": [
        {"name": "in", "source": "system/people/account", "target": "managed/user", **IN},
        {"name": "out", "source": "managed/user", "target": "system/out/account", **OUT}]}))
    (project / "conf" / "idsync.toml").write_text(
        f'state_dir = "state"\n[store]\nurl = "sqlite:///{project / "state" / "idsync.db"}"\n')


def timed(cmd: list[str]) -> tuple[float, int, float]:
    """Run ``cmd``: its wall seconds, peak RSS (MB) and CPU seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"  failed: {' '.join(cmd)}\n{(proc.stderr.read() if proc.stderr else b'').decode()[-1500:]}",
              file=sys.stderr)
    return elapsed, usage.ru_maxrss // 1024, usage.ru_utime + usage.ru_stime


def _floor(work: Path, kind: str) -> float:
    start = time.perf_counter()
    if kind == "csv":
        with open(work / "people.csv", newline="") as handle:
            for _ in csv.reader(handle):
                pass
    else:
        parser = expat.ParserCreate()
        with open(work / "people.xml", "rb") as handle:
            parser.ParseFile(handle)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    idsync = str(ROOT / ".venv" / "bin" / "idsync")
    rows: dict[tuple[str, str], list[tuple[float, int, float]]] = {}
    work = Path(tempfile.mkdtemp(prefix="idsync-files-"))
    try:
        _write_files(work, _users(args.users))
        for _ in range(args.repeat):
            for kind in ("csv", "xml"):
                rows.setdefault((kind, "floor (the file read once, no engine)"), []).append(
                    (_floor(work, kind), 0, 0.0))
                project = _project(work, kind)
                for label, mapping in (("first recon (creates)", "in"), ("no-change recon", "in"),
                                       ("store to a new file (creates)", "out"), ("store to the file, no change",
                                                                                  "out")):
                    measured = timed([idsync, "-p", str(project), "recon", mapping, "--quiet"])
                    rows.setdefault((kind, label), []).append(measured)
                    print(f"  {kind:4} {label:38} {measured[0]:6.1f} s  {args.users / measured[0]:9,.0f} entries/s"
                          f"  {measured[1]:4d} MB  {measured[2]:5.1f} s CPU", flush=True)
                (work / "out.csv").write_text("uid,sn,mail\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table("file", rows, args.users, args.repeat)
    return 0


def print_table(first: str, rows: dict[tuple[str, str], list[tuple[float, int, float]]], users: int,
                repeat: int) -> None:
    """The runs as a Markdown table, medians of ``repeat``; ``first`` heads the first column."""
    print(f"\n{users:,} users, medians of {repeat}\n")
    print(f"| {first} | run | seconds | entries/s | peak RSS | CPU s |\n| --- | --- | ---: | ---: | ---: | ---: |")
    for (kind, label), values in rows.items():
        seconds = statistics.median(v[0] for v in values)
        rss = max(v[1] for v in values)
        cpu = statistics.median(v[2] for v in values)
        print(f"| {kind} | {label} | {seconds:.1f} | {users / seconds:,.0f} | "
              f"{f'{rss} MB' if rss else '-'} | {f'{cpu:.1f}' if cpu else '-'} |")


if __name__ == "__main__":
    raise SystemExit(main())
