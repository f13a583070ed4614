"""Cluster mode: several ``idsync run`` on one PostgreSQL store (``docs/cluster.md``)."""
