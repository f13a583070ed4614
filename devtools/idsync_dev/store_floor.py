"""The store's floor for a first recon: the rows that recon wrote, written again
without the engine, for the benchmarks.

A first recon of N users leaves, per user, one managed object, its searchable
values (``managed_properties``), a link and an audit row, and has held a claim of
the object while it ran. ``store_floor`` copies those tables' definitions, with
every index, under new names in the same database, and writes the same rows into
them the way the recon writes a page: 1,000 users' rows a transaction, through
``Store.insert_rows`` (``COPY`` on PostgreSQL, the driver's executemany
elsewhere), in the order the recon created them. Only the writes and commits are
timed; reading the rows back is not. What is left is what the database costs for
those rows, which no engine can go under: the ``ldapsearch`` floor's counterpart
on the store's side.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from idsync.store.database import Store
from idsync.store.tables import audit, claims, links, managed_objects, managed_properties, recon_runs
from sqlalchemy import Connection, MetaData, Select, Table, select
from sqlalchemy.sql.elements import quoted_name

__all__ = ["store_floor"]

_PAGE = 1000
_TABLES = (managed_objects, managed_properties, links, claims, audit)
_NAMES = tuple(t.name for t in _TABLES)
_RUN = "00000000-0000-7000-8000-000000000000"  # the claims' run: any id


def _copies(md: MetaData) -> dict[str, Table]:
    """The five tables under ``floor_`` names, their indexes renamed alike (PostgreSQL's
    index names are the schema's, not the table's)."""
    copies = {}
    for table in _TABLES:
        copy = table.to_metadata(md, name=f"floor_{table.name}")
        for index in copy.indexes:
            index.name = quoted_name(f"floor_{index.name}", None)
        copies[table.name] = copy
    return copies


class _Stream:
    """One table's rows in an order matching the objects' (by object id, in the database's
    own order), read through a server-side cursor and taken a page's objects at a time."""

    def __init__(self, conn: Connection, query: Select[Any], key: int | None) -> None:
        self._rows = conn.execution_options(stream_results=True, yield_per=5000).execute(query)
        self._key, self._next = key, self._rows.fetchone()

    @property
    def pending(self) -> bool:
        return self._next is not None

    def take(self, ids: set[str], count: int) -> list[tuple[Any, ...]]:
        """The rows of the objects ``ids`` (which come next in this stream), or with no
        key, the next ``count`` rows."""
        taken: list[tuple[Any, ...]] = []
        while self._next is not None and (len(taken) < count if self._key is None else self._next[self._key] in ids):
            taken.append(tuple(self._next))
            self._next = self._rows.fetchone()
        return taken


def _pages(store: Store) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """Each 1,000 objects' rows of the five tables, in the order of their ids (the store's
    ids are time-ordered: the order the recon created them); the audit rows of the store's
    first run in the order it wrote them, as many a page as the page has objects (a first
    recon audits each create once)."""
    mo, mp = managed_objects, managed_properties
    with store.engine.connect() as conn, store.engine.connect() as props, \
            store.engine.connect() as linked, store.engine.connect() as audited:
        first = conn.execute(select(recon_runs.c.id).order_by(recon_runs.c.started).limit(1)).scalar()
        types = [t for (t,) in conn.execute(select(mo.c.object_type).distinct())]
        sets = [s for (s,) in conn.execute(select(links.c.linkset).distinct())]
        if len(types) != 1 or len(sets) != 1:
            raise ValueError(f"a store of one type and one mapping's links expected, not {types} and {sets}")
        objects = _Stream(conn, select(*mo.c).order_by(mo.c.object_type, mo.c.id), None)
        values = _Stream(props, select(*mp.c).where(mp.c.object_type == types[0])
                         .order_by(mp.c.object_type, mp.c.object_id), 1)
        link_rows = _Stream(linked, select(*links.c).where(links.c.linkset == sets[0])
                            .order_by(links.c.linkset, links.c.target_id), 3)
        audit_rows = _Stream(audited, select(*[c for c in audit.c if c.name != "seq"])
                             .where(audit.c.run_id == first).order_by(audit.c.run_id, audit.c.seq), None)
        while page := objects.take(set(), _PAGE):
            ids = {o[1] for o in page}
            yield {"managed_objects": page, "managed_properties": values.take(ids, 0),
                   "links": link_rows.take(ids, 0), "recon_claims": [(_RUN, i) for i in sorted(ids)],
                   "audit": audit_rows.take(set(), len(page))}
        if values.pending or link_rows.pending:
            raise ValueError("the searchable values or links are not in the objects' order")


def store_floor(url: str, without: Collection[str] = ()) -> tuple[float, dict[str, int]]:
    """Seconds the database of ``url`` takes to write its first recon's rows again (writes
    and commits only), and the rows written of each table; the tables ``without`` are left
    out (what each costs, by difference). Later recons may have run: their objects are the
    first's, their audit rows are left out."""
    unknown = set(without) - {t.name for t in _TABLES}
    if unknown:
        raise ValueError(f"no floor table {', '.join(sorted(unknown))} (they are {', '.join(_NAMES)})")
    store = Store.open(url, migrate=False)
    # On SQLite, into a database of its own: the reads' snapshots of the store would keep
    # its write-ahead log from being checkpointed, which a recon's writes are not kept from.
    floor_file = Path(str(store.engine.url.database) + "-floor") if store.dialect == "sqlite" else None
    into = Store.open(f"sqlite:///{floor_file}", migrate=False) if floor_file else store
    md = MetaData()
    copies = _copies(md)
    columns = {name: [c.name for c in copy.c if c.name != "seq"] for name, copy in copies.items()}
    md.drop_all(into.engine, checkfirst=True)
    md.create_all(into.engine)
    seconds, written = 0.0, dict.fromkeys(copies, 0)
    try:
        for page in _pages(store):
            start = time.perf_counter()
            with into.begin() as conn:
                for name, rows in page.items():
                    if name not in without:
                        into.insert_rows(conn, copies[name], columns[name], rows)
            seconds += time.perf_counter() - start
            for name, rows in page.items():
                written[name] += 0 if name in without else len(rows)
    finally:
        md.drop_all(into.engine, checkfirst=True)
        into.close()
        store.close()
        for suffix in ("", "-wal", "-shm"):
            if floor_file is not None:
                Path(f"{floor_file}{suffix}").unlink(missing_ok=True)
    return seconds, written


if __name__ == "__main__":
    # Run as a process of its own by the benchmark: a process forked from one that held
    # these rows would report their memory as its own peak (Linux keeps the peak of the
    # forked copy across exec).
    import json
    import sys

    # ``python -m idsync_dev.store_floor URL [TABLE...]``: the tables named are left out.
    taken, rows = store_floor(sys.argv[1], sys.argv[2:])
    print(json.dumps({"seconds": taken, "written": rows}))
