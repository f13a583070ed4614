"""idsync: reconcile external identity systems with a SQL identity store."""

__version__ = "0.1.0"
