"""Managed objects as a user changes them: validation, patches, revisions,
and implicit synchronization of each change."""

from __future__ import annotations

from idsync.managed.patch import InvalidPatch, apply_patch
from idsync.managed.service import Change, ManagedObjects
from idsync.store.validation import InvalidObject, validate

__all__ = ["Change", "InvalidObject", "InvalidPatch", "ManagedObjects", "apply_patch", "validate"]
