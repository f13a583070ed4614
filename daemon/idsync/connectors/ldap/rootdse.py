"""What kind of directory answers, from its root DSE: ``idsync test`` says it, so that an
operator sees at once whether the provisioner's presets (``uidAttribute``, the lock
attribute, the password attribute) fit the server.

Active Directory (and Samba AD) lists LDAP_CAP_ACTIVE_DIRECTORY_OID in
``supportedCapabilities``; 389 DS and PingDS/OpenDJ name themselves in ``vendorName``
and ``vendorVersion``; OpenLDAP names none, but its root DSE is an ``OpenLDAProotDSE``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["ROOT_DSE_ATTRIBUTES", "describe_server", "preset_mismatch"]

ROOT_DSE_ATTRIBUTES = ["vendorName", "vendorVersion", "supportedCapabilities", "objectClass"]
_AD_CAPABILITY = "1.2.840.113556.1.4.800"
# Server kind -> the uidAttribute its preset uses.
_IDS = {"Active Directory": "objectguid", "389 Directory Server": "nsuniqueid", "OpenLDAP": "entryuuid"}


def _values(raw: Mapping[str, Sequence[bytes]], name: str) -> list[str]:
    return [v.decode("utf-8", "replace") for v in raw.get(name.lower()) or ()]


def _kind(raw: Mapping[str, Sequence[bytes]]) -> str | None:
    vendor = " ".join(_values(raw, "vendorName"))
    if _AD_CAPABILITY in _values(raw, "supportedCapabilities"):
        return "Active Directory"
    if "389" in vendor or "Fedora Project" in vendor or "Red Hat" in vendor:
        return "389 Directory Server"
    if any(c.lower() == "openldaprootdse" for c in _values(raw, "objectClass")):
        return "OpenLDAP"
    return None


def describe_server(raw: Mapping[str, Sequence[bytes]]) -> str:
    """``Active Directory (Samba Team ...)``, ``389 Directory Server (389-Directory/2.3.1)``,
    ``OpenLDAP``, or what the server calls itself."""
    vendor = " ".join(_values(raw, "vendorName") + _values(raw, "vendorVersion")).strip()
    kind = _kind(raw)
    if kind is None:
        return vendor or "an LDAP server that does not name itself"
    return f"{kind} ({vendor})" if vendor else kind


def preset_mismatch(raw: Mapping[str, Sequence[bytes]], uid_attribute: str) -> str | None:
    """A hint when ``uidAttribute`` is not the id this kind of server keeps, else None."""
    kind = _kind(raw)
    expected = _IDS.get(kind or "")
    if expected is None or uid_attribute.lower() in (expected, "dn"):
        return None
    return f"the server is {kind}, whose entries' stable id is {expected}, not {uid_attribute}"
