"""A listing read and decoded in a second process, so both cores work.

A recon's source phase is two jobs: reading the directory (libldap's parsing
and turning each entry into an object, which holds the GIL: a thread would
not run beside the engine) and the engine's work on each page. Here a child
process does the first: it opens its own connection, pages through the
listing as the connector does in process, and sends each page of objects,
pickled, through a pipe; the caller unpickles it (a fraction of decoding it)
while the child reads the next. The pipe's buffer is the only queue: a child
ahead of the engine waits, so memory stays that of a page or two.

Completeness is the connector's: a failure in the child (size limit, the
connection lost, a bad entry that stops the listing) is sent as the error it
was and raised by the caller; a child that ends without saying the listing is
complete (killed, crashed) is a failed read, never a short one. Log events of
the child are sent back and logged by the caller, with its context (the run).

Children come from a fork server started once per process (``forkserver``):
a fork of the caller itself could inherit locks held by its other threads.
Where no process can be started, the listing is read in process. The server is
ended with the process (``_end_fork_server``): left to notice the end itself, it
would do so only once its imports are done, holding meanwhile the standard output
and error it inherited, where a pipe's reader (``idsync recon ... | tee``) waits.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import multiprocessing
import os
import pickle
import signal
from collections.abc import Callable, Iterator, MutableMapping
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from typing import Any

import structlog

from idsync.errors import IdsyncError, PeerError, PeerUnavailable
from idsync.resource import Obj

__all__ = ["read_in_child", "start_fork_server", "two_cores"]

log = structlog.get_logger("idsync.connectors.ldap")

_PAGE, _END, _ERROR, _ERROR_TEXT, _LOG = "page", "end", "error", "error_text", "log"
_context: Any = None
_COLLECT_EVERY = 50  # pages between the child's collector passes (``_serve``)


def two_cores() -> bool:
    """Whether a second process can run beside this one (the cores this process may
    use; all of the machine's where a sandbox refuses to say)."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except OSError:
        return (os.cpu_count() or 1) > 1


def _fork_server() -> Any:
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        # The server imports the program and the connector once; each child forks from
        # it ready to read (with the program already imported, a child does not import it again).
        context.set_forkserver_preload(["__main__", "idsync.connectors.ldap.connector"])
        _context = context
        atexit.register(_end_fork_server)
    return _context


def _end_fork_server() -> None:
    """At the process's exit: end the fork server at once (``SIGKILL``: it holds nothing of
    the run's) and reap it, rather than leave it to see the end of its pipe once its
    imports are done. The listing children it forked are the caller's, ended by then."""
    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if server is None or pid is None:
        return  # never started
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(Exception):  # the interpreter's own; reaps the server, removes its socket
        server._stop()


def start_fork_server() -> None:
    """Start the fork server now (a new interpreter that imports the program and the
    connector: about half a second of the other core), so that it starts while the
    caller prepares its run instead of while the caller waits for its first page."""
    if not two_cores():
        return
    with contextlib.suppress(OSError):  # the listing then says why it reads in process
        _fork_server()
        forkserver.ensure_running()


def read_in_child(listing: Callable[..., Iterator[list[Obj]]], args: tuple[Any, ...],
                  in_process: Callable[[], Iterator[list[Obj]]]) -> Iterator[list[Obj]]:
    """The pages of ``listing(*args)`` run in a child process (``listing`` a module-level
    function, ``args`` picklable); ``in_process()`` when no child can be started."""
    try:
        context = _fork_server()
        reader, writer = context.Pipe(duplex=False)
        child = context.Process(target=_serve, args=(listing, args, writer), daemon=True,
                                name="idsync-ldap-listing")
        child.start()
    except OSError as exc:
        log.warning("ldap.listing_in_process", reason=str(exc))
        yield from in_process()
        return
    writer.close()
    try:
        while True:
            try:
                kind, value = pickle.loads(reader.recv_bytes())
            except EOFError:
                child.join(5)
                raise PeerUnavailable(f"ldap: the process reading the listing ended before it was complete "
                                      f"(exit code {child.exitcode}); nothing was taken from a partial read") from None
            if kind == _PAGE:
                yield value
            elif kind == _LOG:
                level, event, fields = value
                getattr(log, level)(event, **fields)
            elif kind == _END:
                return
            elif kind == _ERROR_TEXT:
                raise _rebuilt(*value)
            else:
                raise value
    finally:
        reader.close()
        if child.is_alive():
            child.kill()  # the caller stopped early, or failed: the rest is not needed
        child.join()


def _serve(listing: Callable[..., Iterator[list[Obj]]], args: tuple[Any, ...], writer: Connection) -> None:
    """In the child: send each page, then the end, or the error that stopped the listing."""
    # Ctrl-C, a closed terminal or a signal to the process group is the caller's to act
    # on (a cancel at a page boundary, recorded CANCELED): the child reads on until the
    # caller stops reading, which ends it (a closed pipe, or a kill).
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # What the child was forked with lives as long as it does: the collector's passes
    # need not walk it for every page's garbage (about a quarter of the child's CPU).
    # Nor need they run while a page is decoded: its tens of thousands of new lists and
    # dicts, all alive until the page is sent, set off a pass every 700 of them that
    # finds nothing to free (another fifth of the child's CPU). Entries hold no cycles;
    # what else may (an error's traceback) is collected every _COLLECT_EVERY pages.
    gc.freeze()
    gc.disable()

    def forward(_logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        name = event.pop("event", "")
        with contextlib.suppress(Exception):  # an unpicklable field: the event is lost, not the listing
            writer.send_bytes(pickle.dumps((_LOG, (method, name, event)), pickle.HIGHEST_PROTOCOL))
        raise structlog.DropEvent

    structlog.configure(processors=[forward], cache_logger_on_first_use=False)
    try:
        for n, page in enumerate(listing(*args), 1):
            writer.send_bytes(pickle.dumps((_PAGE, page), pickle.HIGHEST_PROTOCOL))
            del page
            if n % _COLLECT_EVERY == 0:
                gc.collect()
        writer.send_bytes(pickle.dumps((_END, None)))
    except BrokenPipeError:
        return  # the caller is gone or stopped reading
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the caller, which raises it
        with contextlib.suppress(BrokenPipeError):
            writer.send_bytes(_error(exc))
    finally:
        writer.close()


def _error(exc: BaseException) -> bytes:
    """``exc`` pickled: as itself when it survives the trip, else its class and text (an
    idsync error keeps its kind, so its exit code), anything else as a peer error."""
    if isinstance(exc, IdsyncError):
        try:
            payload = pickle.dumps((_ERROR, exc), pickle.HIGHEST_PROTOCOL)
            pickle.loads(payload)
            return payload
        except Exception:  # noqa: BLE001 - some take other arguments than their text
            return pickle.dumps((_ERROR_TEXT, (type(exc), str(exc))), pickle.HIGHEST_PROTOCOL)
    return pickle.dumps((_ERROR, PeerError(f"ldap: reading the listing failed: {type(exc).__name__}: {exc}")))


def _rebuilt(kind: type[IdsyncError], text: str) -> IdsyncError:
    error = kind.__new__(kind)
    Exception.__init__(error, text)
    return error
