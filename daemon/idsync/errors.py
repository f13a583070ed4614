"""The exceptions idsync raises, named by what the caller must do.

    IdsyncError                      base; never raised itself
    +-- UsageError                   a command line that cannot be acted on (exit EX_USAGE)
    +-- ConfigError                  fix a file; carries file, key, problem (exit EX_CONFIG)
    |   +-- ConfigErrors             several of them at once (``errors``)
    |   +-- ConfigWarning            valid, but idsync does not act on it: told, never fatal
    |       +-- ConfigNote           valid and acted on, worth knowing (a value set elsewhere)
    +-- QueryError                   a bad ``_queryFilter``; carries the position (exit EX_DATAERR)
    +-- ScriptError                  a script failed to compile or run
    |   +-- ScriptTimeout            it ran past its time limit
    +-- ObjectError                  one object failed; record it and go on with the run
    |   +-- NotFound                 the object is gone (deleted between pages: not an error in recon)
    |   +-- RevisionMismatch         optimistic concurrency lost; re-read and retry
    |   |   +-- AlreadyExists        a create whose id another object holds (maybe created a moment
    |   |                            before, by another writer): update that one instead, or give up
    |   +-- ObjectRejected           the peer refused this object (schema, uniqueness, value)
    |   +-- CryptoFailed             a value cannot be encrypted, decrypted or hashed (no key, wrong key)
    +-- PeerError                    the peer cannot be used; stop the pass before any delete
    |   +-- PeerUnavailable          unreachable, timed out (exit EX_UNAVAILABLE); retry later
    |   |   +-- WriteConflict        the store rolled the transaction back to break a deadlock with
    |   |                            another writer (or a serialization conflict): run it again
    |   +-- AuthenticationFailed     credentials refused (exit EX_NOPERM)
    |   +-- TLSError                 certificate verification failed (exit EX_UNAVAILABLE)
    |   +-- PeerMisconfigured        the peer answered, but has not what the configuration names,
    |                                such as a base context; fix the configuration (exit EX_CONFIG)
    |   +-- SyncTokenExpired         liveSync: the peer can no longer tell the changes since the
    |                                stored token; reconcile in full and start from a fresh token
    |   +-- ReadDenied               the system's provisioner denies reading it (``operationOptions``
    |                                GET or SEARCH); nothing was read (exit EX_CONFIG; the API: 403)
    +-- RunAborted                   the run must stop now (safety limit, cancel, lock held)
        +-- SafetyLimitExceeded      empty source set or too many deletes
        +-- RunCanceled              Ctrl-C, SIGTERM, timeout
        +-- RunLocked                another run of the same mapping or job holds the lock
        +-- RunTakenOver             the run (or its partition) was ended or handed to another
                                     node while this process was silent: write nothing more

Messages never contain secret values: callers build them from names, never from
configuration values that might be passwords or tokens. An exception idsync did
not raise on purpose is told with ``internal_message``, which keeps a database
driver's SQL text and parameters (values of the objects) out of what it says.
"""

from __future__ import annotations

import json
import os

__all__ = [
    "AlreadyExists",
    "AuthenticationFailed",
    "ConfigError",
    "ConfigErrors",
    "ConfigNote",
    "ConfigWarning",
    "CryptoFailed",
    "IdsyncError",
    "NotFound",
    "ObjectError",
    "ObjectRejected",
    "OperationDenied",
    "PeerError",
    "PeerMisconfigured",
    "PeerUnavailable",
    "QueryError",
    "ReadDenied",
    "RevisionMismatch",
    "RunAborted",
    "RunCanceled",
    "RunLocked",
    "RunTakenOver",
    "SafetyLimitExceeded",
    "ScriptError",
    "ScriptTimeout",
    "SyncTokenExpired",
    "TLSError",
    "UsageError",
    "WriteConflict",
    "http_status",
    "internal_message",
    "names_unknown",
]

_MAX_DETAIL = 200


class IdsyncError(Exception):
    """Base of every error idsync raises on purpose."""

    exit_code: int = 1


class UsageError(IdsyncError):
    """The command line names something ambiguous or impossible: say what to type instead."""

    exit_code = os.EX_USAGE


class ConfigError(IdsyncError):
    """A configuration file is wrong: names the file, the key and the problem."""

    exit_code = os.EX_CONFIG

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        super().__init__(f"{file}: {key}: {problem}" if key else f"{file}: {problem}")

    @classmethod
    def unreadable(cls, file: str, exc: OSError | UnicodeDecodeError, key: str = "") -> ConfigError:
        """``file`` cannot be read as text: why, without the bytes around (a secret may be among them)."""
        if isinstance(exc, UnicodeDecodeError):
            raw = exc.object if isinstance(exc.object, bytes) else bytes(exc.object)
            line = raw[:exc.start].count(b"\n") + 1
            return cls(file, key, f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at position {exc.start} (line {line})")
        return cls(file, key, f"cannot be read: {exc.strerror or type(exc).__name__}")


class ConfigErrors(ConfigError):
    """Several problems found in one file; ``errors`` lists each."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.file, first.key, first.problem)
        self.args = ("\n".join(str(e) for e in errors),)

    def __str__(self) -> str:
        return str(self.args[0])


class ConfigWarning(ConfigError):
    """Valid configuration that idsync reads and does not act on (a PingIDM feature it
    does not have, a schedule it does not run): ``idsync validate`` prints it as a warning
    and still exits 0."""


class ConfigNote(ConfigWarning):
    """Valid configuration that idsync acts on and the operator should know of, such as
    a value the admin console set over a file's: ``idsync validate`` prints it as a note."""


class QueryError(IdsyncError):
    """A ``_queryFilter`` (or native query) does not parse."""

    exit_code = os.EX_DATAERR

    def __init__(self, message: str, text: str = "", position: int | None = None) -> None:
        self.text = text
        self.position = position
        if position is not None:
            message = f"{message} at position {position}"
        super().__init__(message)


class ScriptError(IdsyncError):
    """A mapping script failed to compile or threw; ``thrown``: a plain object it threw
    (PingIDM's ``{code, message}``, or ``{code, message, detail}``), as it was."""

    thrown: object = None
    # The line of the program where it failed, if the engine told it.
    line: int | None = None
    # Where the script lives, as the message starts (``file: key (origin)``), when that
    # is not the script's own name: what an answer to a client leaves out.
    where: str | None = None

    @property
    def status(self) -> int | None:
        """The HTTP status a thrown ``{code, message}`` asks for (400-599), if any."""
        value = self.thrown
        if isinstance(value, dict) and isinstance(value.get("code"), int) and 400 <= value["code"] <= 599:
            return int(value["code"])
        return None

    @property
    def thrown_message(self) -> str | None:
        """The ``message`` of a thrown ``{code, message}`` (with a ``status``), if it has one:
        what the script wants its caller told, as it wrote it."""
        value = self.thrown
        if self.status is None or not isinstance(value, dict) or value.get("message") is None:
            return None
        message = value["message"]
        return message if isinstance(message, str) else json.dumps(message)

    @property
    def thrown_detail(self) -> object:
        """The ``detail`` of a thrown ``{code, message, detail}`` (with a ``status``), if any."""
        value = self.thrown
        return value.get("detail") if self.status is not None and isinstance(value, dict) else None


class ScriptTimeout(ScriptError):
    """A mapping script ran past its time limit."""


class ObjectError(IdsyncError):
    """One object could not be processed; the run records it and goes on."""


class NotFound(ObjectError):
    """The object does not exist (any more)."""


class RevisionMismatch(ObjectError):
    """The object changed since it was read (expected revision differs)."""


class AlreadyExists(RevisionMismatch):
    """A create of an id another object holds: the precondition "it does not exist" failed
    (PingIDM's 412), whether the object was there before or another writer's create of
    the same id came first."""


class ObjectRejected(ObjectError):
    """The peer refused this one object; ``status``: the HTTP status an object script
    asked for by throwing PingIDM's ``{code, message}`` (the API answers it); ``reply``
    and ``detail``: what the API answers, when it is not the message (which may name the
    server's files, for the operator)."""

    status: int | None = None
    reply: str | None = None
    detail: object = None


class OperationDenied(ObjectRejected):
    """The system's provisioner denies this kind of write (PingIDM's ``operationOptions``)."""

    status = 403


class CryptoFailed(ObjectError):
    """A value could not be encrypted, decrypted or hashed; the message names the key alias, never the value."""


class PeerError(IdsyncError):
    """The external system or store cannot be used at all."""

    exit_code = os.EX_UNAVAILABLE


class PeerUnavailable(PeerError):
    """Unreachable, refused or timed out."""


class WriteConflict(PeerUnavailable):
    """The store chose this transaction to roll back, to break a deadlock with another
    writer's (or on a serialization conflict): nothing of it was written, and running it
    again from the start is what the database asks for."""


class AuthenticationFailed(PeerError):
    """The peer refused the credentials."""

    exit_code = os.EX_NOPERM


class TLSError(PeerError):
    """The peer's certificate did not verify."""


class PeerMisconfigured(PeerError):
    """The peer is up and answered, but lacks what the configuration points at (a base
    context that does not exist): a configuration error, not an outage."""

    exit_code = os.EX_CONFIG


class SyncTokenExpired(PeerError):
    """liveSync: the peer cannot honour the stored sync token any more (its change log
    was trimmed, the server was restored, the token is unknown to it). Nothing was
    applied from it; the caller reconciles in full and takes a fresh token."""


class ReadDenied(PeerError):
    """The system's provisioner denies this kind of read (PingIDM's ``operationOptions``:
    ``GET``, a read by id, or ``SEARCH``, a query or listing): nothing was asked of the
    system. ``quiet``: its ``onDeny`` is ``DO_NOTHING``, so a caller that can answer
    nothing (a query, a read by id) does so instead of failing."""

    exit_code = os.EX_CONFIG

    def __init__(self, message: str, *, quiet: bool) -> None:
        super().__init__(message)
        self.quiet = quiet


class RunAborted(IdsyncError):
    """The run stops now and is recorded FAILED or CANCELED."""


class SafetyLimitExceeded(RunAborted):
    """Empty source set, or more deletes than the mapping allows."""


class RunCanceled(RunAborted):
    """Stopped by the operator, a signal or a timeout."""


class RunLocked(RunAborted):
    """Another run holds the lock."""

    exit_code = os.EX_TEMPFAIL


class RunTakenOver(RunAborted):
    """The run was ended, or its partition handed to another worker, while this process was
    silent for longer than the cluster's ``stall_timeout`` (paused, starved, cut off from the
    store): the page that found out is rolled back, and nothing more is written or recorded."""

    def __init__(self, message: str = "the run was ended by another node or process that took this one for dead "
                 "while it was silent (paused, starved or cut off from the store for longer than the cluster's "
                 "stall_timeout); nothing more was written") -> None:
        super().__init__(message)


def http_status(exc: IdsyncError) -> int:
    """The status PingIDM answers for this failure: the API's answer, and the code a script
    reads of a failed ``openidm`` call it catches (``e.javaException.getCode()``)."""
    if isinstance(exc, ObjectRejected) and exc.status is not None:
        return exc.status  # an object script threw PingIDM's {code, message}; a broken policy
    if isinstance(exc, QueryError | ObjectRejected):
        return 400
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, RevisionMismatch):
        return 412
    if isinstance(exc, RunLocked):
        return 409
    if isinstance(exc, ConfigError):
        return 404 if names_unknown(exc) else 500
    if isinstance(exc, ReadDenied):
        return 403
    if isinstance(exc, PeerError):
        return 503
    return 500


def names_unknown(exc: ConfigError) -> bool:
    """A request naming a mapping, system or object type the configuration lacks."""
    return any(m in exc.problem for m in ("unknown mapping", "no such system", "no object type"))


def internal_message(exc: BaseException) -> str:
    """An unexpected exception as a run record, a status file or an answer may
    show it: its class and the first line of what it says, never more.

    SQLAlchemy's errors print the statement and its parameters after the
    driver's message (``[SQL: ...]``, ``[parameters: ...]``); the driver's own
    exception (``orig``) has the message alone, so that is the one told.
    """
    orig = getattr(exc, "orig", None)
    inner = orig if isinstance(orig, BaseException) else exc
    lines = str(inner).strip().splitlines()
    first = lines[0].split("[SQL:")[0].strip() if lines else ""
    if len(first) > _MAX_DETAIL:
        first = first[:_MAX_DETAIL] + "..."
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__
