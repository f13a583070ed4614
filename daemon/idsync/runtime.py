"""The interpreter's settings for idsync's processes: the commands, the daemon and the
recon's worker processes.

A recon builds each page's objects, rows and audit entries, tens of thousands of lists
and dicts that all live until the page's transaction ends. The cycle collector, run by
default every 700 new containers, walks them again and again and finds nothing to free:
3-8% of a first recon's CPU, measured with ``gc.callbacks`` (877 young collections in a
recon of 30,000 users). A young generation of ``YOUNG`` containers makes that a handful.
Garbage without cycles goes at once, by reference counting, whatever this says; what
cycles there are (an exception's traceback) are still collected, later.

At the end of a command the interpreter's exit collects cycles once more, over every
object the process made: 0.1 to 0.35 CPU seconds of a command that itself took less.
Nothing is left for it to free that matters (the command closed what it opened), so
the process's own command freezes the collector's objects first (``leave_to_exit``).
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG", "leave_to_exit", "tune_collector"]

YOUNG = 20_000  # new containers between two collections of the youngest generation


def tune_collector() -> None:
    """Collect cycles less often than Python's default: once per ``YOUNG`` new containers."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)


def leave_to_exit() -> None:
    """Leave every object made so far out of the interpreter's last cycle collection, at
    the end of a process whose stores, connections and files are closed: objects are no
    longer freed one cycle at a time only for the process to end. Never inside a
    process that goes on (a test's ``main(argv)``): its garbage would stay for good."""
    gc.freeze()
