"""Sample inetOrgPerson entries for tests, benchmarks and the demo, starting with
PingIDM's own sample users bjensen and scarter."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["iter_sample_ad_users_ldif", "iter_sample_users_ldif", "sample_users_ldif"]

_KNOWN = (
    {"uid": "bjensen", "givenName": "Barbara", "sn": "Jensen", "mail": "bjensen@example.com",
     "telephoneNumber": "1-360-229-7105", "description": "Created for OpenIDM",
     "employeeType": "employee"},
    {"uid": "scarter", "givenName": "Sam", "sn": "Carter", "mail": "scarter@example.com",
     "telephoneNumber": "1-970-555-1234", "description": "Created for OpenIDM",
     "employeeType": "employee"},
)
_GIVEN = ("Alice", "Bruno", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas")
_FAMILY = ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand")
_TYPES = ("employee", "contractor", "intern")


def _entry(person: dict[str, str], base: str) -> str:
    full = f"{person['givenName']} {person['sn']}"
    return (
        f"dn: uid={person['uid']},{base}\nobjectClass: top\nobjectClass: person\n"
        "objectClass: organizationalPerson\nobjectClass: inetOrgPerson\n"
        f"uid: {person['uid']}\ncn: {full}\nsn: {person['sn']}\n"
        f"givenName: {person['givenName']}\nmail: {person['mail']}\n"
        f"telephoneNumber: {person['telephoneNumber']}\n"
        f"description: {person['description']}\ndisplayName: {full}\n"
        f"employeeType: {person['employeeType']}\n\n"
    )


def _people(n: int) -> Iterator[dict[str, str]]:
    yield from _KNOWN[:n]
    for i in range(max(0, n - len(_KNOWN))):
        given, family = _GIVEN[i % len(_GIVEN)], _FAMILY[(i // len(_GIVEN)) % len(_FAMILY)]
        yield {
            "uid": f"user.{i}", "givenName": given, "sn": family,
            "mail": f"user.{i}@example.com",
            "telephoneNumber": f"+1 555 {i // 10000:03d} {i % 10000:04d}",
            "description": f"Sample user {i}", "employeeType": _TYPES[i % len(_TYPES)],
        }


def iter_sample_users_ldif(n: int, base: str = "ou=People,dc=example,dc=com") -> Iterator[str]:
    """The LDIF of ``n`` users under ``base``, one entry at a time (for big files):
    bjensen and scarter first, then ``user.0``, ``user.1``... (deterministic)."""
    for person in _people(n):
        yield _entry(person, base)


def iter_sample_ad_users_ldif(n: int, base: str, upn_suffix: str) -> Iterator[str]:
    """The same ``n`` users as Active Directory ``user`` objects under ``base``:
    ``CN=<uid>``, ``sAMAccountName`` the uid, ``userPrincipalName`` ``<uid>@<upn_suffix>``,
    the other attributes alike (created without a password: AD makes them disabled)."""
    for person in _people(n):
        uid = person["uid"]
        yield (
            f"dn: CN={uid},{base}\nobjectClass: user\nsAMAccountName: {uid}\n"
            f"userPrincipalName: {uid}@{upn_suffix}\ncn: {uid}\nsn: {person['sn']}\n"
            f"givenName: {person['givenName']}\nmail: {person['mail']}\n"
            f"telephoneNumber: {person['telephoneNumber']}\ndescription: {person['description']}\n"
            f"displayName: {person['givenName']} {person['sn']}\nemployeeType: {person['employeeType']}\n\n"
        )


def sample_users_ldif(n: int, base: str = "ou=People,dc=example,dc=com") -> str:
    """The LDIF of ``n`` sample users under ``base`` as one string."""
    return "".join(iter_sample_users_ldif(n, base))
