"""Where mappings come from and in which order they run: ``sync.json`` first, in
file order, then the ``mapping-NAME.json`` files placed by ``syncAfter``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from idsync.config.mappings import load_mappings
from idsync.errors import ConfigError


def _mapping(name: str | None = None, **extra: Any) -> dict[str, Any]:
    return {**({"name": name} if name else {}), "source": "managed/user", "target": "managed/role", **extra}


def _conf(tmp_path: Path, sync: list[dict[str, Any]] | None, files: dict[str, dict[str, Any]]) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    if sync is not None:
        (conf / "sync.json").write_text(json.dumps({"mappings": sync}))
    for name, raw in files.items():
        (conf / f"mapping-{name}.json").write_text(json.dumps(raw))
    return conf


def test_sync_json_first_then_files_by_sync_after(tmp_path: Path) -> None:
    """sync.json's mappings keep their order; a mapping file comes after the ones its
    syncAfter names, file name order otherwise; a file's name is its mapping's name."""
    conf = _conf(tmp_path, [_mapping("zeta"), _mapping("alpha")], {
        "aaa": _mapping(syncAfter=["ccc"]),
        "bbb": _mapping(syncAfter="zeta"),
        "ccc": _mapping(),
    })
    assert [m.name for m in load_mappings(conf)] == ["zeta", "alpha", "bbb", "ccc", "aaa"]


def test_mapping_files_alone(tmp_path: Path) -> None:
    """Without sync.json the individual files are the whole set."""
    conf = _conf(tmp_path, None, {"one": _mapping(syncAfter=["two"]), "two": _mapping()})
    assert [m.name for m in load_mappings(conf)] == ["two", "one"]


@pytest.mark.parametrize(("files", "problem"), [
    ({"a": _mapping(syncAfter=["b"]), "b": _mapping(syncAfter=["a"])}, "syncAfter forms a cycle among: a, b"),
    ({"a": _mapping(syncAfter=["nowhere"])}, "syncAfter: no mapping named nowhere"),
    ({"a": _mapping(links="nowhere")}, "links: no mapping named nowhere"),
    ({"a": _mapping("first")}, "mapping first is also defined in"),
])
def test_ordering_problems_name_the_file(tmp_path: Path, files: dict[str, dict[str, Any]], problem: str) -> None:
    """A syncAfter cycle, a name nobody defines and a name defined twice are
    configuration errors naming the file."""
    conf = _conf(tmp_path, [_mapping("first")], files)
    with pytest.raises(ConfigError) as raised:
        load_mappings(conf)
    assert problem in str(raised.value) and "mapping-a.json" in str(raised.value)
