"""What a node was deployed with: a digest of each file of its project's ``conf/``,
``jobs.d/`` and ``script/`` (the scripts mappings and managed types name by ``file``),
which it writes with its heartbeat (``cluster_nodes.config``).

Every node schedules the jobs of its own ``jobs.d/`` and runs a queue job with its own
definition of the job and its mappings, so nodes deployed with different files run
different things under one name: a job one node fires may be unknown to the node that
takes it, and a mapping may write differently depending on the node. The nodes compare
their digests and say which files differ (``cluster.config_differs``). ``idsync.toml`` is
left out: it holds what is a node's own (its name, the paths of its secrets).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["defines_job", "project_files"]

_OWN = {"conf/idsync.toml"}


def project_files(project_dir: Path) -> dict[str, str]:
    """Relative path -> a digest of the content, of every file under ``conf/``, ``jobs.d/``
    and ``script/``."""
    found: dict[str, str] = {}
    for top in ("conf", "jobs.d", "script"):
        root = project_dir / top
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            name = path.relative_to(project_dir).as_posix()
            if path.is_file() and name not in _OWN and not any(p.startswith(".") for p in path.parts[-2:]):
                found[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return found


def defines_job(files: dict[str, str], job: str) -> bool:
    """Whether a node deployed with ``files`` (``project_files``) has a file defining job
    ``job``: ``jobs.d/JOB.toml``, or PingIDM's ``conf/schedule-JOB.json``."""
    return f"jobs.d/{job}.toml" in files or f"conf/schedule-{job}.json" in files
