"""The links read as PingIDM's ``repo/link`` objects (``store/link_rows.py``) on every
store: PingIDM's field names, filters as SQL with their values bound and compared
exactly, ``_id`` order, keyset and offset paging, exact counts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbs import BACKENDS, store_url
from idsync.errors import QueryError
from idsync.query.parser import parse
from idsync.store.database import Store
from idsync.store.link_rows import LinkQuery, query_links, read_link
from idsync.store.tables import links
from sqlalchemy import insert

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
_ROWS = [("l1", "m", "ABC", "u1", "default"), ("l2", "m", "abc", "u2", "default"),
         ("l3", "m", "x'y", "u3", "second"), ("l4", "other", "s4", "u4", "default")]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = Store.open(store_url(request.param, tmp_path))
    with s.begin() as conn:
        conn.execute(insert(links), [{"id": i, "linkset": t, "source_id": f, "target_id": sid, "qualifier": q,
                                      "created": NOW} for i, t, f, sid, q in _ROWS])
    yield s
    s.close()


def _ids(store: Store, text: str, **spec: object) -> list[str]:
    rows, _ = query_links(store, LinkQuery(filter=parse(text), **spec))  # type: ignore[arg-type]
    return [r["_id"] for r in rows]


def test_links_answer_pingidms_fields_and_filters(store: Store) -> None:
    """Each link is ``{_id, _rev, linkType, linkQualifier, firstId, secondId}``; a filter
    compares those exactly (case counts, a quote is a value), with and, or, not, sw, pr."""
    assert read_link(store, "l1") == {"_id": "l1", "_rev": "0", "linkType": "m", "linkQualifier": "default",
                                      "firstId": "ABC", "secondId": "u1"}
    assert read_link(store, "L1") is None and read_link(store, "nope") is None
    assert _ids(store, 'firstId eq "abc"') == ["l2"]
    assert _ids(store, "firstId eq \"x'y\"") == ["l3"]
    assert _ids(store, 'linkType eq "m" and !(linkQualifier eq "default")') == ["l3"]
    assert _ids(store, 'secondId sw "u" and (linkType eq "other" or firstId eq "ABC")') == ["l1", "l4"]
    assert _ids(store, "firstId pr and _rev eq \"0\"") == ["l1", "l2", "l3", "l4"]
    assert _ids(store, "firstId eq null") == []
    with pytest.raises(QueryError, match="firstId"):
        _ids(store, 'sourceId eq "ABC"')


def test_links_page_by_their_last_id_or_an_offset_and_count(store: Store) -> None:
    """A page holds one more row than asked when there are more; the next starts after the
    last ``_id`` or at an offset; an exact count counts every match."""
    rows, total = query_links(store, LinkQuery(filter=parse("true"), page_size=2, exact_total=True))
    assert [r["_id"] for r in rows] == ["l1", "l2", "l3"] and total == 4
    assert _ids(store, "true", after="l2", page_size=2) == ["l3", "l4"]
    assert _ids(store, "true", offset=3) == ["l4"]
