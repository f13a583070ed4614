"""A second system for a project: a CSV file that ``managed/user`` maps to, so that each
recon into the store carries its writes on there (``OnwardPush``, ``sync/changes.py``).
Used by ``bench/recon_bench.py --onward`` and ``tests/test_recon_onward.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["ONWARD_MAPPING", "add_onward_csv"]

ONWARD_MAPPING = "managedUser_systemHrAccounts"
_CSV_REF = {"bundleName": "org.openidentityplatform.openicf.connectors.csvfile-connector",
            "bundleVersion": "[2.0.0.0,3)", "connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"}


_USER_PROPERTIES = [{"source": "userName", "target": "uid"}, {"source": "mail", "target": "mail"},
                    {"source": "sn", "target": "lastName"}]


def add_onward_csv(project: Path, csv_file: Path, source: str = "managed/user", **mapping: Any) -> None:
    """System ``hr`` (``csv_file``, its header only: ``uid``, ``mail``, ``lastName``) and the
    mapping ``ONWARD_MAPPING`` from ``source`` to it (a user's ``userName``, ``mail`` and
    ``sn``); ``mapping``: keys to add to it or replace (``properties`` for another type)."""
    conf = project / "conf"
    (conf / "provisioner.openicf-hr.json").write_text(json.dumps({
        "name": "hr", "connectorRef": _CSV_REF,
        "configurationProperties": {"csvFile": str(csv_file), "uniqueAttribute": "uid"},
        "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
            "uid": {"type": "string", "nativeName": "__NAME__", "required": True},
            "mail": {"type": "string"}, "lastName": {"type": "string"}}}}}))
    csv_file.write_text('"uid","mail","lastName"\n')
    sync = json.loads((conf / "sync.json").read_text())
    sync["mappings"].append({
        "name": ONWARD_MAPPING, "source": source, "target": "system/hr/account", "properties": _USER_PROPERTIES,
        "policies": [{"situation": "ABSENT", "action": "CREATE"}, {"situation": "CONFIRMED", "action": "UPDATE"},
                     {"situation": "FOUND", "action": "UPDATE"}, {"situation": "SOURCE_MISSING", "action": "DELETE"},
                     {"situation": "MISSING", "action": "CREATE"}],
        **mapping})
    (conf / "sync.json").write_text(json.dumps(sync))
