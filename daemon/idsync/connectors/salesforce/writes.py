"""Writing Salesforce records: creates, updates and deactivations.

A batch of one op uses the single-record endpoints (``POST sobjects/User``,
``PATCH sobjects/User/{id}``); larger batches go through sObject Collections
(``POST``/``PATCH composite/sobjects``, 200 records a request, ``allOrNone``
false), so each record succeeds or fails on its own and 10,000 updates cost 50
requests (API versions before 42.0 have no Collections: one request a record).
A Collections request Salesforce refuses whole with a 400 (a record it cannot
deserialize, such as a string sent to a boolean field, fails every record of the
request with ``JSON_PARSER_ERROR``) is sent again one record a request, so that
record fails alone and the others are written. Salesforce users cannot be
deleted: a delete becomes ``IsActive = false`` and the result says so. When the org
fails part way through a batch (a limit that persists, an outage), the results of
what it wrote are kept and the rest fail with its error (``resource.interrupted``).
Field errors (``[{"statusCode" | "errorCode", "message", "fields"}]``) become
``ObjectRejected`` for that record alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from idsync.connectors.salesforce.client import SalesforceClient, error_text, errors_of
from idsync.errors import NotFound, ObjectError, ObjectRejected, PeerError, PeerUnavailable
from idsync.resource import Obj, WriteOp, WriteResult, failed, interrupted

__all__ = ["COLLECTION_SIZE", "UNDELETABLE", "RecordWriter"]

log = structlog.get_logger("idsync.connectors.salesforce_writes")

COLLECTION_SIZE = 200
# sObjects whose records cannot be deleted through the API, only deactivated.
UNDELETABLE = frozenset({"User"})
_READ_ONLY = frozenset({"_id", "_rev", "Id", "attributes", "CreatedDate", "CreatedById", "LastModifiedDate",
                        "LastModifiedById", "SystemModstamp", "Name", "LastLoginDate"})


class RecordWriter:
    """Writes one sObject type's records through one client."""

    def __init__(self, client: SalesforceClient, sobject: str, resource: str) -> None:
        self._client = client
        self._type = sobject
        self._resource = resource

    def write(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        results: dict[int, WriteResult] = {}
        creates = [op for op in ops if op.kind == "create"]
        changes: list[tuple[WriteOp, Obj]] = []
        for op in ops:
            if op.kind == "create":
                continue
            if not op.id:
                results[id(op)] = failed(op, NotFound(f"salesforce: {op.kind} {self._type} without an id"))
                continue
            if op.kind == "delete" and self._type not in UNDELETABLE:
                results[id(op)] = failed(op, ObjectRejected(f"salesforce: deleting {self._type} records "
                                                            "is not supported"))
                continue
            # Users cannot be deleted, only deactivated.
            fields = {"IsActive": False} if op.kind == "delete" else _writable(op.values)
            if not fields:
                results[id(op)] = self._done(op, op.id, {})
                continue
            changes.append((op, fields))
        try:
            self._send(creates, changes, results, one_by_one=len(ops) == 1 or not self._client.has_collections)
        except PeerError as error:
            # The org failed part way (a limit that persists, an outage): keep what it wrote.
            log.warning("salesforce.write_failed", resource=self._resource, kind="batch", id=None,
                        errors=[type(error).__name__], written=sum(r.ok for r in results.values()))
            return interrupted(ops, [results.get(id(op)) for op in ops], error)
        return [results[id(op)] for op in ops]

    def _send(self, creates: list[WriteOp], changes: list[tuple[WriteOp, Obj]], results: dict[int, WriteResult],
              *, one_by_one: bool) -> None:
        """Write ``creates`` and ``changes``, each result into ``results`` as it comes."""
        if one_by_one:
            for op in creates:
                results[id(op)] = self._create_one(op)
            for op, fields in changes:
                results[id(op)] = self._patch_one(op, fields)
        else:
            for start in range(0, len(creates), COLLECTION_SIZE):
                chunk = creates[start:start + COLLECTION_SIZE]
                records = [{"attributes": {"type": self._type}, **_writable(op.values)} for op in chunk]
                outcomes = self._collection("POST", records)
                for i, op in enumerate(chunk):
                    results[id(op)] = self._create_one(op) if outcomes is None else self._outcome(op, outcomes[i])
            for start in range(0, len(changes), COLLECTION_SIZE):
                pairs = changes[start:start + COLLECTION_SIZE]
                records = [{"attributes": {"type": self._type}, "id": op.id, **fields} for op, fields in pairs]
                outcomes = self._collection("PATCH", records)
                for i, (op, fields) in enumerate(pairs):
                    results[id(op)] = self._patch_one(op, fields) if outcomes is None \
                        else self._outcome(op, outcomes[i], fields)

    # -- single records -------------------------------------------------------

    def _create_one(self, op: WriteOp) -> WriteResult:
        response = self._client.call("POST", f"{self._client.base}/sobjects/{self._type}",
                                     json=_writable(op.values))
        if response.status_code in (200, 201):
            try:
                body = response.json()
            except ValueError:
                return failed(op, ObjectRejected(f"salesforce: creating {self._type}: the answer is not JSON"))
            return self._outcome(op, body if isinstance(body, dict) else {})
        return self._rejected(op, response.status_code, errors_of(response))

    def _patch_one(self, op: WriteOp, fields: Obj) -> WriteResult:
        response = self._client.call("PATCH", f"{self._client.base}/sobjects/{self._type}/{op.id}", json=fields)
        if response.status_code in (200, 204):
            return self._done(op, op.id or "", fields)
        return self._rejected(op, response.status_code, errors_of(response))

    # -- collections ----------------------------------------------------------

    def _collection(self, method: str, records: list[Obj]) -> list[dict[str, Any]] | None:
        """The SaveResult of each record, in order; None when Salesforce refused the request
        as a whole with a 400 (nothing in it was written): one record it could not read
        refuses them all, so the caller writes them one a request."""
        response = self._client.call(method, f"{self._client.base}/composite/sobjects",
                                     json={"allOrNone": False, "records": records})
        if response.status_code == 400:
            log.warning("salesforce.collection_refused", resource=self._resource, method=method,
                        records=len(records), errors=sorted({str(e.get("errorCode") or e.get("statusCode"))
                                                             for e in errors_of(response)}),
                        hint="writing these records one a request")
            return None
        if response.status_code != 200:
            raise PeerUnavailable(f"salesforce: {method} composite/sobjects refused: "
                                  f"{error_text(errors_of(response))}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, list) or len(body) != len(records):
            raise PeerUnavailable("salesforce: composite/sobjects answered with the wrong number of results")
        return [r if isinstance(r, dict) else {} for r in body]

    # -- results --------------------------------------------------------------

    def _outcome(self, op: WriteOp, outcome: dict[str, Any], fields: Obj | None = None) -> WriteResult:
        if not outcome.get("success"):
            return self._rejected(op, 400, list(outcome.get("errors") or []))
        if op.kind == "create":
            new_id = str(outcome.get("id"))
            log.debug("salesforce.created", resource=self._resource, id=new_id)
            return WriteResult(op, id=new_id, obj={**_writable(op.values), "_id": new_id})
        return self._done(op, op.id or "", fields or {})

    def _done(self, op: WriteOp, obj_id: str, fields: Obj) -> WriteResult:
        if op.kind == "delete":
            log.info("salesforce.deactivated", resource=self._resource, id=obj_id)
            return WriteResult(op, id=obj_id, obj={**(op.before or {}), **fields, "_id": obj_id},
                               message=f"{self._type} records cannot be deleted: {obj_id} deactivated "
                                       "(IsActive = false)")
        return WriteResult(op, id=obj_id, obj={**(op.before or {}), **fields, "_id": obj_id})

    def _rejected(self, op: WriteOp, status: int, errors: list[dict[str, Any]]) -> WriteResult:
        codes = {str(e.get("errorCode") or e.get("statusCode")) for e in errors}
        what = "deactivate" if op.kind == "delete" else op.kind
        text = f"salesforce: {what} {self._type}" + (f" {op.id}" if op.id else "") + f": {error_text(errors)}"
        error: ObjectError = NotFound(text) if status == 404 or codes & {"NOT_FOUND", "ENTITY_IS_DELETED"} \
            else ObjectRejected(text)
        log.warning("salesforce.write_failed", resource=self._resource, kind=op.kind, id=op.id,
                 errors=sorted(codes))
        return failed(op, error)


def _writable(values: Obj) -> Obj:
    return {k: v for k, v in values.items() if k not in _READ_ONLY}
