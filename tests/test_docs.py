"""The documentation stays true to the code: every log event idsync emits is in the
log-event reference, and the README stays a front door (at most 300 lines) whose links
all resolve."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_EVENT = re.compile(r"""(?:log|self\.log|bound|end)\.?(?:info|warning|error|debug|exception)?"""
                    r"""\(\s*"([a-z_]+\.[a-z_]+)"[,)]""")


def test_every_log_event_is_in_the_reference() -> None:
    """Each constant event name logged under daemon/idsync appears in docs/logs-and-metrics.md."""
    reference = (ROOT / "docs" / "logs-and-metrics.md").read_text(encoding="utf-8")
    events = {name for path in (ROOT / "daemon" / "idsync").rglob("*.py")
              for name in _EVENT.findall(path.read_text(encoding="utf-8"))
              if not name.endswith((".json", ".toml", ".py"))}
    assert {"recon.end", "job.end", "daemon.reload_failed"} <= events
    missing = sorted(e for e in events if f"`{e}`" not in reference)
    assert missing == []


def test_readme_is_a_front_door_whose_links_resolve() -> None:
    """README.md has at most 300 lines, and every relative link of it and of docs/ names a file that exists."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            assert (doc.parent / target).exists(), (doc.name, target)


def test_every_setting_is_in_the_configuration_reference() -> None:
    """docs/configuration.md holds the reference generated from the settings models, unchanged:
    a new or changed setting must be documented (paste ``idsync config reference``)."""
    from idsync.settings import settings_reference

    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    start, end = "<!-- settings-reference:start -->\n", "<!-- settings-reference:end -->"
    assert page[page.index(start) + len(start):page.index(end)].strip() == settings_reference().strip()
