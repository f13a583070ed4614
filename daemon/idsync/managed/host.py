"""What a script's ``identityServer`` and ``readFile`` answer.

OpenIDM's scripts find their project with PingIDM's ``identityServer`` and read a file of
it with Rhino's ``readFile`` (sample5's recon report reads its Handlebars template so:
``readFile(identityServer.getProjectLocation() + "/script/reconStatTemplate.html")``).

* ``identityServer.getProjectLocation()`` and ``getWorkingLocation()``: the project
  directory; ``getInstallLocation()``: its parent, as the ``&{launcher.install.location}``
  token says (``config/files.py``). ``getProperty(name, default)``: the value of those
  built-in properties for their names (``launcher.project.location``...), else
  ``default`` (null without one). Environment variables are not read: they hold the
  project's secrets.
* ``readFile(path[, encoding])``: the text of a file under the project directory (a
  relative path is taken from it), symbolic links resolved first, at most 1 MiB, in UTF-8
  unless ``encoding`` names another. A file elsewhere, a directory or a missing file is an
  error the script may catch, naming the path.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

from idsync.config.files import builtin_token
from idsync.errors import NotFound, ObjectRejected

__all__ = ["HOST_FUNCTIONS", "MAX_READ", "host_call"]

MAX_READ = 1024 * 1024
HOST_FUNCTIONS = frozenset({"identityServer.getProjectLocation", "identityServer.getInstallLocation",
                            "identityServer.getWorkingLocation", "identityServer.getProperty", "readFile"})


def host_call(project_dir: Path, function: str, arguments: list[Any]) -> Any:
    """Answer ``function`` (one of ``HOST_FUNCTIONS``) for the project in ``project_dir``."""
    project = project_dir.absolute()
    if function in ("identityServer.getProjectLocation", "identityServer.getWorkingLocation"):
        return str(project)
    if function == "identityServer.getInstallLocation":
        return str(project.parent)
    if function == "identityServer.getProperty":
        name = arguments[0] if arguments else None
        default = arguments[1] if len(arguments) > 1 else None
        found = builtin_token(name, project) if isinstance(name, str) else None
        return found if found is not None else default
    if function == "readFile":
        return _read(project, arguments)
    raise ObjectRejected(f"{function} is not a function idsync's scripts have")


def _read(project: Path, arguments: list[Any]) -> str:
    name = arguments[0] if arguments else None
    if not isinstance(name, str) or not name:
        raise ObjectRejected("readFile: give the path of a file of the project")
    encoding = arguments[1] if len(arguments) > 1 and arguments[1] is not None else "utf-8"
    try:
        codecs.lookup(str(encoding))
    except LookupError:
        raise ObjectRejected(f"readFile {name}: unknown encoding {encoding!r}") from None
    root = project.resolve()
    path = (project / name).resolve()
    if not path.is_relative_to(root):
        raise ObjectRejected(f"readFile {name}: scripts read files under the project directory ({root}) only")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_READ + 1)
    except FileNotFoundError:
        raise NotFound(f"readFile {name}: no such file") from None
    except IsADirectoryError:
        raise ObjectRejected(f"readFile {name}: a directory, not a file") from None
    except OSError as exc:
        raise ObjectRejected(f"readFile {name}: {exc.strerror}") from None
    if len(data) > MAX_READ:
        raise ObjectRejected(f"readFile {name}: larger than {MAX_READ // 1024} KiB")
    try:
        return data.decode(str(encoding))
    except UnicodeDecodeError as exc:
        raise ObjectRejected(f"readFile {name}: not {encoding} text ({exc.reason} at byte {exc.start})") from None
