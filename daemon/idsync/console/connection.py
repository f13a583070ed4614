"""A system's connection settings (Systems, Settings): PingIDM's Enable, Login URL
(Production, Sandbox or Custom), Consumer Key and Consumer Secret of a Salesforce
system, as its admin UI asks for them before the consent.

``conf/`` is read-only to the daemon, so Save writes the console's overlay
(``config/overlay.py``: ``<state_dir>/connectors/NAME.json``, the secret encrypted
with idsync's key) and has the daemon reload, as the jobs page's Save does. The
settings are checked first, as the connector will read them (the overlay laid over
the provisioner): a refused value is shown with the reason and nothing is written.
The secret is never shown again: the form says whether one is set and offers an
empty field to replace it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from idsync.api.context import ApiContext
from idsync.config.overlay import OVERLAY_KEYS, check_login_url, write_overlay
from idsync.config.project import Project, Provisioner
from idsync.console.record import record
from idsync.console.web import Form, console_of, page, redirect, user_of
from idsync.errors import ConfigError, IdsyncError
from idsync.resources import check_system

__all__ = ["LOGIN_URLS", "connection_routes", "key_origins", "settable_systems"]

log = structlog.get_logger("idsync.console")

# The Login URL choices of PingIDM's Salesforce connector page.
LOGIN_URLS = {
    "production": "https://login.salesforce.com/services/oauth2/token",
    "sandbox": "https://test.salesforce.com/services/oauth2/token",
}
_SETTABLE = frozenset({"salesforce"})  # the connectors whose settings the console sets


def key_origins(provisioner: Provisioner) -> dict[str, str]:
    """For each key the console can set: ``console``, ``conf/`` or ``not set``."""
    props = provisioner.raw.get("configurationProperties") or {}
    out: dict[str, str] = {}
    for key in OVERLAY_KEYS:
        if key in provisioner.overlay:
            out[key] = "console"
        elif key == "enabled" or key in props or f"{key}_file" in props:
            out[key] = "conf/"
        else:
            out[key] = "not set"
    return out


def settable_systems(project: Project) -> dict[str, dict[str, str]]:
    """Every system whose settings the console sets, enabled or not, with ``key_origins``."""
    return {name: key_origins(p) for name, p in sorted(project.provisioners.items()) if p.kind in _SETTABLE}


def _provisioner(ctx: ApiContext, name: str) -> Provisioner:
    provisioner = ctx.project().provisioners.get(name)
    if provisioner is None or provisioner.kind not in _SETTABLE:
        raise HTTPException(404, f"no system named {name!r} whose settings the console sets")
    return provisioner


def _shown(provisioner: Provisioner) -> dict[str, Any]:
    """What the form shows: the values in force, never the secret (only whether one is set)."""
    props: dict[str, Any] = {}
    try:
        props = dict(provisioner.config.get("configurationProperties") or {})
    except IdsyncError:  # a token of the file whose variable is not set: show what the console has
        props = {k: v for k, v in provisioner.overlay.items() if k in ("loginUrl", "clientId")}
    login = str(props.get("loginUrl") or LOGIN_URLS["production"])
    preset = next((k for k, v in LOGIN_URLS.items() if v == login or k == login.lower()), "custom")
    return {"enabled": provisioner.enabled, "preset": preset, "custom": login if preset == "custom" else "",
            "clientId": str(props.get("clientId") or ""), "secretSet": bool(props.get("clientSecret"))
            or "clientSecret" in provisioner.overlay}


def _values(provisioner: Provisioner, form: Form) -> tuple[dict[str, Any], bool]:
    """The overlay the form asks for (the secret encrypted), and whether the secret changed."""
    file = str(provisioner.overlay_path)
    values = dict(provisioner.overlay)
    values["enabled"] = form.has("enabled")
    preset = form.get("loginUrl", "production")
    if preset == "custom":
        custom = form.get("customLoginUrl").strip()
        if not custom:
            raise ConfigError(file, "loginUrl", "Custom needs a URL")
        values["loginUrl"] = check_login_url(custom, file=file)
    elif preset in LOGIN_URLS:
        typed = form.get("customLoginUrl").strip()
        if typed and typed != _shown(provisioner)["custom"]:
            # Typed without choosing Custom: taking the preset would drop that URL unsaid.
            raise ConfigError(file, "loginUrl", f"a Custom login URL is typed but {preset.capitalize()} is "
                                                "selected: select Custom to use it, or empty the field")
        values["loginUrl"] = LOGIN_URLS[preset]
    else:
        raise ConfigError(file, "loginUrl", "expected Production, Sandbox or Custom")
    client_id = form.get("clientId").strip()
    if client_id:
        values["clientId"] = client_id
    else:
        values.pop("clientId", None)  # the provisioner file's, if it has one
    secret = form.get("clientSecret")
    if secret.strip():
        if provisioner.keyring is None:
            raise ConfigError(file, "clientSecret", "idsync's key is not at hand to encrypt it")
        values["clientSecret"] = provisioner.keyring.encrypt(secret.strip())
    return values, bool(secret.strip())


def _save(ctx: ApiContext, name: str, form: Form) -> tuple[Provisioner, bool]:
    """Check the settings as the connector reads them, write the overlay, reload."""
    provisioner = _provisioner(ctx, name)
    if provisioner.state_dir is None:
        raise ConfigError("idsync.toml", "state_dir", "the console keeps connection settings in the state "
                          "directory, and there is none")
    values, secret_changed = _values(provisioner, form)
    # The overlay's own checks, then the connector's (a required key missing, a URL it refuses).
    candidate = dataclasses.replace(provisioner, overlay=values)
    if candidate.enabled:
        check_system(candidate)
    write_overlay(provisioner.state_dir, name, values)
    if ctx.jobs is not None:
        state = ctx.jobs.reload()
        if state.get("lastReloadOk") is False:
            log.warning("console.reload_with_errors", errors=state.get("errors"))
    return candidate, secret_changed


async def _form(request: Request) -> Response:
    ctx = console_of(request).ctx
    name = request.path_params["name"]
    provisioner = await run_in_threadpool(_provisioner, ctx, name)
    return page(request, "system_settings.html", system=name, form=_shown(provisioner),
                origins=key_origins(provisioner), presets=LOGIN_URLS, error=None)


async def _post(request: Request) -> Response:
    console = console_of(request)
    ctx = console.ctx
    name = request.path_params["name"]
    form = await Form.read(request)
    try:
        saved, secret_changed = await run_in_threadpool(_save, ctx, name, form)
    except IdsyncError as exc:
        provisioner = await run_in_threadpool(_provisioner, ctx, name)
        reason = f"{exc.key}: {exc.problem}" if isinstance(exc, ConfigError) and exc.key else \
            exc.problem if isinstance(exc, ConfigError) else str(exc)
        log.info("console.system_settings_refused", user=user_of(request), system=name, reason=reason)
        shown = {"enabled": form.has("enabled"), "preset": form.get("loginUrl"),
                 "custom": form.get("customLoginUrl"), "clientId": form.get("clientId"),
                 "secretSet": _shown(provisioner)["secretSet"]}
        return page(request, "system_settings.html", status=400, system=name, form=shown,
                    origins=key_origins(provisioner), presets=LOGIN_URLS, error=reason)
    console.tested = None  # the Systems page tests again, with the new settings
    overlay = saved.overlay
    await run_in_threadpool(lambda: record(
        ctx, "console.system_settings_saved", user=user_of(request), action="UPDATE", subject=f"system/{name}",
        message=f"saved the connection settings of system {name}" + (" and a new client secret"
                                                                      if secret_changed else ""),
        system=name, enabled=overlay.get("enabled"), loginUrl=overlay.get("loginUrl"),
        clientId=overlay.get("clientId"), secretChanged=secret_changed))
    state = "enabled" if saved.enabled else "disabled"
    return redirect(request, "/systems", done=f"Saved the settings of {name} ({state})")


connection_routes = [
    Route("/systems/{name}/settings", _form, methods=["GET"]),
    Route("/systems/{name}/settings", _post, methods=["POST"]),
]
