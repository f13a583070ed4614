"""Named queries (``_queryId``): the stock ids, a project's repository SQL read as a
filter, and parameters bound as values, never as query syntax."""

from __future__ import annotations

import pytest
from idsync.errors import QueryError
from idsync.query import And, Compare, Literal_, Not, Or, Present, parse, to_ldap
from idsync.query.named import STOCK, NamedQueries
from idsync.query.sql import parse_sql_query
from idsync.store.filters import to_sql


def test_stock_queries_bind_their_parameters() -> None:
    """for-userName compares userName with uid; get-by-field-value takes the field
    from a parameter; query-all matches everything; credential-query keeps the
    inactive out."""
    queries = NamedQueries()
    assert queries.get("for-userName").bind({"uid": "bjensen"}) == Compare(("userName",), "eq", "bjensen")
    assert queries.get("get-by-field-value").bind({"field": "/name/givenName", "value": "Babs"}) == Compare(
        ("name", "givenName"), "eq", "Babs")
    assert queries.get("query-all").matches_all and queries.get("query-all-ids").ids_only
    assert queries.get("credential-query").bind({"username": "u"}) == And((
        Compare(("userName",), "eq", "u"), Not(Compare(("accountStatus",), "eq", "inactive"))))
    assert queries.get("scan-tasks").bind({"property": "/sunset/date", "condition.before": "2026-01-01",
                                           "taskState.completed": "/sunset/task-completed"}) == And((
        Compare(("sunset", "date"), "lt", "2026-01-01"), Not(Present(("sunset", "task-completed")))))


@pytest.mark.parametrize("hostile", ["*)(uid=*", "' OR 1=1 --", 'x") or (true', "${uid}", "%"])
def test_a_hostile_parameter_stays_one_value(hostile: str) -> None:
    """A parameter holding filter or SQL syntax is one compared value: the LDAP
    filter escapes it, the SQL binds it, and nothing in it is read as a placeholder."""
    node = STOCK["for-userName"].bind({"uid": hostile})
    assert node == Compare(("userName",), "eq", hostile)
    assert to_ldap(node).count("(") == 1  # (userName=...) and nothing more
    sql = to_sql(node, "user", {"userName"})
    assert hostile not in str(sql.compile(compile_kwargs={}))


def test_a_field_parameter_must_name_a_field() -> None:
    """get-by-field-value's field is a name, not syntax: anything else is refused."""
    for bad in ("uid=*)(cn", "a b", "", "x/(y)"):
        with pytest.raises(QueryError, match="must name a field"):
            STOCK["get-by-field-value"].bind({"field": bad, "value": "v"})


def test_missing_and_null_parameters() -> None:
    """A missing parameter is an error naming it; a null one matches nothing."""
    with pytest.raises(QueryError, match="for-userName needs the parameter uid"):
        STOCK["for-userName"].bind({})
    assert STOCK["for-userName"].bind({"uid": None}) is None


def test_unknown_and_internal_ids_are_named() -> None:
    """An unknown id lists the known ones; OpenIDM's internal ones say why they cannot be used."""
    queries = NamedQueries(own={"by-mail": parse_sql_query("by-mail", "SELECT * FROM t WHERE mail = ${m}", "f")})
    with pytest.raises(QueryError, match=r"unknown _queryId nope \(known: by-mail, credential-query"):
        queries.get("nope")
    with pytest.raises(QueryError, match="links-for-firstId queries OpenIDM's internal tables"):
        queries.get("links-for-firstId")
    assert queries.get("by-mail").bind({"m": "a@b"}) == Compare(("mail",), "eq", "a@b")


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT * FROM ${unquoted:_resource} WHERE mail = ${mail} SKIP ${unquoted:_pagedResultsOffset} "
     "LIMIT ${unquoted:_pageSize}", parse('mail eq "${mail}"')),
    ("SELECT fullobject::text FROM ${_dbSchema}.${_mainTable} obj INNER JOIN ${_dbSchema}.objecttypes objtype "
     "ON objtype.id = obj.objecttypes_id WHERE json_extract_path_text(fullobject, 'mail') = ${mail} "
     "AND objtype.objecttype = ${_resource}", parse('mail eq "${mail}"')),
    ("SELECT fullobject FROM x obj WHERE json_extract(fullobject, '$.name.givenName') = ${g}",
     Compare(("name", "givenName"), "eq", "${g}")),
    ("SELECT * FROM t WHERE (sn = ${sn} OR givenName = ${gn}) AND accountStatus <> 'inactive' "
     "AND manager IS NOT NULL ORDER BY sn",
     And((Or((Compare(("sn",), "eq", "${sn}"), Compare(("givenName",), "eq", "${gn}"))),
          Not(Compare(("accountStatus",), "eq", "inactive")), Present(("manager",))))),
    ("SELECT * FROM t WHERE sn LIKE 'Jen%' AND NOT cn LIKE '%test%' AND age >= 18",
     And((Compare(("sn",), "sw", "Jen"), Not(Compare(("cn",), "co", "test")), Compare(("age",), "ge", 18)))),
    ("SELECT * FROM ${unquoted:_resource} WHERE ${dotnotation:property} < ${condition.before} AND "
     "${dotnotation:taskState.completed} is NULL", And((
         Compare(("${property}",), "lt", "${condition.before}"), Not(Present(("${taskState.completed}",)))))),
    ("SELECT * FROM t", Literal_(True)),
])
def test_project_sql_reads_as_a_filter(sql: str, expected: object) -> None:
    """The WHERE clause of a project's query becomes the filter; conditions on the
    collection itself, paging and order are dropped."""
    assert parse_sql_query("q", sql, "repo.jdbc.json").template == expected


def test_a_like_parameter_becomes_starts_with_or_contains() -> None:
    """``LIKE ${p}``: the parameter is a pattern, % at its ends only."""
    query = parse_sql_query("q", "SELECT * FROM t WHERE mail LIKE ${m}", "f")
    assert query.bind({"m": "bjen%"}) == Compare(("mail",), "sw", "bjen")
    assert query.bind({"m": "%@example%"}) == Compare(("mail",), "co", "@example")
    assert query.bind({"m": "exact"}) == Compare(("mail",), "eq", "exact")
    with pytest.raises(QueryError, match="cannot be translated"):
        query.bind({"m": "a%b"})


@pytest.mark.parametrize(("sql", "why"), [
    ("SELECT * FROM t WHERE uid IN (${a}, ${b})", "IN cannot be translated"),
    ("SELECT * FROM t WHERE prop.propkey = '/userName' AND prop.propvalue = ${uid}", "properties table"),
    ("SELECT * FROM t WHERE lower(mail) = ${m}", r"lower\(\.\.\.\) cannot be translated"),
    ("SELECT * FROM t WHERE id = (SELECT 1)", "a sub-select cannot be translated"),
    ("SELECT * FROM t WHERE a = b", "not another field"),
])
def test_unsupported_sql_says_why(sql: str, why: str) -> None:
    """Shapes beyond AND/OR/NOT, comparisons, LIKE and IS NULL are refused with the reason."""
    with pytest.raises(QueryError, match=why):
        parse_sql_query("q", sql, "f")
