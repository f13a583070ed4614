"""A project's named queries: the ``queries`` of ``conf/repo.*.json``.

PingIDM keeps named queries (``_queryId``) in its repository configuration:
``repo.orientdb.json`` has ``{"queries": {"NAME": "SQL"}}``, ``repo.jdbc.json``
``{"queries": {"genericTables": {...}, "explicitTables": {...}}}``. idsync
reads the ``WHERE`` clause of each (``idsync.query.sql``); the stock ids are
idsync's own (``idsync.query.named.STOCK``), whatever the file says. A query
that cannot be translated is kept with its reason: ``idsync validate`` reports
it (file, key, why), and a use of it fails with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idsync.config.files import load_json
from idsync.errors import ConfigError, QueryError
from idsync.query.named import INTERNAL, STOCK, NamedQueries, NamedQuery
from idsync.query.sql import parse_sql_query

__all__ = ["load_queries"]


def load_queries(conf_dir: Path) -> tuple[NamedQueries, list[ConfigError]]:
    """The project's named queries, and a problem per query that cannot be translated."""
    own: dict[str, NamedQuery] = {}
    unusable: dict[str, str] = {}
    problems: list[ConfigError] = []
    for path in sorted(conf_dir.glob("repo.*.json")):
        # Not substituted: ``${uid}`` is a query parameter here, not an environment variable.
        data = load_json(path, secrets=False)
        queries = data.get("queries") if isinstance(data, dict) else None
        if queries is None:
            continue
        if not isinstance(queries, dict):
            problems.append(ConfigError(str(path), "queries", "expected an object of named queries"))
            continue
        for key, name, text in _entries(queries):
            if name in STOCK or name in INTERNAL or name in own:
                continue
            if not isinstance(text, str):
                problems.append(ConfigError(str(path), key, "expected the query's SQL text"))
                continue
            try:
                own[name] = parse_sql_query(name, text, origin=f"{path.name}: {key}")
            except QueryError as exc:
                why = f"cannot be translated to a _queryFilter: {exc}"
                unusable.setdefault(name, f"{path.name}: {key}: {why}")
                problems.append(ConfigError(str(path), key, why))
    return NamedQueries(own, unusable), problems


def _entries(queries: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """(key, query id, text) of a ``queries`` object, JDBC's generic tables first."""
    tables = [t for t in ("genericTables", "explicitTables") if isinstance(queries.get(t), dict)]
    if tables:
        return [(f"queries.{t}.{name}", name, text) for t in tables for name, text in queries[t].items()]
    return [(f"queries.{name}", name, text) for name, text in queries.items()]
