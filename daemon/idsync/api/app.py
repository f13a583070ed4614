"""The API as an ASGI application, and the server ``idsync run`` starts in its loop.

Every route lives under ``/openidm/`` as in PingIDM, apart from ``/metrics``.
Authentication wraps everything (``auth.py``); errors leave in PingIDM's shape
(``errors.py``). Handlers do their blocking work (SQL, LDAP, recons) in worker
threads so the loop, which also drives the scheduler, never waits on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idsync import __version__
from idsync.api.actions import action_routes
from idsync.api.answer import JSONResponse, PrettyPrint
from idsync.api.audit import audit_routes
from idsync.api.auth import Accounts, AuthMiddleware, LoginLimit, load_accounts
from idsync.api.context import ApiContext
from idsync.api.email import email_routes
from idsync.api.endpoints import endpoint_routes
from idsync.api.errors import exception_handlers
from idsync.api.guard import MAX_HEAD_BYTES, RequestGuard
from idsync.api.jobs import job_routes
from idsync.api.managed import managed_routes
from idsync.api.mappings import mapping_routes
from idsync.api.metrics import Metrics
from idsync.api.openapi import openapi
from idsync.api.policy import policy_routes
from idsync.api.recon import recon_routes
from idsync.api.recon_assoc import recon_assoc_routes
from idsync.api.relationships import relationship_routes
from idsync.api.repo_link import repo_link_routes
from idsync.api.repo_sync import repo_sync_routes
from idsync.api.system import system_routes
from idsync.api.taskscanner import taskscanner_routes
from idsync.errors import ConfigError
from idsync.managed.recons import disable_detached, enable_detached
from idsync.settings import ApiSettings

__all__ = ["CONSOLE_PATH", "ApiServer", "ConsoleFactory", "create_app", "tls_files"]

# Where the admin console (``idsync.console``, mounted by the daemon) is served.
CONSOLE_PATH = "/admin"
# Builds the console's ASGI app over the API's context, accounts and login limit.
ConsoleFactory = Callable[[ApiContext, Accounts, LoginLimit], ASGIApp]

log = structlog.get_logger("idsync.api")


async def _ping(_request: Request) -> JSONResponse:
    return JSONResponse({"_id": "", "state": "ACTIVE_READY", "shortDesc": "OpenIDM ready"})


async def _version(_request: Request) -> JSONResponse:
    return JSONResponse({"_id": "version", "productVersion": __version__, "product": "idsync"})


class _Counting:
    """Counts answers by method and status for ``/metrics``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(scope["method"], str(message["status"])).inc()
                self.metrics.latency.labels(scope["method"]).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, counted)


def create_app(ctx: ApiContext, accounts: Accounts, console: ConsoleFactory | None = None) -> Starlette:
    """The API over ``ctx``, open only to ``accounts``; with ``console``, the admin console
    under ``/admin/`` (its own login form and session, the same accounts and login limit)."""
    metrics = Metrics(ctx.store, ctx.jobs, ctx.walks)
    openidm = [
        Route("/info/ping", _ping, methods=["GET"]),
        Route("/info/version", _version, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *recon_assoc_routes,  # before recon/{run_id}
        *recon_routes,
        *managed_routes,
        *action_routes,
        *policy_routes,
        *relationship_routes,
        *system_routes,
        *mapping_routes,
        *job_routes,
        *taskscanner_routes,
        *endpoint_routes,
        *email_routes,
        *audit_routes,
        *repo_sync_routes,
        *repo_link_routes,
    ]
    limit = LoginLimit(ctx.settings.max_failed_logins)
    routes = [Mount("/openidm", routes=openidm), Route("/metrics", metrics.endpoint, methods=["GET"])]
    if console is not None:
        routes.append(Mount(CONSOLE_PATH, app=console(ctx, accounts, limit)))
    app = Starlette(routes=routes, exception_handlers=exception_handlers)
    app.state.ctx = ctx
    app.add_middleware(AuthMiddleware, accounts=accounts, failures=limit,
                       own_login=(CONSOLE_PATH + "/",) if console is not None else ())
    app.add_middleware(_Counting, metrics=metrics)
    app.add_middleware(PrettyPrint)
    app.add_middleware(RequestGuard)  # outermost: a smuggling attempt gets no further, not even to auth
    return app


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handling: the daemon owns SIGTERM and SIGINT
    (uvicorn would otherwise capture them and raise them again once it stopped)."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()

    def install_signal_handlers(self) -> None:
        return None


class ApiServer:
    """uvicorn serving the API inside an already running asyncio loop.

    Building one checks everything that could refuse the API (accounts, sample
    passwords off loopback, TLS files, the address being free) and binds the
    socket, so the daemon can do it before any job fires and stop with a
    configuration error instead of a half-started service."""

    def __init__(self, ctx: ApiContext, *, config_file: str, console: ConsoleFactory | None = None) -> None:
        settings = ctx.settings
        project_dir = ctx.project().settings.project_dir
        accounts = load_accounts(settings, project_dir, config_file)
        if not len(accounts):
            log.warning("api.no_accounts", hint="every request but info/ping will be refused; add [api.accounts]")
        tls = tls_files(settings, project_dir, config_file)
        self.ctx = ctx
        # h11, always (never httptools, whatever is installed): the parser whose limits
        # ``guard.py`` and the tests rely on; the request line and headers are capped.
        config = uvicorn.Config(create_app(ctx, accounts, console), host=settings.host, port=settings.port,
                                http="h11", h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                                log_config=None, access_log=False, lifespan="off", server_header=False,
                                proxy_headers=bool(settings.trusted_proxies),
                                forwarded_allow_ips=settings.trusted_proxies or None,
                                **tls)  # type: ignore[arg-type]
        self._socket = _bind(settings.host, settings.port, config_file)
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None
        self.tls = bool(tls)

    async def start(self) -> None:
        enable_detached()  # the server outlives the recons its scripts start (``managed/recons.py``)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # a bind error surfaces here
                raise RuntimeError("the API server stopped while starting")
            await asyncio.sleep(0.02)
        log.info("api.listening", host=self.ctx.settings.host, port=self.port, tls=self.tls)

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5)
        self._socket.close()
        self.ctx.close()
        disable_detached()


def tls_files(settings: ApiSettings, project_dir: Path, config_file: str) -> dict[str, str]:
    """uvicorn's TLS arguments for ``[api]`` (none without ``tls_cert``); the pair is
    loaded once here, so a wrong file is a configuration error, not a failed start."""
    if settings.tls_cert is None or settings.tls_key is None:
        return {}
    cert, key = _path(project_dir, settings.tls_cert), _path(project_dir, settings.tls_key)
    for name, path in (("api.tls_cert", cert), ("api.tls_key", key)):
        if not path.is_file():
            raise ConfigError(config_file, name, f"no such file {path}")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(config_file, "api.tls_cert", f"cannot load the certificate and key: {exc}") from None
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def _bind(host: str, port: int, config_file: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say
    # they are TCP; with Nagle on, a kept-alive connection waits 40 ms for each answer's body.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(config_file, "api.port", f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _path(base: Path, value: Path) -> Path:
    return value if value.is_absolute() else base / value
