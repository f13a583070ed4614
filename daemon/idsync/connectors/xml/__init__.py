"""The XML file connector: the objects of one XML file as ``system/<name>/<type>``."""
