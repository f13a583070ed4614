"""The modules ``require`` answers in a script: idsync's own lodash subset and its own
versions of the modules PingIDM's default ``managed.json`` loads.

PingIDM's stock user type runs ``require('ui/onCreateUser').setDefaultFields(object)``
on create and ``require('ui/onUpdateUser').preserveLastSync(object, oldObject,
request)`` on update, and both call ``require('roles/conditionalRoles')``; later
versions drop the ``ui/`` prefix. A project's own ``onCreate`` often adds lines to
those. idsync answers these names with modules written here (plain ES5, frozen), so
the whole script runs:

* ``setDefaultFields(object)``: ``accountStatus`` ``"active"`` when the object has
  none, ``authzRoles`` PingIDM's ``openidm-authorized`` internal role when it has none
  (kept as a plain value: idsync has no internal roles; its API accounts are in
  ``idsync.toml``).
* ``preserveLastSync(object, oldObject, request)``: an update that leaves out
  ``lastSync`` keeps the old one (idsync keeps its own ``lastSync`` apart from the
  object, so this matters only to a project that stores one itself).
* ``createIdpRelationships`` / ``updateIdpRelationships``: nothing without
  ``idpData``; with it, a logged warning, the data kept as it is (idsync has no social
  identity providers to make ``managed/PROVIDER`` objects for).
* ``roles/conditionalRoles``: idsync grants conditional roles and keeps them current
  itself (``store/roles.py``), so these functions change nothing.

Any other name throws, naming what is provided: ``config.objectmodel.not_run`` finds
such a script when the project loads, and ``validate`` names the module.
"""

from __future__ import annotations

import json
import re

__all__ = ["MODULES_SOURCE", "MODULE_NAMES", "required_modules"]

_LODASH = ("lib/lodash", "lodash")
_ON_CREATE = ("ui/onCreateUser", "onCreateUser")
_ON_UPDATE = ("ui/onUpdateUser", "onUpdateUser")
_CONDITIONAL = ("roles/conditionalRoles",)
MODULE_NAMES = (*_LODASH, *_ON_CREATE, *_ON_UPDATE, *_CONDITIONAL)

# Called by the sandbox's prelude with its lodash and ``logger``; answers the modules
# by name.
_PINGIDM = r"""
(function (lodash, logger) {
  "use strict";
  var freeze = Object.freeze, modules = {};
  function idpWarning(object) {
    logger.warn("idpData of {} is kept as it is: idsync has no social identity providers, so no managed " +
                "object is made for them", object && object._id ? object._id : "a new object");
  }
  var onCreateUser = freeze({
    setDefaultFields: function (object) {
      if (!object.accountStatus) object.accountStatus = "active";
      if (!object.authzRoles) object.authzRoles = [{"_ref": "repo/internal/role/openidm-authorized"}];
    },
    createIdpRelationships: function (object) { if (object.idpData) idpWarning(object); }
  });
  var onUpdateUser = freeze({
    preserveLastSync: function (object, oldObject, request) {
      if (request && request.method === "update" && object.lastSync === undefined && oldObject && oldObject.lastSync)
        object.lastSync = oldObject.lastSync;
    },
    updateIdpRelationships: function (object) { if (object.idpData) idpWarning(object); }
  });
  function nothing() {}
  var conditionalRoles = freeze({
    updateConditionalGrantsForUser: nothing, evaluateConditionalRoles: nothing,
    roleCreate: nothing, roleUpdate: nothing
  });
  function add(names, module) { names.forEach(function (n) { modules[n] = module; }); }
  add(%(lodash)s, lodash);
  add(%(on_create)s, onCreateUser);
  add(%(on_update)s, onUpdateUser);
  add(%(conditional)s, conditionalRoles);
  return freeze(modules);
})
"""

MODULES_SOURCE = _PINGIDM % {"lodash": json.dumps(_LODASH), "on_create": json.dumps(_ON_CREATE),
                             "on_update": json.dumps(_ON_UPDATE), "conditional": json.dumps(_CONDITIONAL)}

_REQUIRE = re.compile(r"""\brequire\s*\(\s*(?:"([^"\\]*)"|'([^'\\]*)')\s*\)""")
_ANY_REQUIRE = re.compile(r"\brequire\s*\(")


def required_modules(source: str) -> tuple[list[str], bool]:
    """The module names ``source`` requires by a literal string, and whether it also
    calls ``require`` with anything else (a name built at run time)."""
    names = [a or b for a, b in _REQUIRE.findall(source)]
    return names, len(_ANY_REQUIRE.findall(source)) > len(names)
