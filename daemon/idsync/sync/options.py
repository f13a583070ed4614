"""What a caller may change about one recon run (``idsync recon`` options, a job's
settings, an API request): ``ReconOptions``, shared by the run and its assessor."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from idsync.sync.partitions import Splitter
from idsync.sync.summary import Counters

__all__ = ["ReconOptions"]


@dataclass
class ReconOptions:
    dry_run: bool = False
    allow_create: bool | None = None  # None: as the mapping says
    allow_update: bool | None = None
    allow_delete: bool | None = None
    max_deletes: int | float | None = None
    page_size: int | None = None
    job: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    on_progress: Callable[[Counters], None] | None = None
    run_id: str | None = None  # chosen by the caller that must answer with it before the run ends
    node: str | None = None  # the cluster node running it (recorded with the run); None: the host name
    fire: dt.datetime | None = None  # the scheduled fire it runs for; None: started by hand
    splitter: Splitter | None = None  # cluster mode: the source phase may be split over the nodes
    # Write again the values a target never returns (passwords), whatever the links' digests
    # of what was last written say (``written.py``).
    rewrite_write_only: bool = False
    # PingIDM's settings for one run (a recon request's body: ``Project.mapping_for_run``).
    overrides: Mapping[str, Any] | None = None
    # Set once the run is recorded: what a caller answering ``ACTIVE`` before the run ends waits for.
    recorded: threading.Event | None = None
    # Called once the run is recorded (the daemon's status file then shows it running).
    on_start: Callable[[], None] | None = None
