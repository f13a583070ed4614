"""The spools of a liveSync read (``idsync.spool``): sets of ids and entries kept in a
temporary SQLite database instead of memory, with the semantics of the sets and
dicts they replace."""

from __future__ import annotations

import pytest
from idsync.errors import RunAborted
from idsync.spool import EntrySpool, IdSpool, chunks


def test_an_id_spool_is_a_set_iterated_in_order() -> None:
    """Ids added twice are kept once; membership, emptiness, length and iteration (in
    code point order) answer as a set's, across the write buffer's flushes."""
    spool = IdSpool(["b", "a"])
    assert not IdSpool()
    spool.update(f"id{n:06d}" for n in range(12_000))
    spool.update(["a", "id000001"])
    assert spool and len(spool) == 12_002
    assert "a" in spool and "id011999" in spool and "zz" not in spool and 3 not in spool
    assert list(spool)[:3] == ["a", "b", "id000000"]
    assert spool.absent(["zz", "a", "id000500", "y", "zz"]) == ["zz", "y", "zz"]
    assert spool.absent([f"x{n}" for n in range(1200)]) == [f"x{n}" for n in range(1200)]
    spool.update(f"x{n}" for n in range(6_000))  # after a question: its index is built again
    spool.add("a")
    assert len(spool) == 18_002 and spool.absent(["x5999", "x6000", "a"]) == ["x6000"]
    assert list(spool)[-1] == "x999"
    spool.close()


def test_an_id_spool_holds_any_text_as_a_value() -> None:
    """An id with quotes, SQL or NUL-free control characters is a value, never syntax."""
    odd = ["a'b", "x); DROP TABLE ids; --", "é\u00a0ü", "%", "_", "*"]
    spool = IdSpool(odd)
    assert spool.absent(odd) == [] and sorted(spool) == sorted(odd)
    assert spool.absent(["a", "x"]) == ["a", "x"]


def test_an_entry_spool_keeps_the_last_entry_at_the_first_place() -> None:
    """A later put of a key replaces its entry and keeps its place, as a dict's item
    assignment does; entries of DNs and attributes of byte strings come back equal."""
    spool = EntrySpool()
    for n in range(7_000):
        spool.put(f"k{n}", (f"uid=u{n},ou=People", {"cn": [f"U {n}".encode()], "jpegphoto": [bytes(range(256))]}))
    spool.put("k0", ("uid=renamed,ou=People", {"cn": [b"Renamed"]}))
    items = list(spool.items())
    assert len(spool) == 7_000 and len(items) == 7_000
    assert items[0] == ("k0", ("uid=renamed,ou=People", {"cn": [b"Renamed"]}))
    assert items[6_999][1][1]["jpegphoto"] == [bytes(range(256))]
    assert list(spool.keys())[:2] == ["k0", "k1"]
    spool.close()
    with pytest.raises(RunAborted, match="closed"):
        list(spool.items())


def test_a_spool_that_cannot_write_stops_the_run_saying_where() -> None:
    """A spool whose temporary database cannot grow (the directory full: its size capped
    here) raises ``RunAborted`` naming where spools are kept, not a bare SQLite error."""
    spool = IdSpool()
    spool._db.execute("PRAGMA max_page_count=2")
    with pytest.raises(RunAborted, match=r"spool .*SQLITE_TMPDIR, TMPDIR or /var/tmp.*full"):
        spool.update(f"id{n:08d}" for n in range(50_000))


def test_chunks_are_read_lazily() -> None:
    """``chunks`` takes from its input only as its chunks are taken."""
    taken: list[int] = []

    def numbers() -> object:
        for n in range(10):
            taken.append(n)
            yield n

    chunked = chunks(numbers(), 4)  # type: ignore[arg-type]
    assert next(chunked) == [0, 1, 2, 3] and taken == [0, 1, 2, 3]
    assert list(chunked) == [[4, 5, 6, 7], [8, 9]]
