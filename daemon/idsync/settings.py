"""The daemon's own settings: ``conf/idsync.toml``, overridden by ``IDSYNC_*`` variables.

Nested keys use a double underscore in the environment: ``IDSYNC_STORE__URL``
overrides ``[store] url``. Relative paths are relative to the project directory
(the parent of ``conf/``). Secrets (a database password) belong in the
environment or in a ``*_file``, not in the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from idsync.errors import ConfigError
from idsync.keys import suggest

__all__ = ["Settings", "load_settings"]


class StoreSettings(BaseModel):
    # A misspelt key (``urll``) must not quietly leave the store on the SQLite default.
    model_config = ConfigDict(extra="forbid")

    url: str = ""  # default: sqlite:///<state_dir>/idsync.db
    url_file: Path | None = None
    echo: bool = False
    # Finished runs and their audit entries older than this are pruned (``store/retention.py``); 0 keeps all.
    keep_runs_days: int = Field(90, ge=0)


class ReconSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page_size: int = Field(1000, ge=1, le=100_000)
    audit_unchanged: bool = False
    progress_interval: float = Field(10.0, gt=0, le=86_400)


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["auto", "console", "json"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class ScriptSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A script call that may run for hours is a hung run; larger values also overflow the clock.
    time_limit: float = Field(1.0, gt=0, le=3600)
    memory_limit_mb: int = Field(64, ge=4, le=65_536)


class ApiSettings(BaseModel):
    """``[api]``: the HTTP API served by ``idsync run`` (``docs/api.md``)."""

    # A misspelt key (``tls_crt``) must not quietly leave the API on plain HTTP.
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # user name -> argon2 hash (``idsync api hash-password``); or a file of ``name:hash`` lines
    accounts: dict[str, str] = Field(default_factory=dict)
    accounts_file: Path | None = None
    # user name -> argon2 hash of accounts that may scrape /metrics and nothing else
    metrics_accounts: dict[str, str] = Field(default_factory=dict)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_failed_logins: int = Field(10, ge=1)  # per client address and minute
    # Reverse proxies whose X-Forwarded-For names the client (for the login throttle); none by default,
    # so a local process cannot pick the address its failed logins are counted under.
    trusted_proxies: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both for HTTPS, or neither")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IDSYNC_", env_nested_delimiter="__", extra="forbid")

    project_dir: Path = Path(".")
    state_dir: Path = Path("state")
    status_file: Path = Path("state/status.json")
    store: StoreSettings = StoreSettings()
    recon: ReconSettings = ReconSettings()
    log: LogSettings = LogSettings()
    scripts: ScriptSettings = ScriptSettings()
    api: ApiSettings = ApiSettings()

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
        if self.store.url_file is not None:
            try:
                return self.path(self.store.url_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
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
