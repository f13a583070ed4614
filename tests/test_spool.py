"""The spools of a liveSync read (``idsync.spool``): sets of ids and entries kept in a
temporary SQLite database instead of memory, with the semantics of the sets and
dicts they replace."""

from __future__ import annotations

import os
from collections.abc import Callable

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


def _temporary_files() -> set[str]:
    """The descriptors (``/proc/self/fd/N``) of the temporary files SQLite has open in this
    process: unlinked as they are made, reachable only there."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if os.path.basename(target).startswith("etilqs_"):
            found.add(f"/proc/self/fd/{fd}")
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads the spool's file through /proc/self/fd")
def test_an_entry_spool_writes_no_entry_contents_to_disk() -> None:
    """Entries more than the page cache holds are written to the spool's temporary file:
    read back through the process's descriptor, its bytes hold the keys (the rows are
    there) but neither the password hash nor the DN of any entry, which come back intact."""
    secret, before = b"{SSHA}c2VjcmV0LWhhc2gtb2YtYmplbnNlbg==", _temporary_files()
    spool = EntrySpool()
    for n in range(12_000):
        spool.put(f"uuid-{n:06d}", (f"uid=person{n:06d},ou=People", {"userpassword": [secret], "x": [b"." * 500]}))
    assert len(spool) == 12_000
    files = _temporary_files() - before
    assert files, "the spool spilled to no temporary file"
    on_disk = b"".join(open(path, "rb").read() for path in files)  # noqa: SIM115
    assert len(on_disk) > 1_000_000 and b"uuid-000000" in on_disk
    assert secret not in on_disk and b"c2VjcmV0" not in on_disk and b"uid=person" not in on_disk
    assert next(spool.items()) == ("uuid-000000", ("uid=person000000,ou=People",
                                                   {"userpassword": [secret], "x": [b"." * 500]}))
    spool.close()


_ALTERED: dict[str, Callable[[bytes, bytes], object]] = {
    "a byte changed": lambda b, c: b[:20] + bytes([b[20] ^ 1]) + b[21:],
    "another row's entry": lambda b, c: c,
    "cut short": lambda b, c: b[:1],
    "not a blob": lambda b, c: "text",
}


@pytest.mark.parametrize("alter", _ALTERED.values(), ids=_ALTERED.keys())
def test_an_altered_entry_stops_the_read_unread(alter: Callable[[bytes, bytes], object]) -> None:
    """An entry altered in the spool's file (a byte changed, another key's sealed entry
    copied over it, cut short) fails its check when read back: ``RunAborted``, after the
    entries before it, and never the altered entry itself."""
    spool = EntrySpool()
    for key in "abc":
        spool.put(key, ("uid=" + key, {"userpassword": [b"{SSHA}" + key.encode() * 20]}))
    assert len(spool) == 3
    sealed = dict(spool._db.execute("SELECT key, entry FROM entries"))
    spool._db.execute("UPDATE entries SET entry = ? WHERE key = 'b'", (alter(sealed["b"], sealed["c"]),))
    items = spool.items()
    assert next(items) == ("a", ("uid=a", {"userpassword": [b"{SSHA}" + b"a" * 20]}))
    with pytest.raises(RunAborted, match=r"spool .* was altered") as failure:
        next(items)
    assert "SSHA" not in str(failure.value) and "uid=" not in str(failure.value)
    spool.close()


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
