"""The CSV file connector: one delimited text file as ``system/<name>/account``."""
