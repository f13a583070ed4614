"""The served OpenAPI description, and a property-based run (schemathesis) of
generated requests against it: whatever the parameters, headers and bodies, the
API never answers 5xx, and its answers match the description (the query
envelope, recon ids and states, errors in PingIDM's shape)."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from api_server import ADMIN, ADMIN_HASH
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from idsync.api import Accounts, ApiContext, create_app
from idsync.api.errors import ApiError
from idsync.config.project import load_project
from idsync.settings import ApiSettings
from idsync.store.database import Store
from idsync.store.tables import metadata, store_meta


class _Jobs:
    """The scheduler's side of ``scheduler/job`` with one job that is never busy:
    the routes' parameter handling and answers are what this run exercises."""

    def job_list(self) -> list[dict[str, Any]]:
        return [{"_id": "nightly", "enabled": True, "type": "cron", "schedule": "0 0 2 * * ?",
                 "nextRunDate": "2030-01-01T02:00:00+00:00", "running": False, "lastRun": None,
                 "invokeContext": {"action": "reconcile", "mappings": ["roles_users"]}}]

    def config_state(self) -> dict[str, Any]:
        return {"errors": 0, "lastReload": None, "lastReloadOk": None}

    def trigger(self, name: str) -> bool:
        if name != "nightly":
            raise ApiError(404, f"Job {name} not found")
        return True

    def cancel_job(self, name: str) -> bool:
        return False


_DIR = Path(tempfile.mkdtemp(prefix="idsync-openapi-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)
(_DIR / "conf").mkdir()
(_DIR / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{_DIR / "o.db"}"\n')
# A real mapping over the store alone, so generated recon starts really run. No system: a
# generated liveSync action (system/{system}?_action=liveSync) meets a 404 and runs nothing.
(_DIR / "conf" / "sync.json").write_text(json.dumps({"mappings": [
    {"name": "roles_users", "source": "managed/role", "target": "managed/user"}]}))
_PROJECT = load_project(_DIR)
_CTX = ApiContext(project=lambda: _PROJECT, store=Store.open(_PROJECT.settings.store_url()),
                  settings=ApiSettings(max_failed_logins=1_000_000), jobs=_Jobs())
APP = create_app(_CTX, Accounts({"openidm-admin": ADMIN_HASH}))
schema = schemathesis.openapi.from_asgi("/openidm/openapi.json", APP, headers=ADMIN)

_CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.response_schema_conformance,
           schemathesis.checks.content_type_conformance, schemathesis.checks.status_code_conformance]


def test_description_is_served() -> None:
    """openapi.json (fetched with credentials above) lists every route of docs/api.md, one
    path per managed type with managed.json's required properties, and no secret in answers;
    a system's and an object type's liveSync actions among them, with their answers."""
    paths = schema.raw_schema["paths"]
    assert {"/openidm/info/ping", "/openidm/recon", "/openidm/recon/{id}", "/openidm/managed/user",
            "/openidm/managed/role/{id}", "/openidm/system", "/openidm/system/{system}/{type}",
            "/openidm/system/{system}/{type}/{id}", "/openidm/sync/mappings", "/openidm/config/sync",
            "/openidm/scheduler/job", "/openidm/scheduler/job/{name}", "/metrics"} <= set(paths)
    assert set(paths["/openidm/managed/user/{id}"]) == {"get", "put", "patch", "delete", "post"}
    create = paths["/openidm/managed/user"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["required"] == ["userName"]
    answer = create["responses"]["201"]
    assert answer["content"]["application/json"]["schema"]["properties"]["password"] is False
    assert {"get", "put", "patch", "delete"} <= set(answer["links"])
    for path in ("/openidm/system", "/openidm/system/{system}", "/openidm/system/{system}/{type}"):
        post = paths[path]["post"]
        assert "liveSync" in next(p for p in post["parameters"] if p["name"] == "_action")["schema"]["enum"]
        answers = post["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]
        assert any("sources" in a.get("required", ()) for a in answers), path


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests(case: schemathesis.Case) -> None:
    """Generated requests never crash the API and get answers shaped as described.

    Each operation meets schemathesis's coverage phase first: every parameter and body
    property at its boundaries, of the wrong type, missing, unexpected, every other method
    and content type (about forty requests an operation). Ten random requests an operation
    follow them."""
    case.call_and_validate(headers=ADMIN, checks=_CHECKS, excluded_checks=[schemathesis.checks.ignored_auth])


class _Scenarios(schema.as_state_machine()):  # type: ignore[misc]
    """Sequences that follow the description's links: create an object, then read,
    replace, patch and delete it by the ``_id`` answered; start a recon, then read
    or cancel it by its ``_id``."""

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"headers": ADMIN}

    def teardown(self) -> None:
        # Each scenario starts from an empty store, so a replayed scenario meets the same answers.
        with _CTX.store.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                if table is not store_meta:
                    conn.execute(table.delete())

    def validate_response(self, response: Any, case: schemathesis.Case, additional_checks: Any = None,
                          **kwargs: Any) -> None:
        case.validate_response(response, checks=_CHECKS, excluded_checks=[schemathesis.checks.ignored_auth])


def test_linked_scenarios() -> None:
    """Chains of requests over created objects and started runs keep every answer
    within the description and never crash the API."""
    run_state_machine_as_test(_Scenarios, settings=settings(
        max_examples=15, stateful_step_count=8, deadline=None, suppress_health_check=list(HealthCheck)))
