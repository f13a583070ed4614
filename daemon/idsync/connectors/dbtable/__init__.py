"""The Database Table connector: one table of a SQL database (OpenICF's
``DatabaseTableConnector``) as ``system/<name>/account``."""
