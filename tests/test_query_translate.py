"""Binding correlation templates, batching equality filters, and the LDAP/SCIM/SOQL translators."""

from __future__ import annotations

from typing import Any

import pytest
from idsync.errors import QueryError
from idsync.query import (
    And,
    Compare,
    Literal_,
    Node,
    Not,
    Or,
    Path,
    Present,
    bind,
    equality_terms,
    escape_ldap_bytes,
    escape_ldap_value,
    matches,
    parse,
    placeholders,
    to_ldap,
    to_scim,
    to_soql,
    to_text,
)

_HOSTILE = 'x") or (true'


def _resolver(values: dict[str, Any]) -> Any:
    return values.__getitem__


def test_bind_substitutes_into_the_tree() -> None:
    """A placeholder value becomes the resolved value; other values stay as they are."""
    template = parse('/userName eq "${source.uid}" and /type eq "${not a placeholder"')
    bound = bind(template, _resolver({"source.uid": "bjensen"}))
    assert bound == And(
        (Compare(("userName",), "eq", "bjensen"), Compare(("type",), "eq", "${not a placeholder"))
    )


def test_bind_escapes_by_construction() -> None:
    """A hostile value stays one string value, through the tree and through canonical text."""
    bound = bind(parse('/userName eq "${source.uid}"'), _resolver({"source.uid": _HOSTILE}))
    assert bound == Compare(("userName",), "eq", _HOSTILE)
    assert bound is not None
    assert parse(to_text(bound)) == bound
    assert not matches(bound, {"userName": "x"})
    assert matches(bound, {"userName": _HOSTILE})


def test_bind_lists() -> None:
    """An empty list cannot match, one element is that value, several are an ``or``."""
    template = parse('/mail eq "${source.mail}"')
    assert bind(template, _resolver({"source.mail": []})) is None
    assert bind(template, _resolver({"source.mail": ["a@x"]})) == Compare(("mail",), "eq", "a@x")
    assert bind(template, _resolver({"source.mail": ["a@x", "b@x", "a@x", None]})) == Or(
        (Compare(("mail",), "eq", "a@x"), Compare(("mail",), "eq", "b@x"))
    )


def test_bind_keeps_or_flat() -> None:
    """A list inside an ``or`` template merges into that ``or``."""
    template = parse('/a eq "${x}" or /b eq 1')
    assert bind(template, _resolver({"x": [1, 2]})) == Or(
        (Compare(("a",), "eq", 1), Compare(("a",), "eq", 2), Compare(("b",), "eq", 1))
    )


def test_bind_none_simplifies() -> None:
    """``None`` makes a comparison unsatisfiable; ``and``/``or``/``!`` simplify around it."""
    values = _resolver({"gone": None, "uid": "bj"})
    assert bind(parse('/a eq "${gone}"'), values) is None
    assert bind(parse('/a eq "${gone}" and /b eq "${uid}"'), values) is None
    assert bind(parse('/a eq "${gone}" or /b eq "${uid}"'), values) == Compare(("b",), "eq", "bj")
    assert bind(parse('!(/a eq "${gone}")'), values) == Literal_(True)
    assert bind(parse('!(/a eq "${gone}") and /b eq "${uid}"'), values) == Compare(
        ("b",), "eq", "bj"
    )
    assert bind(parse("false"), values) is None


def test_bind_refuses_objects() -> None:
    """A placeholder resolving to a mapping is a QueryError, not a silently stringified value."""
    with pytest.raises(QueryError, match=r"source\.name"):
        bind(parse('/a eq "${source.name}"'), _resolver({"source.name": {"given": "x"}}))


def test_placeholders() -> None:
    """Every ``${expr}`` placeholder in the tree is listed, once."""
    template = parse('/a eq "${source.a}" and !(/b sw "${ source.b }" or /c eq "${source.a}")')
    assert placeholders(template) == {"source.a", "source.b"}
    assert placeholders(parse("/a pr")) == set()


def test_equality_terms() -> None:
    """One ``eq``, or an ``and`` of ``eq`` on distinct paths, gives sorted (path, value) pairs."""
    assert equality_terms(parse('/uid eq "bj"')) == ((("uid",), "bj"),)
    assert equality_terms(parse('/z eq 1 and /a/b eq "x"')) == ((("a", "b"), "x"), (("z",), 1))
    for other in [
        '/uid sw "b"',
        "/uid pr",
        "/a eq 1 or /b eq 2",
        "/a eq 1 and /a eq 2",
        "/a eq 1 and /b pr",
        "/a eq null",
        '!(/a eq "x")',
        "true",
    ]:
        assert equality_terms(parse(other)) is None, other


_LDAP = [
    ('/uid eq "bjensen"', "(uid=bjensen)"),
    ('/uid co "jen"', "(uid=*jen*)"),
    ('/uid sw "bj"', "(uid=bj*)"),
    ('/uid co ""', "(uid=*)"),
    ("/age ge 40", "(age>=40)"),
    ("/age le 40", "(age<=40)"),
    ("/age gt 40", "(&(age>=40)(!(age=40)))"),
    ("/age lt 40", "(&(age<=40)(!(age=40)))"),
    ("/mail pr", "(mail=*)"),
    ("/mail eq null", "(!(mail=*))"),
    ("/active eq true", "(active=TRUE)"),
    ("/active eq false", "(active=FALSE)"),
    ("true", "(objectClass=*)"),
    ("false", "(!(objectClass=*))"),
    ('/a pr and (/b pr or !(/c eq "x"))', "(&(a=*)(|(b=*)(!(c=x))))"),
    ('/name/sn eq "Jensen"', "(sn=Jensen)"),
    ('/uid eq "*)(uid=*"', r"(uid=\2a\29\28uid=\2a)"),
    ('/cn eq "a\\\\b\\u0000é"', "(cn=a\\5cb\\00é)"),
    ('/uid co "*)(uid=*"', r"(uid=*\2a\29\28uid=\2a*)"),
]


@pytest.mark.parametrize(("text", "expected"), _LDAP)
def test_to_ldap(text: str, expected: str) -> None:
    """Each operator maps to its RFC 4515 form, with the five special characters escaped."""
    assert to_ldap(parse(text)) == expected


def test_ldap_escape_helpers() -> None:
    """Values escape only the specials; bytes escape every byte (binary ids such as objectGUID)."""
    assert escape_ldap_value("O'Brien (x) * \\ \0") == "O'Brien \\28x\\29 \\2a \\5c \\00"
    assert escape_ldap_bytes(b"\x01\xab*") == "\\01\\ab\\2a"


def test_ldap_attribute_mapping_and_refusals() -> None:
    """``attribute`` maps paths; an attribute name that is not RFC 4512 is refused."""

    def attribute(path: Path) -> str:
        if path == ("_id",):
            return "entryUUID"
        raise QueryError(f"no attribute for {path}")

    assert to_ldap(parse('/_id eq "1"'), attribute) == "(entryUUID=1)"
    with pytest.raises(QueryError):
        to_ldap(parse("/other pr"), attribute)
    with pytest.raises(QueryError, match="not an LDAP attribute"):
        to_ldap(Present(("a=*)(x",)))
    with pytest.raises(QueryError, match="not an LDAP attribute"):
        to_ldap(parse("/a=* pr"))
    with pytest.raises(QueryError, match="gt null"):
        to_ldap(parse("/a gt null"))
    assert to_ldap(parse("/cn;lang-en pr")) == "(cn;lang-en=*)"


_SCIM = [
    ('/userName eq "bjensen"', 'userName eq "bjensen"'),
    ('/name/givenName sw "Bar"', 'name.givenName sw "Bar"'),
    ('/userName eq "x\\") or (true"', 'userName eq "x\\") or (true"'),
    ("/title pr", "title pr"),
    ("/active eq true", "active eq true"),
    ("/manager eq null", "manager eq null"),
    ("/age gt 1.5", "age gt 1.5"),
    ("/a eq 1 or /b eq 2 and /c eq 3", "a eq 1 or b eq 2 and c eq 3"),
    ("(/a eq 1 or /b eq 2) and /c eq 3", "(a eq 1 or b eq 2) and c eq 3"),
    ("!(/a pr)", "not (a pr)"),
    ("true", "id pr"),
    ("false", "not (id pr)"),
    (
        '/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/employeeNumber eq "7"',
        'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "7"',
    ),
]


@pytest.mark.parametrize(("text", "expected"), _SCIM)
def test_to_scim(text: str, expected: str) -> None:
    """RFC 7644 filters: dotted paths, JSON-quoted strings, ``not (...)``, ``true`` as ``id pr``."""
    assert to_scim(parse(text)) == expected


def test_scim_refuses_paths_it_cannot_write() -> None:
    """Deeper than one sub-attribute, or with filter syntax in the name: QueryError."""
    with pytest.raises(QueryError):
        to_scim(parse("/a/b/c pr"))
    with pytest.raises(QueryError):
        to_scim(parse('/x"y pr'))
    assert to_scim(parse("/a/b pr"), lambda p: "emails.value") == "emails.value pr"


_SOQL = [
    ('/Name eq "Acme"', "Name = 'Acme'"),
    ('/LastName eq "O\'Brien"', "LastName = 'O\\'Brien'"),
    ('/Name eq "a\\\\b\\"c\\nd\\te"', "Name = 'a\\\\b\\\"c\\nd\\te'"),
    ('/Name eq "50%_off"', "Name = '50%_off'"),
    ('/Name co "50%_off"', "Name LIKE '%50\\%\\_off%'"),
    ('/Name sw "O\'B"', "Name LIKE 'O\\'B%'"),
    ("/Amount gt 10", "Amount > 10"),
    ("/Amount ge 1e3", "Amount >= 1000.0"),
    ("/Amount ge 1e-7", "Amount >= 0.0000001"),
    ("/Amount lt 0.5", "Amount < 0.5"),
    ("/Amount le -2", "Amount <= -2"),
    ("/IsActive eq true", "IsActive = true"),
    ("/Email pr", "Email != null"),
    ("/Email eq null", "Email = null"),
    ("true", "Id != null"),
    ("false", "Id = null"),
    ("!(/Email pr)", "NOT (Email != null)"),
    ("/Account/Name eq 'x'", "Account.Name = 'x'"),
    ("/a eq 1 or /b eq 2 and /c eq 3", "a = 1 OR (b = 2 AND c = 3)"),
    ("(/a eq 1 or /b eq 2) and /c eq 3", "(a = 1 OR b = 2) AND c = 3"),
    ('/Name eq "\\u0001"', "Name = '\\u0001'"),
]


@pytest.mark.parametrize(("text", "expected"), _SOQL)
def test_to_soql(text: str, expected: str) -> None:
    """SOQL conditions: escaped single-quoted strings, escaped LIKE wildcards, bare literals."""
    assert to_soql(parse(text)) == expected


def test_soql_refuses_bad_fields_and_null_comparisons() -> None:
    """A field name with SOQL syntax in it, or ``gt null``, is a QueryError."""
    with pytest.raises(QueryError, match="not a SOQL field"):
        to_soql(parse("/Name=1-- pr"))
    with pytest.raises(QueryError, match="co null"):
        to_soql(parse("/Name co null"))
    assert to_soql(parse("/_id eq 'x'"), lambda p: "Id") == "Id = 'x'"


def test_translators_accept_empty_junctions() -> None:
    """Hand-built empty ``and``/``or`` translate to their identities instead of invalid syntax."""
    cases: list[tuple[Node, str, str]] = [
        (And(()), "(objectClass=*)", "Id != null"),
        (Or(()), "(!(objectClass=*))", "Id = null"),
        (Not(Or(())), "(!(!(objectClass=*)))", "NOT (Id = null)"),
    ]
    for node, ldap, soql in cases:
        assert to_ldap(node) == ldap
        assert to_soql(node) == soql
