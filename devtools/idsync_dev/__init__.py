"""Helpers for tests, benchmarks and the demo: real servers started on demand."""

from __future__ import annotations

from idsync_dev.sample_users import iter_sample_users_ldif, sample_users_ldif
from idsync_dev.slapd import Slapd, SlapdError

__all__ = ["Slapd", "SlapdError", "iter_sample_users_ldif", "sample_users_ldif"]
