"""The Salesforce connector: ``system/<name>/User`` (and other sObjects declared in
``objectTypes``) over the REST API, configured by a PingIDM
``provisioner.openicf-<name>.json`` (keys in ``config``).

Objects are the sObject's fields under their API names (``Username``,
``LastName``...) with ``_id`` the record Id. Reads are SOQL over the ``query``
endpoint selecting only the requested fields, one page per server batch,
following ``nextRecordsUrl`` until ``done``; ``_queryFilter`` becomes a SOQL
``WHERE`` (``query.soql``, values escaped); a native query is a ``WHERE``
condition or a whole ``SELECT``. Writes are in ``writes``; liveSync's reading of
changes (sObject Get Updated and Get Deleted) in ``changes``.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from idsync.connectors.base import System, system_test_report
from idsync.connectors.salesforce.auth import authorize_url, exchange_code
from idsync.connectors.salesforce.changes import SalesforceChanges
from idsync.connectors.salesforce.client import SalesforceClient, error_text, errors_of
from idsync.connectors.salesforce.config import SalesforceSettings, parse_salesforce_config
from idsync.connectors.salesforce.writes import RecordWriter
from idsync.errors import AuthenticationFailed, ConfigError, ConfigWarning, IdsyncError, PeerUnavailable, QueryError
from idsync.query.ast import Path as FieldPath
from idsync.query.soql import escape_soql_string, to_soql
from idsync.resource import ChangeFeed, ChangeSource, Obj, QuerySpec, Resource, WriteOp, WriteResult

__all__ = ["SalesforceResource", "SalesforceSystem", "open_salesforce_system"]

log = structlog.get_logger("idsync.connectors.salesforce")

_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")
_RECORD_ID = re.compile(r"[A-Za-z0-9]{15}([A-Za-z0-9]{3})?")
_ID_CHUNK = 200  # ids per SOQL "Id IN (...)": keeps the URL far below its limit
# Reference fields naming records of a type idsync reads: a User's manager is a User. Mapped
# to a managed relationship, the store shows them as the managed objects linked to those
# records (``store/system_refs.py``).
_REFERENCES: Mapping[str, Mapping[str, str]] = {"User": {"ManagerId": "User"}}


class SalesforceResource(Resource, ChangeSource):
    """One sObject type of one org; its changes are read by ``changes.py``."""

    def __init__(self, system: str, client: SalesforceClient, settings: SalesforceSettings, sobject: str,
                 *, dry_run: bool = False) -> None:
        self.name = f"system/{system}/{sobject}"
        self.dry_run = dry_run
        self._client = client
        self._settings = settings
        self._type = sobject
        self._defaults = settings.object_types.get(sobject, ())
        self._writer = RecordWriter(client, sobject, self.name)
        self._changes = SalesforceChanges(self.name, client, sobject)
        self.references = {name: kind for name, kind in _REFERENCES.get(sobject, {}).items()
                           if kind in settings.object_types}

    # -- liveSync -------------------------------------------------------------

    def latest_token(self) -> str:
        return self._changes.latest_token()

    def read_changes(self, token: str, fields: Sequence[str] | None, page_size: int) -> ChangeFeed:
        return self._changes.read(token, lambda ids: self.get_many(ids, fields), page_size)

    # -- reading --------------------------------------------------------------

    def _read_pages(self, spec: QuerySpec) -> Iterator[list[Obj]]:
        fields = self._fields(spec.fields)
        if spec.native is not None and spec.native.strip().upper().startswith("SELECT"):
            soql = spec.native.strip()
        else:
            where = spec.native.strip() if spec.native is not None else (
                to_soql(spec.filter, field=self._native_path) if spec.filter is not None else "")
            soql = f"SELECT {', '.join(fields)} FROM {self._type}" + (f" WHERE {where}" if where else "")
        yield from self._query(soql, spec.page_size)

    def _read_many(self, ids: Sequence[str], fields: Sequence[str] | None = None) -> dict[str, Obj]:
        # Ids that cannot be Salesforce ids cannot exist: they are absent, not an injection.
        valid = [i for i in dict.fromkeys(ids) if isinstance(i, str) and _RECORD_ID.fullmatch(i)]
        found: dict[str, Obj] = {}
        select = ", ".join(self._fields(fields))
        for start in range(0, len(valid), _ID_CHUNK):
            chunk = valid[start:start + _ID_CHUNK]
            in_list = ", ".join(escape_soql_string(i) for i in chunk)
            for page in self._query(f"SELECT {select} FROM {self._type} WHERE Id IN ({in_list})", None):
                for obj in page:
                    found[obj["_id"]] = obj
        # A 15-character id is answered by the record with its 18-character form.
        short = {obj_id[:15]: obj for obj_id, obj in found.items()}
        return {i: found.get(i) or short[i] for i in valid if i in found or i in short}

    def get(self, id: str, fields: Sequence[str] | None = None) -> Obj | None:
        if not _RECORD_ID.fullmatch(id or ""):
            return None
        response = self._client.call("GET", f"{self._client.base}/sobjects/{self._type}/{id}",
                                     params={"fields": ",".join(self._fields(fields))})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise PeerUnavailable(f"salesforce: reading {self._type} {id}: {error_text(errors_of(response))}")
        try:
            record = response.json()
        except ValueError:
            raise PeerUnavailable(f"salesforce: reading {self._type} {id}: the answer is not JSON") from None
        if not isinstance(record, dict):
            raise PeerUnavailable(f"salesforce: reading {self._type} {id}: the answer is not a record")
        return _object(record)

    def _query(self, soql: str, page_size: int | None) -> Iterator[list[Obj]]:
        batch = self._settings.query_batch_size or (max(200, min(2000, page_size)) if page_size else None)
        headers = {"Sforce-Query-Options": f"batchSize={batch}"} if batch else {}
        log.debug("salesforce.query", resource=self.name, soql=soql)
        response = self._client.call("GET", f"{self._client.base}/query", params={"q": soql}, headers=headers)
        read = 0
        while True:
            if response.status_code != 200:
                text = error_text(errors_of(response))
                if response.status_code == 400:
                    raise QueryError(f"salesforce: the query was refused: {text}")
                raise PeerUnavailable(f"salesforce: query failed: {text}")
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                # A proxy's maintenance page, a cut answer: what the query holds cannot be told.
                raise PeerUnavailable("salesforce: query: the answer is not a JSON query result; "
                                      "the read is incomplete")
            records = body.get("records") or []
            read += len(records)
            if records:
                yield [_object(r) for r in records]
            next_url = body.get("nextRecordsUrl")
            if body.get("done", True):
                total = body.get("totalSize")
                if isinstance(total, int) and read < total:
                    # A read taken for complete would make the records never seen look deleted.
                    raise PeerUnavailable(f"salesforce: the query ended after {read} of its {total} records; "
                                          "the read is incomplete")
                return
            if not next_url:
                raise PeerUnavailable(f"salesforce: the query stopped after {read} records without a "
                                      "nextRecordsUrl though it was not done; the read is incomplete")
            response = self._client.call("GET", urlsplit(next_url).path, headers=headers)

    def _fields(self, requested: Sequence[str] | None) -> list[str]:
        names = self._defaults if requested is None else requested
        fields = {"Id": "Id"}
        for name in names:
            native = name.split("/")[0]
            if native in ("_id", "Id", "") or native.startswith("_"):
                continue
            if not _FIELD.fullmatch(native):
                raise QueryError(f"{self.name}: {native!r} is not a Salesforce field name")
            fields.setdefault(native.lower(), native)
        return list(fields.values())

    def _native_path(self, path: FieldPath) -> str:
        if path == ("_id",):
            return "Id"
        return ".".join(path)

    # -- writing --------------------------------------------------------------

    def _write(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        return self._writer.write(ops)


class SalesforceSystem(System):
    """One configured Salesforce org.

    Its refresh token is ``refreshToken`` in the provisioner, or, once an administrator
    allowed access in the console, the one kept in ``token_file`` (in the daemon's state
    directory, mode 0600), which wins: it is the newer consent. Each opening reads the file
    again, so a new consent is used by the next run or request without a restart."""

    def __init__(self, name: str, config: Mapping[str, Any], *, file: str, token_file: Path | None = None) -> None:
        self.name = name
        self._file = file
        self._config = config
        self._token_file = token_file
        stored = _read_token(token_file) if token_file is not None else None
        self._settings = parse_salesforce_config(file, config, stored_token=stored)
        self._client = SalesforceClient(name, self._settings)

    def resource(self, object_type: str, *, dry_run: bool = False) -> SalesforceResource:
        if object_type not in self._settings.object_types:
            raise ConfigError(self._file, "objectTypes", f"no object type {object_type!r} "
                              f"(known: {', '.join(self._settings.object_types)})")
        return SalesforceResource(self.name, self._client, self._settings, object_type, dry_run=dry_run)

    def test(self) -> Mapping[str, Any]:
        report = system_test_report(self.name, self._config, "Salesforce Connector",
                                    ["__ALL__", *self._settings.object_types])
        try:
            self._client.authenticate()
            response = self._client.call("GET", f"{self._client.base}/query",
                                         params={"q": "SELECT Id FROM User LIMIT 1"})
            if response.status_code != 200:
                report.failed(f"salesforce: {error_text(errors_of(response))}")
        except IdsyncError as error:
            report.failed(error)
        return report

    def warnings(self) -> list[ConfigError]:
        warnings: list[ConfigError] = list(self._settings.warnings)
        if self._settings.refresh_token:
            return warnings
        return [*warnings, ConfigWarning(
            self._file, "configurationProperties.refreshToken",
            f"not set, and no consent kept in {self._token_file}: system {self.name} cannot connect until an "
            "administrator authorizes it (console: Systems, Authorize; or `idsync salesforce authorize`)")]

    def needs_consent(self) -> bool | None:
        return None if self._token_file is None else not self._settings.refresh_token

    def consent_url(self, redirect_uri: str, state: str, code_challenge: str) -> str:
        s = self._settings
        return authorize_url(s.token_url, s.client_id, redirect_uri, state=state, code_challenge=code_challenge)

    def complete_consent(self, code: str, redirect_uri: str, code_verifier: str) -> str:
        if self._token_file is None:
            raise ConfigError(self._file, "", "no state directory to keep the refresh token in")
        s = self._settings
        token = exchange_code(self._client.http, s.token_url, s.client_id, s.client_secret, code, redirect_uri,
                              code_verifier)
        if not token.refresh_token:
            raise AuthenticationFailed("salesforce: Salesforce issued no refresh token: give the Connected App the "
                                       "scope 'Perform requests at any time (refresh_token, offline_access)'")
        write_secret(self._token_file, token.refresh_token)
        log.info("salesforce.refresh_token_stored", system=self.name, file=str(self._token_file),
                 instance_url=token.instance_url)
        return f"refresh token kept in {self._token_file}; instance {token.instance_url or s.instance_url}"

    def close(self) -> None:
        self._client.close()


def _read_token(path: Path) -> str:
    """The refresh token kept in ``path`` by a consent; ``""`` when there is none yet."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(str(path), "", f"cannot read the stored refresh token: {reason}") from None


def write_secret(path: Path, text: str) -> None:
    """``text`` into ``path`` readable by this user only (0600, its directory 0700),
    swapped in whole: a reader sees the old token or the new one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # made 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _object(record: Mapping[str, Any]) -> Obj:
    obj: Obj = {"_id": record.get("Id")}
    for key, value in record.items():
        if key not in ("attributes", "Id"):
            obj[key] = value
    return obj


def open_salesforce_system(name: str, config: Mapping[str, Any], *, file: str,
                           token_file: Path | None = None) -> SalesforceSystem:
    """The connector registry's entry point for ``...salesforce.SalesforceConnector``."""
    return SalesforceSystem(name, config, file=file, token_file=token_file)
