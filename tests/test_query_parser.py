"""The ``_queryFilter`` parser, its canonical text, and in-memory evaluation."""

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
    Present,
    matches,
    parse,
    quote,
    to_text,
)


def _eq(name: str, value: Any) -> Compare:
    return Compare((name,), "eq", value)


def test_and_binds_tighter_than_or() -> None:
    """``a or b and c`` is ``a or (b and c)``, as in CREST."""
    assert parse("a eq 1 or b eq 2 and c eq 3") == Or(
        (_eq("a", 1), And((_eq("b", 2), _eq("c", 3))))
    )


def test_parentheses_override_precedence() -> None:
    """Parentheses group an ``or`` under an ``and``."""
    assert parse("(a eq 1 or b eq 2) and c eq 3") == And(
        (Or((_eq("a", 1), _eq("b", 2))), _eq("c", 3))
    )


def test_nested_junctions_are_flattened() -> None:
    """Nested ``and``s (and ``or``s) become one flat node, whatever the parentheses."""
    assert parse("(a pr and b pr) and (c pr and d pr)") == And(tuple(Present((n,)) for n in "abcd"))
    assert parse("a pr or (b pr or c pr)") == Or(tuple(Present((n,)) for n in "abc"))


def test_not_applies_to_one_primary() -> None:
    """``!`` negates the primary right after it, not the whole conjunction."""
    assert parse("!a pr and b pr") == And((Not(Present(("a",))), Present(("b",))))
    assert parse("!(a pr and b pr)") == Not(And((Present(("a",)), Present(("b",)))))
    assert parse("! ( a pr )") == Not(Present(("a",)))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('a eq "x"', "x"),
        ("a eq 'x'", "x"),
        ("a eq 42", 42),
        ("a eq -7", -7),
        ("a eq 1.5", 1.5),
        ("a eq 2e3", 2000.0),
        ("a eq true", True),
        ("a eq false", False),
        ("a eq null", None),
        ('a eq ""', ""),
    ],
)
def test_value_kinds(text: str, value: Any) -> None:
    """Strings in either quotes, JSON numbers (int or float), booleans and null are values."""
    node = parse(text)
    assert isinstance(node, Compare)
    assert node.value == value
    assert type(node.value) is type(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r'a eq "say \"hi\""', 'say "hi"'),
        (r"a eq 'O\'Brien'", "O'Brien"),
        (r'a eq "back\\slash"', "back\\slash"),
        (r'a eq "\u00e9t\u00E9"', "été"),
        (r'a eq "\ud83d\ude00"', "\U0001f600"),
        (r'a eq "tab\there\nnew"', "tab\there\nnew"),
        ('a eq "it\'s"', "it's"),
        ("a eq 'say \"hi\"'", 'say "hi"'),
        ('a eq "a) or (true"', "a) or (true"),
    ],
)
def test_string_escapes(text: str, value: str) -> None:
    """Backslash escapes decode; the other quote character and parentheses are plain text."""
    node = parse(text)
    assert isinstance(node, Compare)
    assert node.value == value


def test_pointers() -> None:
    """The leading ``/`` is optional; segments split on ``/``; ``~1`` is ``/``, ``~0`` is ``~``."""
    assert parse("/name/givenName pr") == Present(("name", "givenName"))
    assert parse("userName pr") == Present(("userName",))
    assert parse("/a~1b/c~0d pr") == Present(("a/b", "c~d"))
    assert parse("/a~01 pr") == Present(("a~1",))


def test_operators_and_keywords_ignore_case() -> None:
    """``EQ``, ``Sw``, ``AND``, ``Pr``, ``TRUE`` all read as their lower-case selves."""
    assert parse("a EQ 1 AND b Sw 'x' OR c PR") == Or(
        (And((_eq("a", 1), Compare(("b",), "sw", "x"))), Present(("c",)))
    )
    assert parse("TRUE") == Literal_(True)
    assert parse("a eq TRUE") == _eq("a", True)


@pytest.mark.parametrize("op", ["eq", "co", "sw", "gt", "ge", "lt", "le"])
def test_every_operator(op: str) -> None:
    """Each comparison operator parses to its Compare."""
    assert parse(f'/x {op} "v"') == Compare(("x",), op, "v")  # type: ignore[arg-type]


def test_literals_and_a_field_named_true() -> None:
    """``true``/``false`` alone are literals; followed by an operator they are a field name."""
    assert parse("true") == Literal_(True)
    assert parse("(false)") == Literal_(False)
    assert parse("true eq 1") == _eq("true", 1)


def test_whitespace_is_flexible_and_plus_is_not_whitespace() -> None:
    """Any amount of whitespace separates tokens; ``+`` (URL encoding) stays part of a word."""
    assert parse("\t(a  eq\n1)or(b pr)") == Or((_eq("a", 1), Present(("b",))))
    with pytest.raises(QueryError):
        parse("a+eq+1")


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("", "empty _queryFilter", 0),
        ("   ", "empty _queryFilter", 0),
        ("/mail", "expected an operator after /mail", 5),
        ("/mail xyz 1", "expected an operator after /mail", 6),
        ("/mail eq", "expected a value after /mail eq", 8),
        ('/mail eq "abc', "unterminated string", 9),
        ("/mail eq 'abc\\'", "unterminated string", 9),
        ("a pr xyz", "unexpected 'xyz'", 5),
        ("a eq xyz", "unexpected 'xyz'", 5),
        ("a eq 01", "unexpected '01'", 5),
        ("(a pr", "expected ')'", 5),
        ("a pr)", "unexpected ')'", 4),
        ("a pr and", "expected a JSON pointer", 8),
        ("!!a pr", "expected a JSON pointer", 1),
        ('a eq "\\q"', "unknown escape", 6),
        ('a eq "\\u12"', "4 hexadecimal digits", 6),
        ("a//b pr", "empty segment", 2),
        ("a~2 pr", "'~' must be followed by 0 or 1", 1),
    ],
)
def test_errors_name_the_problem_and_position(text: str, message: str, position: int) -> None:
    """Malformed filters raise QueryError with a clear message and the 0-based position."""
    with pytest.raises(QueryError) as caught:
        parse(text)
    assert message in str(caught.value)
    assert caught.value.position == position
    assert caught.value.text == text


_ROUND_TRIP = [
    "true",
    "false",
    '/mail eq "a\\"b"',
    "/userName eq 'O\\'Brien'",
    '/a co "x\\\\y" and /b sw "\\u0000\\n"',
    "/a gt 1 or /b ge -2.5 and /c lt 1e300 or /d le 0",
    "!(/a pr)",
    "!(!(/a pr))",
    "!(/a pr or /b pr) and /c eq null",
    "(/a eq true or /b eq false) and (/c pr or /d pr)",
    '/a~1b/c~0d eq "été 😀"',
    '/members/0/value eq "x) or (true"',
    "/n eq 12345678901234567890",
]


@pytest.mark.parametrize("text", _ROUND_TRIP)
def test_round_trip(text: str) -> None:
    """``parse(to_text(x)) == x`` and the canonical text is a fixed point."""
    node = parse(text)
    canonical = to_text(node)
    assert parse(canonical) == node
    assert to_text(parse(canonical)) == canonical


def test_canonical_text() -> None:
    """The canonical text writes ``/`` pointers, JSON strings and minimal parentheses."""
    assert to_text(parse("mail eq 'a\"b'")) == '/mail eq "a\\"b"'
    assert to_text(parse("(a pr or b pr) and c pr")) == "(/a pr or /b pr) and /c pr"
    assert to_text(parse("a pr or b pr and c pr")) == "/a pr or /b pr and /c pr"
    assert quote("O'Brien") == '"O\'Brien"'
    assert quote(None) == "null"
    assert quote(True) == "true"
    assert quote(2.0) == "2.0"


def test_unwritable_values_and_paths_are_refused() -> None:
    """Text that would not parse back is refused rather than written."""
    with pytest.raises(QueryError):
        quote(float("nan"))
    with pytest.raises(QueryError):
        to_text(Present(("has space",)))
    with pytest.raises(QueryError):
        to_text(Present(()))


_USER = {
    "userName": "bjensen",
    "age": 41,
    "score": 2.5,
    "active": True,
    "name": {"givenName": "Barbara", "familyName": "Jensen"},
    "mail": ["bjensen@example.com", "barbara@example.org"],
    "emails": [{"type": "work", "value": "bj@work.example"}, {"type": "home", "value": "bj@home"}],
    "empty": "",
    "none": None,
    "nothing": [],
    "code": "5",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('userName eq "bjensen"', True),
        ('userName eq "BJensen"', False),
        ('/name/givenName eq "Barbara"', True),
        ('/name/middleName eq "x"', False),
        ('mail eq "barbara@example.org"', True),
        ('mail sw "bjensen@"', True),
        ('mail co "nothere"', False),
        ('/emails/value eq "bj@home"', True),
        ('/emails/0/value eq "bj@home"', False),
        ('/emails/1/value eq "bj@home"', True),
        ("age gt 40", True),
        ("age gt 41", False),
        ("age ge 41.0", True),
        ("score lt 3", True),
        ('age eq "41"', False),
        ("code eq 5", False),
        ('userName gt "a"', True),
        ('userName lt "a"', False),
        ("active eq true", True),
        ("active eq 1", False),
        ("active gt false", False),
        ('userName co "ens"', True),
        ('userName sw "bje"', True),
        ("age co 4", False),
        ("userName pr", True),
        ("empty pr", False),
        ("none pr", False),
        ("nothing pr", False),
        ("missing pr", False),
        ("/name pr", True),
        ("missing eq null", True),
        ("none eq null", True),
        ("nothing eq null", True),
        ("userName eq null", False),
        ("missing gt null", False),
        ("true", True),
        ("false", False),
        ('!(userName eq "x") and (age lt 10 or active eq true)', True),
        ('!(userName eq "bjensen")', False),
    ],
)
def test_matches(text: str, expected: bool) -> None:
    """In-memory evaluation: nested paths, any-of lists, typed comparisons, ``pr`` and null."""
    assert matches(parse(text), _USER) is expected


def test_matches_ignore_case() -> None:
    """``ignore_case=True`` compares strings case-insensitively (LDAP-like data)."""
    node = parse('userName eq "BJENSEN" and mail sw "BARBARA" and /name/familyName co "JEN"')
    assert not matches(node, _USER)
    assert matches(node, _USER, ignore_case=True)
    assert matches(parse("age eq 41"), _USER, ignore_case=True)


def test_matches_accepts_any_node_shape() -> None:
    """Hand-built trees (empty ``and``/``or``) evaluate like their logical identities."""
    empty_and: Node = And(())
    empty_or: Node = Or(())
    assert matches(empty_and, {})
    assert not matches(empty_or, {})
