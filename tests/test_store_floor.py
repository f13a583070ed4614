"""The benchmark's store floor (``idsync_dev/store_floor.py``): a first recon's rows
written again without the engine, into copies of the tables that leave nothing behind,
all of them or all but some."""

from __future__ import annotations

from pathlib import Path

import pytest
from idsync.store.tables import managed_properties
from idsync_dev.slapd import Slapd
from idsync_dev.store_floor import store_floor
from recon_env import STORES, env_on
from sqlalchemy import func, inspect, select


@pytest.mark.parametrize("kind", STORES)
def test_the_store_floor_writes_every_object_of_the_first_recon_again(kind: str, slapd: Slapd, ldap_subtree: str,
                                                                         tmp_path: Path) -> None:
    with env_on(kind, slapd, ldap_subtree, tmp_path) as env:
        env.add(*(f"floor{i}" for i in range(25)))
        assert env.recon().state == "SUCCESS"
        env.modify("floor3", "sn", "Changed")
        assert env.recon().state == "SUCCESS"  # a later run's audit rows are not the first's
        tables = set(inspect(env.store.engine).get_table_names())
        with env.store.engine.connect() as conn:
            values = conn.execute(select(func.count()).select_from(managed_properties)).scalar()
        seconds, written = store_floor(env.url)
        assert seconds > 0
        assert written == {"managed_objects": 25, "managed_properties": values, "links": 25, "recon_claims": 25,
                           "audit": 25}
        assert set(inspect(env.store.engine).get_table_names()) == tables  # the copies are gone
        _, without = store_floor(env.url, ["managed_properties", "audit"])  # what the others cost
        assert without == {**written, "managed_properties": 0, "audit": 0}
        with pytest.raises(ValueError, match="no floor table nosuch"):
            store_floor(env.url, ["nosuch"])
        assert len(env.users()) == 25
    if kind == "sqlite":
        assert not list(tmp_path.rglob("*-floor*"))
