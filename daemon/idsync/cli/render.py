"""Human-readable run summaries and audit listings for the terminal."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["console", "fits", "render_audit", "render_run", "render_runs"]


def console() -> Console:
    """A console on the current standard output, its width decided now: the terminal's,
    ``COLUMNS``, or 160 where output goes to a pipe or a file."""
    return Console(highlight=False, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)


def _nonzero(d: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (d or {}).items() if v) or "-"


def render_run(run_id: str, state: str, message: str | None, summary: Mapping[str, Any], *, dry_run: bool,
               started: dt.datetime | None = None, ended: dt.datetime | None = None,
               gone: str | None = None) -> None:
    """One run in full. ``gone``: why an ACTIVE run's process is known to be gone (``RunStore.gone``)."""
    c = console()
    c.print(f"run {run_id}: {summary.get('mapping', '')} [bold]{state}[/bold]" + (" (dry run)" if dry_run else ""))
    if message:
        # Whole and literal: an operator searches for it, and it may quote a source value.
        c.print(f"  message:    {escape(message)}", soft_wrap=True)
    if started is not None:
        c.print(f"  started:    {_time(started)}" + (f"   ended: {_time(ended)}" if ended
                                                     else "   (not running)" if gone else "   (running)"))
    if gone:
        c.print(escape(f"  note:       {gone}: the next run of {summary.get('mapping') or 'its mapping'} "
                       "or the daemon's next start records it FAILED"), soft_wrap=True)
    progress = summary.get("progress", {})
    src = progress.get("source", {}).get("existing", {})
    tgt = progress.get("target", {}).get("existing", {})
    c.print(f"  source:     {summary.get('sourceObject', '')}: {src.get('processed', 0)} processed")
    c.print(f"  target:     {summary.get('targetObject', '')}: {tgt.get('processed', 0)} examined in the target phase")
    c.print(f"  situations: {_nonzero(summary.get('situationSummary'))}")
    c.print(f"  actions:    {_nonzero(summary.get('actionSummary'))}")
    c.print(f"  changes:    {_nonzero(summary.get('changes'))}" + ("  (would be made)" if dry_run else ""))
    c.print(f"  status:     {_nonzero(summary.get('statusSummary'))}")
    if "duration" in summary:
        c.print(f"  duration:   {summary['duration'] / 1000:.2f} s  (phases: "
                + ", ".join(f"{k} {v:.2f} s" for k, v in summary.get("phases", {}).items()) + ")")
    # The runs that carried this one's writes on, and that applied again the objects naming those it linked.
    for label, key in (("carried on", "onward"), ("applied again", "referrers")):
        for run in summary.get(key) or []:
            c.print(escape(f"  {label}: {run.get('mapping')}: run {str(run.get('id'))[:8]} {run.get('state')}: "
                           f"{_nonzero(run.get('counts'))}"), soft_wrap=True)
    errors = summary.get("errors") or []
    if errors:
        c.print(f"  errors ({summary.get('errorCount', len(errors))}):")
        for e in errors[:20]:
            ids = " ".join(f"{k}={e[k]}" for k in ("source_id", "target_id") if e.get(k))
            if e.get("link_qualifier") not in (None, "default"):  # a mapping with several link qualifiers
                ids += f" linkQualifier={e['link_qualifier']}"
            c.print(escape(f"    - {e.get('message')}" + (f"  [{ids}]" if ids else "")), soft_wrap=True)


def _time(when: dt.datetime) -> str:
    """In this machine's time zone (``TZ``), named: a time without its zone misleads across hosts."""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    return aware.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def render_runs(runs: Sequence[Mapping[str, Any]], gone: Mapping[str, str] | None = None, *,
                nodes: bool = False) -> None:
    """The runs as a table, or one block per run when the table would not fit the terminal:
    mapping names are never cut, whatever the width. Failed runs end with their reason, and
    ACTIVE ones whose process is gone (``gone``: why, by run id) say so. ``nodes``: with
    the node that ran each (cluster mode)."""
    if not runs:
        console().print("no runs recorded yet")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("run", "mapping", *(("node",) if nodes else ()), "state", "started", "ended", "duration",
                "situations", "actions", "changes", "errors"):
        table.add_column(col, no_wrap=col in ("run", "mapping", "node"))
    for r in runs:
        summary = r["summary"] or {}
        ended: dt.datetime | None = r["ended"]
        table.add_row(r["id"][:8], r["mapping"], *((r.get("node") or "-",) if nodes else ()), _state(r),
                      _time(r["started"]), _time(ended) if ended else "-",
                      _duration(r), _nonzero(summary.get("situationSummary")),
                      _nonzero(summary.get("actionSummary")), _nonzero(summary.get("changes")),
                      str(_error_count(r)))
    out = console()
    if fits(out, table):
        out.print(table)
    else:
        for r in runs:
            _print_run_block(r, nodes=nodes)
    for r in runs:
        if r["state"] == "FAILED" and r["message"]:
            console().print(f"run {r['id'][:8]} FAILED: {escape(r['message'])}", soft_wrap=True)
        elif r["id"] in (gone or {}):
            console().print(f"run {r['id'][:8]} ACTIVE, but {escape((gone or {})[r['id']])}: the next run of "
                            f"{escape(r['mapping'])} or the daemon's next start records it FAILED", soft_wrap=True)


def fits(console: Console, table: Table) -> bool:
    """Whether ``table`` fits the terminal with no cell cut short (its columns end cut words
    with an ellipsis rather than folding them, so a cut shows)."""
    for column in table.columns:
        column.overflow = "ellipsis"
    with console.capture() as captured:
        console.print(table)
    return "…" not in captured.get()


def _print_run_block(r: Mapping[str, Any], *, nodes: bool) -> None:
    summary = r["summary"] or {}
    ended: dt.datetime | None = r["ended"]
    c = console()
    c.print(f"{r['id'][:8]}  {r['mapping']}" + (f"  on {r.get('node') or '-'}" if nodes else ""), soft_wrap=True)
    c.print(f"  {_state(r)}  started {_time(r['started'])}"
            + (f"  ended {_time(ended)}" if ended else "") + f"  ({_duration(r)})  errors {_error_count(r)}")
    for label, key in (("situations", "situationSummary"), ("actions", "actionSummary"), ("changes", "changes")):
        c.print(f"  {label + ':':<11} {_nonzero(summary.get(key))}")


def _state(r: Mapping[str, Any]) -> str:
    return str(r["state"]) + (" (dry)" if r["dry_run"] else "")


def _duration(r: Mapping[str, Any]) -> str:
    started: dt.datetime = r["started"]
    ended: dt.datetime | None = r["ended"]
    return f"{(ended - started).total_seconds():.1f}s" if ended else "running"


def _error_count(r: Mapping[str, Any]) -> int:
    """The objects that failed, plus the run's own failure: a FAILED run never shows 0 errors."""
    count = int((r["summary"] or {}).get("errorCount", 0))
    return count + 1 if r["state"] == "FAILED" and r["message"] else count


def render_audit(entries: Sequence[Mapping[str, Any]]) -> None:
    if not entries:
        return
    c = console()
    c.print(f"  objects ({len(entries)} shown):")
    for e in entries:
        ids = " ".join(f"{k}={e[k]}" for k in ("source_id", "target_id") if e.get(k))
        if e.get("link_qualifier") not in (None, "default"):  # a mapping with several link qualifiers
            ids += f" linkQualifier={e['link_qualifier']}"
        if e.get("ambiguous"):  # an AMBIGUOUS correlation's targets, one to link by hand
            ids += f" candidates={','.join(str(i) for i in e['ambiguous'])}"
        what = e.get("message") or ""
        changes = e.get("changes")
        if changes and not what:
            what = ", ".join(sorted(changes))
        # Literal: a message or an id may hold brackets ("managed/<type>[/<id>]"), which
        # markup would take for tags, drop or fail on.
        c.print(escape(f"    {e['status']:<8} {e.get('situation') or '':<20} {e.get('action') or '':<9} {ids}"
                       + (f"  {what}" if what else "")), soft_wrap=True)
