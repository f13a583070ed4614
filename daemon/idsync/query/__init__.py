"""The ``_queryFilter`` language: parse it, write it back, evaluate it, and translate it.

One syntax tree (:mod:`idsync.query.ast`) and many readers of it: in-memory
evaluation, LDAP filters, SCIM filters and SOQL here; SQL in the store.
"""

from __future__ import annotations

from idsync.query.ast import And, Compare, Literal_, Node, Not, Op, Or, Path, Present, Value
from idsync.query.bind import bind, equality_terms, placeholders
from idsync.query.evaluate import matches
from idsync.query.ldap import escape_ldap_bytes, escape_ldap_value, to_ldap
from idsync.query.parser import parse, parse_pointer
from idsync.query.scim import to_scim
from idsync.query.soql import escape_soql_string, to_soql
from idsync.query.text import format_pointer, quote, to_text

__all__ = [
    "And",
    "Compare",
    "Literal_",
    "Node",
    "Not",
    "Op",
    "Or",
    "Path",
    "Present",
    "Value",
    "bind",
    "equality_terms",
    "escape_ldap_bytes",
    "escape_ldap_value",
    "escape_soql_string",
    "format_pointer",
    "matches",
    "parse",
    "parse_pointer",
    "placeholders",
    "quote",
    "to_ldap",
    "to_scim",
    "to_soql",
    "to_text",
]
