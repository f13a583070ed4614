"""Reading configuration files: JSON with line numbers in errors, secrets from
the environment and from files.

Substitution (after parsing, on string values only, so a value can never break
the JSON around it):

* ``&{NAME}`` / ``&{NAME|default}`` (PingIDM's property tokens) and ``${NAME}``
  take the environment variable NAME; ``&{a.b}`` also tries ``A_B``. ``${...}``
  with a dot (``${source.uid}``) is left alone: it is a correlation placeholder.
  PingIDM's built-in tokens resolve without a variable (one that is set still wins):
  ``launcher.project.location`` and ``idm.instance.dir`` are the project directory,
  ``launcher.working.location`` too (idsync keeps no separate working directory),
  ``launcher.install.location`` and ``idm.install.dir`` its parent (where PingIDM's
  own install directory holds its projects).
* A key ``X_file`` (``credentials_file``, ``clientSecret_file``) is replaced by
  ``X`` holding the file's contents, trailing newline removed; a relative path is
  looked up in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) first.
* The ``source`` of a script object is never touched (JavaScript template
  literals use ``${}`` too).

Errors name the file and the JSON key, never the secret value.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from idsync.errors import ConfigError

__all__ = ["UnsetVariable", "builtin_token", "load_json", "substitute"]

class UnsetVariable(ConfigError):
    """A token names an environment variable that is not set (and gives no default)."""


_TOKEN = re.compile(r"&\{([^}|]+)(?:\|([^}]*))?\}|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_json(path: Path, *, project_dir: Path | None = None, secrets: bool = True) -> Any:
    """Parse ``path`` and (unless ``secrets`` is false) substitute secrets;
    ConfigError with line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.unreadable(str(path), exc) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), f"line {exc.lineno} column {exc.colno}", f"not valid JSON: {exc.msg}") from None
    if not secrets:
        return data
    return substitute(data, file=str(path), base=project_dir or path.parent.parent)


def substitute(value: Any, *, file: str, base: Path, key: str = "") -> Any:
    """``value`` with its tokens and ``X_file`` keys substituted; ``base`` is the
    project directory (built-in tokens, relative secret files)."""
    if isinstance(value, str):
        return _tokens(value, file=file, key=key, base=base)
    if isinstance(value, list):
        return [substitute(v, file=file, base=base, key=f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    is_script = isinstance(value.get("type"), str) and "source" in value
    out: dict[str, Any] = {}
    for k, v in value.items():
        child = f"{key}.{k}" if key else k
        if is_script and k == "source":
            out[k] = v
        elif k.endswith("_file") and isinstance(v, str) and len(k) > 5:
            out[k[:-5]] = _read_secret(v, file=file, key=child, base=base)
        else:
            out[k] = substitute(v, file=file, base=base, key=child)
    return out


_PROJECT_TOKENS = ("launcher.project.location", "launcher.working.location", "idm.instance.dir")
_INSTALL_TOKENS = ("launcher.install.location", "idm.install.dir")


def builtin_token(name: str, base: Path) -> str | None:
    """PingIDM's built-in property ``name`` for the project in ``base`` (the module's docstring)."""
    if name in _PROJECT_TOKENS:
        return str(base.absolute())
    if name in _INSTALL_TOKENS:
        return str(base.absolute().parent)
    return None


def _tokens(text: str, *, file: str, key: str, base: Path) -> str:
    if "{" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        default = match.group(2)
        for candidate in (name, name.upper().replace(".", "_")):
            if candidate in os.environ:
                return os.environ[candidate]
        builtin = builtin_token(name, base) if match.group(1) else None
        if builtin is not None:
            return builtin
        if default is not None:
            return default
        raise UnsetVariable(file, key, f"environment variable {name} is not set")

    return _TOKEN.sub(replace, text)


def _read_secret(path_text: str, *, file: str, key: str, base: Path) -> str:
    path = Path(os.path.expandvars(path_text))
    candidates = [path] if path.is_absolute() else []
    if not path.is_absolute():
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds:
            candidates.append(Path(creds) / path)
        candidates.append(base / path)
    for candidate in candidates:
        try:
            return candidate.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(file, key, f"cannot read secret file {candidate}: {exc.strerror}") from None
        except UnicodeDecodeError:
            # Never where in it: the position would tell something of the secret.
            raise ConfigError(file, key, f"secret file {candidate} is not UTF-8 text") from None
    raise ConfigError(file, key, f"secret file {path_text} not found")
