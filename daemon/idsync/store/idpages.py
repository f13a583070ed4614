"""Statements over a page of ids, the hot path of a recon.

For each page of 1,000 source objects a recon reads their links and their
targets' revisions, and claims the targets it saw. Built with SQLAlchemy's
expanding ``IN``, each such statement compiles a thousand parameters every time,
and a claim is an ``executemany`` of a thousand rows (on PostgreSQL a thousand
statements sent in a pipeline): together more than a third of a no-change
recon's CPU. Here a page of ids is one parameter of a statement written for
the driver:

- SQLite: ``IN (SELECT value FROM json_each(?))``, the ids as a JSON array (the
  planner still walks the index once per id);
- PostgreSQL: the ids as an array (its text, written here), ``unnest``-ed into one index probe each
  (``OFFSET 0`` keeps the planner from a sequential scan), ``= ANY`` to delete;
- MariaDB: a placeholder per id, in chunks.

Values with a NUL character or an unpaired surrogate (or none at all) are left out: no key
the store holds has one (``database.unfit_at``); PostgreSQL refuses the one even as a
parameter, and no driver can encode the other (an id a JSON peer sent as ``"\\ud83d"``).
A claim is not made of an id no key column can hold (``database.fits_key``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table

from idsync.store.database import Store, fits_key, fits_text, pg_array

__all__ = ["claim_ids", "delete_ids", "select_ids"]

_CHUNK = 500  # MariaDB: placeholders per statement


def select_ids(store: Store, conn: Connection, table: Table, columns: Sequence[str], key: str,
               ids: Sequence[str], equal: Mapping[str, Any],
               join: tuple[Table, str, str, str, Any] | None = None) -> list[tuple[Any, ...]]:
    """The rows (``columns``) of ``table`` whose ``key`` is one of ``ids`` and whose
    columns named in ``equal`` hold those values. ``join``: (table, its column, the
    column of ``table`` it equals, its column to add to each row, the value its
    ``object_type`` must have): that column of the row it matches, or None (a left join)."""
    head = f"SELECT {', '.join(f't.{_q(store, c)}' for c in columns)}"
    head_params: tuple[Any, ...] = ()
    if join is not None:
        other, their_key, our_key, added, kind = join
        head += (f", j.{_q(store, added)} FROM {_q(store, table.name)} t LEFT JOIN {_q(store, other.name)} j "
                 f"ON j.{_q(store, 'object_type')} = {_mark(store)} AND j.{_q(store, their_key)} = "
                 f"t.{_q(store, our_key)}")
        head_params = (kind,)
    else:
        head += f" FROM {_q(store, table.name)} t"
    if store.dialect == "postgresql":
        # One index probe per id, whatever the planner thinks of a thousand ids in a
        # table of twenty thousand (a sequential scan per page: 4-17 ms against 2-4).
        wanted = _usable(ids)
        if not wanted:
            return []
        mark = _mark(store)
        where = "".join(f"t.{_q(store, c)} = {mark} AND " for c in equal)
        return list(conn.exec_driver_sql(
            f"SELECT found.* FROM unnest({mark}::text[]) AS page(id) CROSS JOIN LATERAL "
            f"({head} WHERE {where}t.{_q(store, key)} = page.id OFFSET 0) AS found",
            (pg_array(wanted), *head_params, *equal.values())).all())
    return _where_ids(store, conn, head, key, ids, equal, rows=True, alias="t", head_params=head_params)


def delete_ids(store: Store, conn: Connection, table: Table, key: str, ids: Sequence[str],
               equal: Mapping[str, Any]) -> None:
    """Delete the rows of ``table`` whose ``key`` is one of ``ids`` and whose columns
    named in ``equal`` hold those values."""
    _where_ids(store, conn, f"DELETE FROM {_q(store, table.name)}", key, ids, equal, rows=False)


def _where_ids(store: Store, conn: Connection, head: str, key: str, ids: Sequence[str],
               equal: Mapping[str, Any], *, rows: bool, alias: str = "",
               head_params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """``head`` (a SELECT or a DELETE, the values of its own placeholders ``head_params``)
    with its WHERE: ``equal``, and ``key`` among ``ids`` (``alias``: of the table whose
    columns these are)."""
    wanted = _usable(ids)
    if not wanted:
        return []
    mark = _mark(store)
    fixed = (*head_params, *equal.values())
    at = f"{alias}." if alias else ""
    where = " AND ".join(f"{at}{_q(store, c)} = {mark}" for c in equal)
    head = f"{head} WHERE {where}{' AND ' if where else ''}{at}{_q(store, key)}"
    if store.dialect == "sqlite":
        statements = [(f"{head} IN (SELECT value FROM json_each(?))", (*fixed, _json(wanted)))]
    elif store.dialect == "postgresql":
        statements = [(f"{head} = ANY(%s::text[])", (*fixed, pg_array(wanted)))]
    else:
        statements = [(f"{head} IN ({', '.join([mark] * len(chunk))})", (*fixed, *chunk))
                      for chunk in (wanted[start:start + _CHUNK] for start in range(0, len(wanted), _CHUNK))]
    found: list[tuple[Any, ...]] = []
    for sql, params in statements:
        result = conn.exec_driver_sql(sql, params)
        if rows:
            found.extend(result.all())
    return found


def claim_ids(store: Store, conn: Connection, table: Table, fixed: Mapping[str, Any], key: str,
              ids: Sequence[str]) -> None:
    """Insert a row per id of ``ids`` into ``table`` (``key`` the id, the ``fixed``
    columns the same in every row), leaving alone the rows already there."""
    wanted = [i for i in dict.fromkeys(ids) if i is not None and fits_key(i)]
    if not wanted:
        return
    mark = _mark(store)
    names = ", ".join(_q(store, c) for c in (*fixed, key))
    values = ", ".join([mark] * len(fixed))
    into = f"INTO {_q(store, table.name)} ({names})"
    if store.dialect == "sqlite":
        conn.exec_driver_sql(f"INSERT OR IGNORE {into} SELECT {values}, value FROM json_each(?)",
                             (*fixed.values(), _json(wanted)))
    elif store.dialect == "postgresql":
        conn.exec_driver_sql(f"INSERT {into} SELECT {values}, unnest(%s::text[]) ON CONFLICT DO NOTHING",
                             (*fixed.values(), pg_array(wanted)))
    else:
        store.insert_many(conn, table, [{**fixed, key: i} for i in wanted], ignore_duplicates=True)


def _usable(ids: Sequence[str | None]) -> list[str]:
    """``ids`` once each, without those no row can hold (none, with a NUL, or with half of
    a character); a longer id than a key holds matches nothing, and is asked for all the same."""
    return [i for i in dict.fromkeys(ids) if i is not None and fits_text(i)]


def _json(ids: list[str]) -> str:
    return json.dumps(ids, ensure_ascii=False, separators=(",", ":"))


def _mark(store: Store) -> str:
    return "?" if store.engine.dialect.paramstyle == "qmark" else "%s"


def _q(store: Store, name: str) -> str:
    return str(store.engine.dialect.identifier_preparer.quote(name))
