"""A local stand-in for a Salesforce org, written from the REST API documentation.

HTTPS on loopback with a self-signed certificate (made with ``openssl``), serving:

* ``GET /services/oauth2/authorize`` (the web server flow's consent): ``response_type=code``,
  ``client_id``, ``redirect_uri`` (one of the Connected App's ``callback_urls``),
  ``scope``, ``state``, ``code_challenge`` (PKCE, SHA-256, base64url), ``prompt``;
  answers an HTML login-and-allow page whose form POSTs back to the same path with the
  org user's ``username``/``password`` (``logins``) and ``decision`` (``allow`` or
  ``deny``). Allow redirects (302) to ``redirect_uri?code=...&state=...``: the code is
  single use and lives 15 minutes; Deny to ``redirect_uri?error=access_denied&
  error_description=end-user+denied+authorization&state=...``. An unknown client is an
  error page (``invalid_client_id``), so is a ``redirect_uri`` not among the callbacks
  (``redirect_uri_mismatch``): neither is redirected; another ``response_type`` is
  redirected as ``unsupported_response_type``.
* ``POST /services/oauth2/token``: the ``refresh_token`` and ``authorization_code``
  grants (form-encoded; answers ``access_token``, ``instance_url``, ``id``,
  ``token_type``, ``issued_at``, ``signature``, ``scope``, and ``refresh_token``
  for a code whose scopes include ``refresh_token``); a code must come with the
  ``redirect_uri`` it was issued for and, when it was asked with a ``code_challenge``,
  the matching ``code_verifier``; errors ``{"error": "invalid_grant" |
  "invalid_client" | "redirect_uri_mismatch" | "unsupported_grant_type",
  "error_description"}`` with 400.
* ``GET /services/data/vXX.X/query`` and ``queryAll`` with ``?q=`` SOQL (``SELECT
  fields FROM User [WHERE ...] [LIMIT n]``; ``= != < <= > >= LIKE IN``, ``AND OR
  NOT``, ``null``, booleans, case-insensitive text comparison), batches sized by
  ``Sforce-Query-Options: batchSize=N``, ``totalSize``/``done``/``nextRecordsUrl``
  and ``GET`` on that URL for the next batch.
* ``GET``/``PATCH``/``DELETE /sobjects/User/{id}`` (``?fields=``), ``POST /sobjects/User``.
* ``POST``/``PATCH /composite/sobjects`` (sObject Collections, at most 200
  records, ``allOrNone``, SaveResults with ``statusCode``/``message``/``fields``).
* ``GET /sobjects/User/updated/`` and ``/deleted/`` with ``?start=&end=`` (ISO 8601;
  the seconds are ignored: both are taken to the minute): the ids whose
  ``SystemModstamp`` falls in the window, or ``deletedRecords`` (``id``,
  ``deletedDate``) with ``earliestDateAvailable``, and ``latestDateCovered`` (the
  window's end, never past the org's current minute). ``INVALID_REPLICATION_DATE``
  (400) when start does not precede end, when start is more than 30 days back
  (updated) or before what the delete log still holds (deleted: 15 days, or the last
  purge, ``purge_delete_log``), ``EXCEEDED_ID_LIMIT`` past ``id_limit`` ids. The
  org's clock is this host's moved by ``clock_offset`` seconds (``advance``; ``freeze`` stops it), and
  ``delete_user`` removes a record as an org deletes one (a real org deactivates
  Users instead; the deleted window is the same for every sObject).
* A value of the wrong JSON type for its field (a boolean field, ``IsActive``, sent a
  string) cannot be deserialized: the request is refused whole with 400
  ``JSON_PARSER_ERROR``, a collection's other records included, as the API does.
* Errors as ``[{"message", "errorCode", "fields"}]``: ``INVALID_SESSION_ID`` (401)
  for an unknown or expired session (a session dies after ``session_calls``
  calls), ``REQUEST_LIMIT_EXCEEDED`` (403) when the API allowance is spent,
  ``REQUIRED_FIELD_MISSING``, ``DUPLICATE_USERNAME``, ``INVALID_FIELD``,
  ``MALFORMED_QUERY``, ``NOT_FOUND``; ``fail_next`` injects any answer (e.g. 503).
* ``ManagerId``, a reference to a User, checked on create and update as a reference
  field is: not an id (``MALFORMED_ID``), the id of another sObject type (key prefix
  other than ``005``: ``FIELD_INTEGRITY_EXCEPTION``), no such User
  (``INVALID_CROSS_REFERENCE_KEY``), the User itself; a 15-character id is kept as
  the 18-character one.
"""

from __future__ import annotations

import atexit
import base64
import functools
import hashlib
import html
import itertools
import json
import re
import secrets
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fake_soql import SoqlError, parse_select

__all__ = ["REQUIRED_USER_FIELDS", "FakeSalesforce", "sf_datetime"]

REQUIRED_USER_FIELDS = ("Username", "LastName", "Email", "Alias", "TimeZoneSidKey", "LocaleSidKey",
                        "EmailEncodingKey", "ProfileId", "LanguageLocaleKey")
USER_FIELDS = frozenset({*REQUIRED_USER_FIELDS, "Id", "FirstName", "IsActive", "Phone", "MobilePhone", "Title",
                         "Department", "CompanyName", "FederationIdentifier", "CommunityNickname", "Name",
                         "CreatedDate", "LastModifiedDate", "SystemModstamp", "ManagerId"})
_READ_ONLY = frozenset({"Id", "Name", "CreatedDate", "LastModifiedDate", "SystemModstamp"})
_BOOLEAN_FIELDS = ("IsActive",)
_UPDATED_DAYS = 30  # how far back sObject Get Updated answers
_DELETED_DAYS = 15  # how far back sObject Get Deleted answers (the delete log)
_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_RECORD_ID = re.compile(r"[A-Za-z0-9]{15}([A-Za-z0-9]{3})?")
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _id18(id15: str) -> str:
    """Salesforce's case-safe 18-character id: a checksum of upper-case letters."""
    suffix = ""
    for block in (id15[0:5], id15[5:10], id15[10:15]):
        bits = sum(1 << i for i, ch in enumerate(block) if ch.isupper())
        suffix += _CHARS[bits]
    return id15 + suffix


@functools.cache
def _self_signed() -> tuple[Path, Path]:
    """One certificate per test process: making an RSA key costs more than most tests."""
    directory = Path(tempfile.mkdtemp(prefix="idsync-salesforce-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    cert, key = directory / "salesforce.crt", directory / "salesforce.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@dataclass
class FakeSalesforce:
    """The org's state, and the server; ``start(tmp_dir)`` then ``url``, ``ca_file``."""

    client_id: str = "3MVG9fake-client-id"
    client_secret: str = "fake-client-secret"
    refresh_tokens: set[str] = field(default_factory=lambda: {"5Aep861fake-refresh-token"})
    codes: dict[str, str] = field(default_factory=dict)  # authorization code -> redirect_uri
    callback_urls: set[str] = field(default_factory=set)  # the Connected App's callback URLs
    logins: dict[str, str] = field(default_factory=lambda: {"admin@example.com": "fake-password-1"})
    consents: int = 0  # how many times a user allowed access
    session_calls: int | None = None  # a session expires after this many API calls
    api_allowance: int | None = None  # REQUEST_LIMIT_EXCEEDED once this many API calls were made
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_next: list[tuple[int, Any]] = field(default_factory=list)
    # Each rewrites the next query batch answered (an org answering out of line).
    batch_edits: list[Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of API calls
    bodies: list[Any] = field(default_factory=list)  # their JSON bodies
    queries: list[str] = field(default_factory=list)  # the SOQL of query calls, in order
    tokens_issued: int = 0
    access_tokens: list[str] = field(default_factory=list)
    version: str = "v44.0"
    instance_url: str | None = None  # what token responses name as instance_url (default: this org)
    clock_offset: float = 0.0  # the org's clock is this host's plus this many seconds
    id_limit: int = 600_000  # EXCEEDED_ID_LIMIT past this many ids in one window
    deleted_log: list[tuple[str, float]] = field(default_factory=list)  # (Id, when) of deleted records

    def __post_init__(self) -> None:
        self._sessions: dict[str, int] = {}
        # authorization code -> (its code_challenge, the scopes asked, when it was issued)
        self._code_details: dict[str, tuple[str | None, str, float]] = {}
        self._cursors: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self._lock = threading.RLock()
        self._seq = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self.ca_file = Path()
        self.api_calls = 0
        self._purged_at: float | None = None
        self._frozen_at: float | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self, _directory: Path | None = None) -> FakeSalesforce:
        cert, key = _self_signed()
        self.ca_file = cert
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    # -- data -----------------------------------------------------------------

    def add_user(self, **fields: Any) -> str:
        with self._lock:
            record = {"IsActive": True, "TimeZoneSidKey": "America/Los_Angeles", "LocaleSidKey": "en_US",
                      "EmailEncodingKey": "UTF-8", "LanguageLocaleKey": "en_US", "ProfileId": "00e000000000001AAA",
                      **fields}
            return self._insert(record)

    def now(self) -> float:
        """The org's clock."""
        return self._frozen_at if self._frozen_at is not None else time.time() + self.clock_offset

    def freeze(self) -> None:
        """Stop the org's clock (``advance`` still moves it)."""
        self._frozen_at = self.now()

    def advance(self, seconds: float) -> None:
        """Move the org's clock forward."""
        if self._frozen_at is not None:
            self._frozen_at += seconds
        self.clock_offset += seconds

    def stamp(self) -> str:
        """The org's time now, as Salesforce writes a dateTime."""
        return sf_datetime(self.now())

    def delete_user(self, record_id: str) -> None:
        """Delete a record (into the delete log that sObject Get Deleted reads)."""
        with self._lock:
            del self.users[record_id]
            self.deleted_log.append((record_id, self.now()))

    def purge_delete_log(self) -> None:
        """An administrator empties the recycle bin: what was deleted so far is no longer told."""
        with self._lock:
            self.deleted_log.clear()
            self._purged_at = self.now()

    def _insert(self, record: dict[str, Any]) -> str:
        new_id = _id18("005" + f"{next(self._seq):012d}")
        now = self.stamp()
        record = {**record, "Id": new_id, "CreatedDate": now, "LastModifiedDate": now, "SystemModstamp": now}
        record["Name"] = " ".join(str(record[k]) for k in ("FirstName", "LastName") if record.get(k))
        self.users[new_id] = record
        return new_id

    def update_user(self, record_id: str, **fields: Any) -> None:
        """Change a record as a user of the org would (its SystemModstamp moves)."""
        with self._lock:
            result = self._save(record_id, fields)
        assert result["success"], result["errors"]

    def by_username(self, username: str) -> dict[str, Any] | None:
        return next((u for u in self.users.values() if u.get("Username") == username), None)

    def expire_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    def count(self, method: str, path_part: str) -> int:
        return sum(1 for m, p in self.requests if m == method and path_part in p)

    # -- OAuth ----------------------------------------------------------------

    def token(self, form: dict[str, str]) -> tuple[int, Any]:
        grant = form.get("grant_type")
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 400, {"error": "invalid_client", "error_description": "invalid client credentials"}
        body: dict[str, Any] = {}
        if grant == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return 400, {"error": "invalid_grant", "error_description": "expired access/refresh token"}
        elif grant == "authorization_code":
            code = form.get("code", "")
            redirect = self.codes.pop(code, None)
            challenge, scope, issued = self._code_details.pop(code, (None, "refresh_token", self.now()))
            if redirect is None or self.now() - issued > 15 * 60:
                return 400, {"error": "invalid_grant", "error_description": "invalid authorization code"}
            if redirect != form.get("redirect_uri"):
                return 400, {"error": "redirect_uri_mismatch",
                             "error_description": "redirect_uri must match configuration"}
            if challenge is not None and _s256(form.get("code_verifier", "")) != challenge:
                return 400, {"error": "invalid_grant", "error_description": "invalid code verifier"}
            if "refresh_token" in scope.split() or "full" in scope.split():
                refresh = "5Aep861" + secrets.token_urlsafe(24)
                self.refresh_tokens.add(refresh)
                body["refresh_token"] = refresh
        else:
            return 400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"}
        access = "00Dfake!" + secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[access] = 0
            self.access_tokens.append(access)
            self.tokens_issued += 1
        return 200, {**body, "access_token": access, "signature": secrets.token_urlsafe(16),
                     "scope": "refresh_token id api", "instance_url": self.instance_url or self.url,
                     "id": f"{self.url}/id/00D000000000001AAA/005000000000001AAA", "token_type": "Bearer",
                     "issued_at": str(int(time.time() * 1000))}

    def authorize(self, method: str, query: dict[str, str], form: dict[str, str]) -> tuple[int, Any, str | None]:
        """The consent page: (status, HTML body, Location to redirect to)."""
        ask = {**query, **{k: v for k, v in form.items() if k not in ("username", "password", "decision")}}
        if ask.get("client_id") != self.client_id:
            return 400, _page("error=invalid_client_id&amp;error_description=client%20identifier%20invalid"), None
        callback = ask.get("redirect_uri", "")
        if callback not in self.callback_urls:
            return 400, _page("error=redirect_uri_mismatch&amp;error_description=redirect_uri%20must%20match%20"
                              "configuration"), None
        state = {"state": ask["state"]} if "state" in ask else {}
        if ask.get("response_type") != "code":
            return 302, b"", _with_query(callback, {"error": "unsupported_response_type",
                                                    "error_description": "response type not supported", **state})
        if method == "GET" or self.logins.get(form.get("username", "")) != form.get("password"):
            problem = "" if method == "GET" else "Please check your username and password."
            return 200, _consent_page(ask, problem), None
        if form.get("decision") != "allow":
            return 302, b"", _with_query(callback, {"error": "access_denied",
                                                    "error_description": "end-user denied authorization", **state})
        code = "aPrx" + secrets.token_urlsafe(36)
        with self._lock:
            self.codes[code] = callback
            self._code_details[code] = (ask.get("code_challenge"), ask.get("scope", ""), self.now())
            self.consents += 1
        return 302, b"", _with_query(callback, {"code": code, **state})

    # -- API ------------------------------------------------------------------

    def api(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
            body: Any) -> tuple[int, Any]:
        auth = headers.get("authorization", "")
        with self._lock:
            token = auth[7:] if auth.startswith("Bearer ") else ""
            if token not in self._sessions or (self.session_calls is not None
                                               and self._sessions[token] >= self.session_calls):
                self._sessions.pop(token, None)
                return 401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
            self._sessions[token] += 1
            if self.fail_next:
                return self.fail_next.pop(0)
            if self.api_allowance is not None and self.api_calls >= self.api_allowance:
                return 403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
            self.api_calls += 1
            self.requests.append((method, path))
            self.bodies.append(body)
            if "q" in query:
                self.queries.append(query["q"])
            return self._route(method, path, query, headers, body)

    def _route(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
               body: Any) -> tuple[int, Any]:
        base = f"/services/data/{self.version}"
        if not path.startswith(base):
            return 404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
        rest = path[len(base):]
        if method in ("POST", "PATCH") and (problem := _unparsable(body, collection=rest == "/composite/sobjects")):
            return 400, [{"message": problem, "errorCode": "JSON_PARSER_ERROR"}]
        if rest in ("/query", "/queryAll") and method == "GET":
            return self._query(query.get("q", ""), headers)
        if m := re.fullmatch(r"/query(?:All)?/(01g[A-Za-z0-9]+)-(\d+)", rest):
            return self._next_batch(m.group(1), int(m.group(2)))
        if rest == "/composite/sobjects" and method in ("POST", "PATCH"):
            return self._collection(method, body)
        if rest == "/sobjects/User" and method == "POST":
            result = self._save(None, body)
            return (201, result) if result["success"] else (400, _as_errors(result["errors"]))
        if (m := re.fullmatch(r"/sobjects/User/(updated|deleted)/?", rest)) and method == "GET":
            return self._replication(m.group(1), query)
        if m := re.fullmatch(r"/sobjects/User/([A-Za-z0-9]{15,18})", rest):
            return self._record(method, m.group(1), query, body)
        return 404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]

    def _replication(self, kind: str, query: dict[str, str]) -> tuple[int, Any]:
        """sObject Get Updated / Get Deleted: what changed in [start, end), to the minute."""
        def refused(message: str) -> tuple[int, Any]:
            return 400, [{"message": message, "errorCode": "INVALID_REPLICATION_DATE"}]

        try:
            start, end = (_minute(datetime.fromisoformat(query[k]).timestamp()) for k in ("start", "end"))
        except (KeyError, ValueError):
            return refused("start and end must be ISO 8601 dates")
        if start >= end:
            return refused("start must chronologically precede end")
        now = self.now()
        if kind == "updated" and start < now - _UPDATED_DAYS * 86400:
            return refused(f"start is more than {_UPDATED_DAYS} days before the current date")
        earliest = max(now - _DELETED_DAYS * 86400, self._purged_at or 0.0)
        if kind == "deleted" and start < _minute(earliest):
            return refused(f"start is before the earliest date available, {sf_datetime(_minute(earliest))}")
        covered = min(end, _minute(now))
        if kind == "updated":
            ids = [i for i, r in self.users.items()
                   if start <= datetime.fromisoformat(r["SystemModstamp"]).timestamp() < covered]
            body: dict[str, Any] = {"ids": ids, "latestDateCovered": sf_datetime(covered)}
        else:
            ids = [i for i, when in self.deleted_log if start <= when < covered]
            body = {"deletedRecords": [{"id": i, "deletedDate": sf_datetime(w)} for i, w in self.deleted_log
                                       if start <= w < covered],
                    "earliestDateAvailable": sf_datetime(_minute(earliest)), "latestDateCovered": sf_datetime(covered)}
        if len(ids) > self.id_limit:
            return 400, [{"message": f"More than {self.id_limit} ids in the window; choose start and end dates "
                                     "closer together", "errorCode": "EXCEEDED_ID_LIMIT"}]
        return 200, body

    def _query(self, soql: str, headers: dict[str, str]) -> tuple[int, Any]:
        try:
            select = parse_select(soql)
        except SoqlError as exc:
            return 400, [{"message": str(exc), "errorCode": "MALFORMED_QUERY"}]
        if select.sobject != "User":
            return 400, [{"message": f"sObject type '{select.sobject}' is not supported.", "errorCode": "INVALID_TYPE"}]
        for name in select.fields + select.referenced:
            if name not in USER_FIELDS:
                return 400, [{"message": f"No such column '{name}' on entity 'User'.", "errorCode": "INVALID_FIELD"}]
        rows = [r for r in self.users.values() if select.matches(r)][:select.limit]
        records = [{"attributes": {"type": "User", "url": f"/services/data/{self.version}/sobjects/User/{r['Id']}"},
                    **{f: r.get(f) for f in select.fields}} for r in rows]
        options = headers.get("sforce-query-options", "")
        m = re.search(r"batchSize=(\d+)", options)
        batch = max(200, min(2000, int(m.group(1)))) if m else 2000
        cursor = "01g" + secrets.token_hex(6).upper()
        self._cursors[cursor] = (records, batch)
        return self._next_batch(cursor, 0)

    def _next_batch(self, cursor: str, start: int) -> tuple[int, Any]:
        if cursor not in self._cursors:
            return 400, [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}]
        records, batch = self._cursors[cursor]
        end = start + batch
        body: dict[str, Any] = {"totalSize": len(records), "done": end >= len(records),
                                "records": records[start:end]}
        if end < len(records):
            body["nextRecordsUrl"] = f"/services/data/{self.version}/query/{cursor}-{end}"
        if self.batch_edits:
            body = self.batch_edits.pop(0)(body)
        return 200, body

    def _record(self, method: str, record_id: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        record = self.users.get(record_id) or next((u for i, u in self.users.items() if i[:15] == record_id), None)
        if record is None:
            return 404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
        if method == "GET":
            fields = query.get("fields", "").split(",") if query.get("fields") else sorted(USER_FIELDS)
            return 200, {"attributes": {"type": "User"}, **{f: record.get(f) for f in fields}}
        if method == "PATCH":
            result = self._save(record["Id"], body)
            return (204, None) if result["success"] else (400, _as_errors(result["errors"]))
        if method == "DELETE":
            return 400, [{"errorCode": "INVALID_TYPE_FOR_OPERATION", "message": "entity type cannot be deleted"}]
        return 405, [{"errorCode": "METHOD_NOT_ALLOWED", "message": f"HTTP Method '{method}' not allowed."}]

    def _collection(self, method: str, body: Any) -> tuple[int, Any]:
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            return 400, [{"message": "records is required", "errorCode": "JSON_PARSER_ERROR"}]
        if len(records) > 200:
            return 400, [{"message": "Record limit reached. Cannot submit more than 200 records into this call",
                          "errorCode": "EXCEEDED_ID_LIMIT"}]
        snapshot = {k: dict(v) for k, v in self.users.items()}
        taken = self._usernames()
        results = []
        for rec in records:
            values = {k: v for k, v in rec.items() if k not in ("attributes", "id")}
            if (rec.get("attributes") or {}).get("type") != "User":
                results.append({"success": False, "errors": [{"statusCode": "INVALID_TYPE", "message":
                                "Must send a concrete entity type.", "fields": []}]})
            elif method == "POST" and rec.get("id"):
                results.append({"success": False, "errors": [{"statusCode": "INVALID_FIELD", "message":
                                "cannot specify Id in an insert call", "fields": ["Id"]}]})
            else:
                results.append(self._save(rec.get("id") if method == "PATCH" else None, values, taken))
        if body.get("allOrNone") and not all(r["success"] for r in results):
            self.users = snapshot
            results = [r if not r["success"] else {"id": r.get("id"), "success": False, "errors": [
                {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "Record rolled back because not all "
                 "records were valid and the request was using AllOrNone header", "fields": []}]} for r in results]
        return 200, results

    def _usernames(self) -> dict[str, str]:
        """Lower-cased Username -> Id: Usernames are unique without regard to case."""
        return {str(u.get("Username")).lower(): i for i, u in self.users.items()}

    def _save(self, record_id: str | None, values: Any, taken: dict[str, str] | None = None) -> dict[str, Any]:
        def error(code: str, message: str, fields: list[str]) -> dict[str, Any]:
            return {"id": record_id, "success": False,
                    "errors": [{"statusCode": code, "message": message, "fields": fields}]}

        if not isinstance(values, dict):
            return error("JSON_PARSER_ERROR", "expected an object", [])
        for name in values:
            if name not in USER_FIELDS:
                return error("INVALID_FIELD", f"No such column '{name}' on sobject of type User", [name])
            if name in _READ_ONLY:
                return error("INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {name}.", [name])
        current = self.users.get(record_id, {}) if record_id else {}
        if record_id and not current:
            return error("ENTITY_IS_DELETED", "entity is deleted", [])
        if values.get("ManagerId") is not None:
            problem = self._manager_problem(record_id, values["ManagerId"])
            if problem is not None:
                return error(*problem, ["ManagerId"])
            values = {**values, "ManagerId": self._user_id(values["ManagerId"])}
        merged = {**current, **values}
        missing = [f for f in REQUIRED_USER_FIELDS if merged.get(f) in (None, "")]
        if missing:
            return error("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        if len(str(merged["Alias"])) > 8:
            return error("STRING_TOO_LONG", "Alias: data value too large", ["Alias"])
        if "@" not in str(merged["Username"]):
            return error("INVALID_NEW_VALUE", "Username: invalid format", ["Username"])
        taken = self._usernames() if taken is None else taken
        username = str(merged["Username"]).lower()
        if taken.get(username, record_id) != record_id:
            return error("DUPLICATE_USERNAME", "Duplicate Username.<br>The username already exists in this "
                         "or another Salesforce organization.", ["Username"])
        if record_id:
            taken.pop(str(current.get("Username")).lower(), None)
            merged["LastModifiedDate"] = merged["SystemModstamp"] = self.stamp()
            self.users[record_id] = merged
        else:
            record_id = self._insert(merged)
        taken[username] = record_id
        return {"id": record_id, "success": True, "errors": []}


    def _user_id(self, value: str) -> str:
        """The 18-character Id of the User a 15- or 18-character id names."""
        return value if value in self.users else next(i for i in self.users if i[:15] == value[:15])

    def _manager_problem(self, record_id: str | None, value: Any) -> tuple[str, str] | None:
        """Why ``value`` cannot be a User's ``ManagerId`` (a reference to a User), as the API says it."""
        if not isinstance(value, str) or not _RECORD_ID.fullmatch(value):
            return "MALFORMED_ID", f"Manager ID: id value of incorrect type: {value}"
        if not value.startswith("005"):
            return "FIELD_INTEGRITY_EXCEPTION", f"Manager ID: id value of incorrect type: {value}"
        if not any(i[:15] == value[:15] for i in self.users):
            return "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"
        if record_id is not None and record_id[:15] == value[:15]:
            return "FIELD_INTEGRITY_EXCEPTION", "Manager: a user cannot be their own manager"
        return None


def _unparsable(body: Any, *, collection: bool) -> str | None:
    """Why the API cannot deserialize a write's body (one record, or a collection's
    ``records``): a value of the wrong JSON type for a boolean field. None when it can."""
    records = (body.get("records") if isinstance(body, dict) else None) if collection else [body]
    for record in records or []:
        if not isinstance(record, dict):
            continue
        for name in _BOOLEAN_FIELDS:
            value = record.get(name)
            if value is not None and not isinstance(value, bool):
                return (f"Cannot deserialize instance of boolean from VALUE_STRING value {value} or request may be "
                        "missing a required field at [line:1, column:2]")
    return None


def _minute(when: float) -> float:
    """A time with its seconds dropped, as the replication resources take their dates."""
    return float(int(when // 60) * 60)


def sf_datetime(when: float) -> str:
    """``2013-05-08T21:20:00.000+0000``: how the REST API writes a dateTime."""
    moment = datetime.fromtimestamp(when, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _as_errors(save_errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A SaveResult's errors as a single-record endpoint answers them."""
    return [{"message": e["message"], "errorCode": e["statusCode"], "fields": e.get("fields", [])}
            for e in save_errors]


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _with_query(url: str, params: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _page(text: str) -> bytes:
    return (f"<!doctype html><html><head><title>Error</title></head><body><p id=\"error\">{text}</p>"
            "</body></html>").encode()


def _consent_page(ask: dict[str, str], problem: str) -> bytes:
    hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                     for k, v in ask.items())
    return (
        "<!doctype html><html><head><title>Login | Salesforce</title></head><body>"
        f'<p id="problem">{html.escape(problem)}</p>'
        '<form method="post" action="/services/oauth2/authorize">' + hidden +
        '<label>Username <input id="username" name="username"></label>'
        '<label>Password <input id="password" name="password" type="password"></label>'
        "<p>idsync is requesting access to: Access the identity URL service; Manage user data via APIs; "
        "Perform requests at any time</p>"
        '<button id="oaapprove" name="decision" value="allow" type="submit">Allow</button>'
        '<button id="oadeny" name="decision" value="deny" type="submit">Deny</button>'
        "</form></body></html>").encode()


def _handler(org: FakeSalesforce) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any, location: str | None = None) -> None:
            # bytes are sent as they are: an answer that is not JSON
            data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            if location is not None:
                self.send_header("Location", location)
            if data:
                html_page = isinstance(body, bytes) and body.startswith(b"<!doctype html>")
                self.send_header("Content-Type", "text/html;charset=UTF-8" if html_page
                                 else "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            if org.api_allowance is not None:
                self.send_header("Sforce-Limit-Info", f"api-usage={org.api_calls}/{org.api_allowance}")
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            if parts.path == "/services/oauth2/authorize" and self.command in ("GET", "POST"):
                form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                status, page, location = org.authorize(self.command, query, form)
                self._answer(status, page, location)
                return
            if parts.path == "/services/oauth2/token" and self.command == "POST":
                form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                self._answer(*org.token(form))
                return
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._answer(400, [{"message": "malformed JSON", "errorCode": "JSON_PARSER_ERROR"}])
                return
            self._answer(*org.api(self.command, parts.path, query, headers, body))

        do_GET = do_POST = do_PATCH = do_DELETE = _handle

    return Handler
