"""The daemon's own settings: ``conf/idsync.toml``, overridden by ``IDSYNC_*`` variables.

Nested keys use a double underscore in the environment: ``IDSYNC_STORE__URL``
overrides ``[store] url``. Relative paths are relative to the project directory
(the parent of ``conf/``). Secrets (a database password) belong in the
environment or in a ``*_file``, not in the file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from idsync.errors import ConfigError
from idsync.keys import suggest

__all__ = ["Settings", "load_settings", "settings_reference"]


class StoreSettings(BaseModel):
    # A misspelt key (``urll``) must not quietly leave the store on the SQLite default.
    model_config = ConfigDict(extra="forbid")

    url: str = Field("", description="the store's SQLAlchemy URL: `sqlite:///path`, `postgresql://user@host/db`, "
                     "`mysql://user@host/db`; empty: `sqlite:///<state_dir>/idsync.db`. A password belongs in "
                     "`url_file` or `IDSYNC_STORE__URL`")
    url_file: Path | None = Field(None, description="a file holding the URL (with its password), e.g. a systemd "
                                  "credential; relative to the project directory")
    echo: bool = Field(False, description="log every SQL statement (parameters hidden), for debugging")
    # Finished runs and their audit entries older than this are pruned (``store/retention.py``); 0 keeps all.
    keep_runs_days: int = Field(90, ge=0, description="finished runs and their audit entries older than this many "
                                "days are pruned by the daemon every six hours and by `idsync prune`; 0 keeps all")


class ReconSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page_size: int = Field(1000, ge=1, le=100_000, description="objects the engine assesses and writes per batch "
                           "(LDAP reads use the provisioner's `blockSize`)")
    audit_unchanged: bool = Field(False, description="write an audit entry for objects a recon leaves unchanged "
                                  "too (CONFIRMED with nothing to write, IGNORE, ASYNC; a NOREPORT never): "
                                  "`audit/recon` and `recon/assoc` then answer every object a run met")
    progress_interval: float = Field(10.0, gt=0, le=86_400, description="seconds between `recon.progress` events "
                                     "off a terminal")
    workers: int = Field(0, ge=0, le=64, description="processes on this machine that share the source phase of a "
                         "recon with much to do (its mapping links fewer than half its source's objects: a first "
                         "load); 0: one per core, at most 8; 1: one process")
    min_partition_size: int = Field(10_000, ge=1, description="a source with fewer objects than twice this is "
                                    "read by one process")


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["auto", "console", "json"] = Field("auto", description="`console` lines, `json` lines, or "
                                                       "`auto`: console on a terminal, JSON otherwise (native "
                                                       "journal entries under systemd)")
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="the lowest level logged, by "
                                                                "the daemon and by every command but those that "
                                                                "answer a question (`status`, `managed` ...: "
                                                                "warning); `--log-level` overrides it")


class ScriptSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A script call that may run for hours is a hung run; larger values also overflow the clock.
    time_limit: float = Field(1.0, gt=0, le=3600, description="seconds one script call may run")
    memory_limit_mb: int = Field(64, ge=4, le=65_536, description="memory of one script context, in MB")
    max_calls: int = Field(100, ge=1, le=100_000, description="`openidm.*` calls one script run may make; each "
                           "call runs the script once more from the start (docs/mappings.md)")


class CryptoSettings(BaseModel):
    """``[crypto]``: the symmetric key of PingIDM's ``$crypto`` values (``docs/pingidm.md``)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field("", description="the AES key (16, 24 or 32 bytes) in base64; set it with "
                     "`IDSYNC_CRYPTO__KEY` or `key_file`, not in the file")
    key_file: Path | None = Field(None, description="a file holding the key in base64 (e.g. a systemd "
                                  "credential); relative to the project directory. With neither, "
                                  "`<state_dir>/keys/<key_alias>.key` is used, made on first use")
    key_alias: str = Field("openidm-sym-default", min_length=1, description="the key's alias, written into "
                           "encrypted values and matched when they are decrypted")


class ApiSettings(BaseModel):
    """``[api]``: the HTTP API served by ``idsync run`` (``docs/api.md``)."""

    # A misspelt key (``tls_crt``) must not quietly leave the API on plain HTTP.
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="serve the HTTP API inside `idsync run`")
    host: str = Field("127.0.0.1", description="the address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="the port to listen on")
    # user name -> argon2 hash (``idsync api hash-password``); or a file of ``name:hash`` lines
    accounts: dict[str, str] = Field(default_factory=dict, description="`[api.accounts]`: user name = argon2 hash "
                                     "(`idsync api hash-password`) of the administrators")
    accounts_file: Path | None = Field(None, description="a file of `name:hash` lines, added to `accounts`")
    # user name -> argon2 hash of accounts that may scrape /metrics and nothing else
    metrics_accounts: dict[str, str] = Field(default_factory=dict, description="`[api.metrics_accounts]`: "
                                             "accounts that may read `/metrics` and nothing else")
    tls_cert: Path | None = Field(None, description="a PEM certificate: with `tls_key`, the API speaks HTTPS only")
    tls_key: Path | None = Field(None, description="the certificate's PEM private key")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="larger request bodies get 413")
    max_failed_logins: int = Field(10, ge=1, description="failed logins per client address and minute before 429")
    # Reverse proxies whose X-Forwarded-For names the client (for the login throttle); none by default,
    # so a local process cannot pick the address its failed logins are counted under.
    trusted_proxies: list[str] = Field(default_factory=list, description="reverse proxies whose "
                                       "`X-Forwarded-For` names the client")
    console: bool = Field(True, description="serve the admin console under `/admin/` (console.md)")
    console_idle_minutes: int = Field(30, ge=1, le=1440, description="a console session ends after this many "
                                      "minutes without a request")
    # A paged query of a system holds the connector's read (a connection) between pages (``api/walks.py``).
    system_query_idle_seconds: float = Field(300.0, gt=0, le=86400, description="a paged query of a system's "
                                             "objects is closed (its connection with it) this many seconds after "
                                             "its last page; its cookie is then refused (api.md)")
    system_queries_held: int = Field(8, ge=1, le=1000, description="paged queries of systems held between pages "
                                     "at once, each with a connection to its system; one more closes the one "
                                     "idle longest, whose next page is refused")

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both for HTTPS, or neither")
        return self


class ClusterSettings(BaseModel):
    """``[cluster]``: several daemons on one PostgreSQL store share the jobs (``docs/cluster.md``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="run as one node of a cluster: every fire and every manual run "
                          "goes through a job queue in the PostgreSQL store, run once by whichever node is free; "
                          "needs a PostgreSQL store")
    node_name: str = Field("", max_length=64, description="this node's name in `idsync status`, the API and "
                           "the runs it records; empty: the host name")
    concurrency: int = Field(2, ge=1, le=64, description="queue jobs (job runs and recon partitions) this node "
                             "runs at once")
    heartbeat: float = Field(5.0, gt=0, le=300, description="seconds between a node's heartbeats in the store")
    stall_timeout: float = Field(20.0, gt=0, le=3600, description="seconds without a heartbeat after which a "
                                 "node counts as dead and its runs and partitions are taken over by another; "
                                 "at least twice `heartbeat`")
    partitions: int = Field(0, ge=0, le=64, description="source partitions of one recon; 0: one per queue slot "
                            "of the nodes alive (`concurrency` times the nodes); 1: never split")
    min_partition_size: int = Field(10_000, ge=1, description="a source with fewer objects than twice this is "
                                    "read as one partition")

    @model_validator(mode="after")
    def _stall_after_heartbeats(self) -> ClusterSettings:
        if self.stall_timeout < 2 * self.heartbeat:
            raise ValueError("stall_timeout must be at least twice heartbeat, or a live node is taken for dead")
        return self


class DaemonSettings(BaseModel):
    """``[daemon]``: what ``idsync run`` does besides running jobs."""

    model_config = ConfigDict(extra="forbid")

    watch_config: bool = Field(True, description="`idsync run` reloads by itself, as on SIGHUP, once the files "
                               "it loads (`conf/*.json`, `conf/idsync.toml`, `jobs.d/*.toml`, `script/**/*.js`) were "
                               "changed, added or removed and then left alone for a second (it looks every two "
                               "seconds); `false`: only SIGHUP (`systemctl reload idsync`) reloads")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IDSYNC_", env_nested_delimiter="__", extra="forbid")

    project_dir: Path = Field(Path("."), description="the project directory (`-p`, `IDSYNC_PROJECT`)")
    state_dir: Path = Field(Path("state"), description="where the default SQLite store, the status file, the key "
                            "made by default (`keys/`), the refresh tokens of the consents given in the admin "
                            "console (`oauth/`) and the connection settings saved in it (`connectors/`, which take "
                            "precedence over the provisioners' values: [console.md](console.md#connection-settings)) "
                            "live")
    status_file: Path = Field(Path("state/status.json"), description="the status file; default "
                              "`<state_dir>/status.json`")
    store: StoreSettings = StoreSettings()
    recon: ReconSettings = ReconSettings()
    log: LogSettings = LogSettings()
    scripts: ScriptSettings = ScriptSettings()
    crypto: CryptoSettings = CryptoSettings()
    api: ApiSettings = ApiSettings()
    cluster: ClusterSettings = ClusterSettings()
    daemon: DaemonSettings = DaemonSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file, which beats the defaults.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _status_file_in_state_dir(self) -> Settings:
        # Unless set on its own, the status file lives in the state directory, wherever that is.
        if "status_file" not in self.model_fields_set:
            self.status_file = self.state_dir / "status.json"
        return self

    @property
    def conf_dir(self) -> Path:
        return self.project_dir / "conf"

    @property
    def jobs_dir(self) -> Path:
        return self.project_dir / "jobs.d"

    def path(self, value: Path) -> Path:
        return value if value.is_absolute() else self.project_dir / value

    def store_url(self) -> str:
        """The store's URL; a ``ConfigError`` when it cannot be read or does not parse, or
        when cluster mode is on and the store is not PostgreSQL (the job queue lives in the store)."""
        url = self._store_url()
        if self.store.url_file is not None or self.store.url:
            self._check_url(url)  # idsync's own (a SQLite file in state_dir) needs no parser's word
        if self.cluster.enabled:
            scheme = url.partition(":")[0].partition("+")[0].lower()
            if scheme not in ("postgresql", "postgres"):
                raise ConfigError(str(self.conf_dir / "idsync.toml"), "cluster.enabled",
                                  f"cluster mode needs a PostgreSQL store; [store] url is a {scheme or 'sqlite'} "
                                  "URL (set [store] url to postgresql://..., or enabled = false)")
        return url

    def _check_url(self, url: str) -> None:
        """Refuse a URL SQLAlchemy cannot parse, naming where it was set; the message never
        quotes the URL (it may hold a password)."""
        from sqlalchemy.engine import make_url  # only for commands that use the store

        try:
            parsed = make_url(url)
            parsed.get_backend_name()
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several kinds
            port = isinstance(exc, ValueError) and "int()" in str(exc)
            why = "its port is not a number" if port else "not in the form DRIVER://USER:PASSWORD@HOST:PORT/DATABASE"
            if self.store.url_file is not None:
                file, key = str(self.conf_dir / "idsync.toml"), "store.url_file"
                why = f"{self.path(self.store.url_file)}: {why}"
            elif any(name.upper() == "IDSYNC_STORE__URL" for name in os.environ):
                file, key = "environment", "IDSYNC_STORE__URL"
            else:
                file, key = str(self.conf_dir / "idsync.toml"), "store.url"
            raise ConfigError(file, key, f"not a database URL ({why})") from None

    def _store_url(self) -> str:
        if self.store.url_file is not None:
            try:
                return self.path(self.store.url_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigError(str(self.conf_dir / "idsync.toml"), "store.url_file",
                                  f"cannot read {self.path(self.store.url_file)}: {reason}") from None
        if self.store.url:
            return self.store.url
        return f"sqlite:///{self.path(self.state_dir) / 'idsync.db'}"


def load_settings(project_dir: Path) -> Settings:
    """Read ``conf/idsync.toml`` (optional) under ``project_dir`` plus the environment."""
    file = project_dir / "conf" / "idsync.toml"
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(file), "", f"not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError.unreadable(str(file), exc) from None
    data["project_dir"] = project_dir
    try:
        return Settings(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] != "extra_forbidden":
            raise ConfigError(str(file), key, err["msg"]) from None
        *section, name = (str(p) for p in err["loc"])
        if not _in_file(data, [*section, name]):
            # Not in the file, so an IDSYNC_* variable brought it.
            variable = "IDSYNC_" + "__".join(p.upper() for p in [*section, name])
            raise ConfigError("environment", variable, suggest(name, _fields(section))) from None
        raise ConfigError(str(file), key, suggest(name, _fields(section))) from None


def _in_file(data: dict[str, Any], path: list[str]) -> bool:
    node: Any = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _fields(section: list[str]) -> list[str]:
    """The setting names of ``[section]`` (the top level when empty)."""
    model: type[BaseModel] = Settings
    for part in section:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [n for n in model.model_fields if n != "project_dir"]


_SECTIONS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("", Settings), ("store", StoreSettings), ("recon", ReconSettings), ("log", LogSettings),
    ("scripts", ScriptSettings), ("crypto", CryptoSettings), ("api", ApiSettings),
    ("cluster", ClusterSettings), ("daemon", DaemonSettings))


def settings_reference() -> str:
    """Every setting of ``conf/idsync.toml`` as Markdown tables, from the models themselves:
    key, default, the environment variable that overrides it, and what it does."""
    out: list[str] = []
    for section, model in _SECTIONS:
        out += [f"### `[{section}]`" if section else "### Top level", "",
                "| key | default | variable | meaning |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                continue
            default = field.get_default(call_default_factory=True)
            shown = "(none)" if default in (None, "", {}, []) else f"`{default}`"
            variable = "IDSYNC_" + (f"{section.upper()}__" if section else "") + name.upper()
            out.append(f"| `{name}` | {shown} | `{variable}` | {field.description or ''} |")
        out.append("")
    return "\n".join(out)
