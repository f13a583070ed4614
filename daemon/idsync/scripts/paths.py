"""Where a script's ``"file"`` is looked for, in PingIDM's order.

A relative path is tried against the project directory (the parent of ``conf/``),
then the project's ``script/`` directory, then idsync's own default scripts; the
first file that exists is read. A path found nowhere is a ``ConfigError`` that names
every place looked, so ``idsync validate`` says where the file was expected. An
absolute path is read as it is. A path may not climb out of the place it is looked
up in (``..``), so a configuration cannot read arbitrary files as scripts.

PingIDM ships default scripts in its distribution; those that mappings rely on are
implemented by idsync itself where it supports them (``ui/correlateTreeToQueryFilter.js``
is the ``expressionTree`` correlation), and named in the error when it does not.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from idsync.errors import ConfigError

__all__ = ["DEFAULT_SCRIPTS", "ScriptPaths"]

DEFAULT_SCRIPTS = Path(__file__).resolve().parent.parent / "share" / "script"

# PingIDM's own scripts that mappings in its samples name, and why idsync has no file for them.
_PINGIDM_BUNDLED = {
    "ui/correlateTreeToQueryFilter.js": "idsync performs it itself when the correlation query has an "
                                        "expressionTree; give one",
    "workflow/triggerWorkflowFromSync.js": "idsync has no workflow engine",
    "roles/onSync-roles.js": "idsync computes no role grants in mappings",
}


class ScriptPaths:
    """The places one project's scripts are looked up in."""

    def __init__(self, project_dir: Path, defaults: Path | None = None) -> None:
        self.project_dir = project_dir
        self.places = (project_dir, project_dir / "script", defaults or DEFAULT_SCRIPTS)

    def find(self, path: str) -> Path | None:
        """The file ``path`` names, or ``None``."""
        given = Path(path)
        if given.is_absolute():
            return given if given.is_file() else None
        if ".." in PurePosixPath(path).parts:
            return None
        for place in self.places:
            candidate = place / given
            if candidate.is_file():
                return candidate
        return None

    def read(self, path: object, file: str, key: str) -> str:
        """The text of the script ``path`` names; ``ConfigError`` naming every place looked."""
        if not isinstance(path, str) or not path:
            raise ConfigError(file, key, "file must be a non-empty string")
        if ".." in PurePosixPath(path).parts and not Path(path).is_absolute():
            raise ConfigError(file, key, f"script file {path}: a relative path may not contain '..'")
        found = self.find(path)
        if found is None:
            looked = ", ".join(str(place / path) for place in self.places) if not Path(path).is_absolute() else path
            why = _PINGIDM_BUNDLED.get(path)
            note = f" ({path} is a script PingIDM bundles: {why})" if why else ""
            raise ConfigError(file, key, f"script file {path} not found; looked in {looked}{note}")
        try:
            return found.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(file, key, f"cannot read script file {found}: {reason}") from None
