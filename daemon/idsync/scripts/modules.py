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
* ``crypto``: ``encrypt(value, cipher, alias)`` and ``hash(value, algorithm)`` (through
  ``openidm``; a value already encrypted, or null, is returned as it is), and
  ``generateRandomString(rules, length)``: ``length`` characters (1 to 1024) with at
  least ``minimum`` of each rule's class (``UPPERCASE``, ``LOWERCASE``, ``INTEGERS``,
  ``SPECIAL``: PingIDM's ``:;<=>?@``), the rest from all four, shuffled; drawn from the
  run's seeded stream (``randomness.py``), so a replayed run draws the same string.
* ``lib/handlebars``: ``compile(template)``, a documented subset (``handlebars.py``).
* ``ui/resetPassword``: ``sendMail(object, subject, message, passwordRules,
  passwordLength)``, what the default ``managed.json``'s ``resetPassword`` action runs:
  with ``config/external.email`` configured, a new random password is patched into the
  object (``resourcePath``), and mailed to ``object.mail`` (``from`` the configuration's,
  ``text/html``, ``message`` filled with ``password`` and ``object``); a mail that cannot
  be sent throws ``{code: 400}`` (the password stays reset, as in PingIDM). Without the
  email service it logs that and changes nothing.

Any other name throws, naming what is provided: ``config.objectmodel.not_run`` finds
such a script when the project loads, and ``validate`` names the module.
"""

from __future__ import annotations

import json
import re

from idsync.scripts.handlebars import HANDLEBARS_SOURCE
from idsync.scripts.lodash import LODASH_FUNCTIONS

__all__ = ["MODULES_SOURCE", "MODULE_FUNCTIONS", "MODULE_NAMES", "missing_functions", "required_modules"]

_LODASH = ("lib/lodash", "lodash")
_ON_CREATE = ("ui/onCreateUser", "onCreateUser")
_ON_UPDATE = ("ui/onUpdateUser", "onUpdateUser")
_CONDITIONAL = ("roles/conditionalRoles",)
_CRYPTO = ("crypto",)
_HANDLEBARS = ("lib/handlebars",)
_RESET_PASSWORD = ("ui/resetPassword",)
MODULE_NAMES = (*_LODASH, *_ON_CREATE, *_ON_UPDATE, *_CONDITIONAL, *_CRYPTO, *_HANDLEBARS, *_RESET_PASSWORD)

# Called by the sandbox's prelude with its lodash, ``logger``, ``openidm`` and the run's
# random stream (``randomness.py``); answers the modules by name.
_PINGIDM = r"""
(function (lodash, logger, openidm, chance) {
  "use strict";
  var freeze = Object.freeze, modules = {}, G = globalThis;
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

  var CLASSES = {UPPERCASE: "ABCDEFGHIJKLMNOPQRSTUVWXYZ", LOWERCASE: "abcdefghijklmnopqrstuvwxyz",
                 INTEGERS: "0123456789", SPECIAL: ":;<=>?@"};
  var ANY = CLASSES.UPPERCASE + CLASSES.LOWERCASE + CLASSES.INTEGERS + CLASSES.SPECIAL;
  function whole(value, low, high) {
    return typeof value === "number" && Math.floor(value) === value && value >= low && value <= high;
  }
  // What these modules throw is told at the script's line that called them: the sandbox
  // reports the first frame after the last _idsync_module_call.
  function exported(fn) { return function _idsync_module_call() { return fn.apply(null, arguments); }; }
  function pick(set) { return set.charAt(chance.below(set.length)); }
  function generateRandomString(rules, length) {
    var chars = [], i, j, rule, minimum, swap;
    if (!whole(length, 1, 1024))
      throw new Error("generateRandomString: the length must be a whole number from 1 to 1024");
    if (rules !== undefined && rules !== null && !Array.isArray(rules))
      throw new Error("generateRandomString: the rules must be a list of {rule, minimum}");
    for (i = 0; rules && i < rules.length; i++) {
      rule = rules[i] || {};
      if (!Object.prototype.hasOwnProperty.call(CLASSES, rule.rule))
        throw new Error("generateRandomString: rules[" + i + "].rule must be one of " +
                        Object.keys(CLASSES).join(", "));
      minimum = rule.minimum === undefined ? 0 : rule.minimum;
      if (!whole(minimum, 0, 1024))
        throw new Error("generateRandomString: rules[" + i + "].minimum must be a whole number");
      for (j = 0; j < minimum; j++) chars.push(pick(CLASSES[rule.rule]));
    }
    if (chars.length > length)
      throw new Error("generateRandomString: the rules ask for " + chars.length + " characters, more than the " +
                      "length " + length);
    while (chars.length < length) chars.push(pick(ANY));
    for (i = chars.length - 1; i > 0; i--) {  // Fisher-Yates: the required characters anywhere
      j = chance.below(i + 1);
      swap = chars[i]; chars[i] = chars[j]; chars[j] = swap;
    }
    return chars.join("");
  }
  function plain(value) { return value !== undefined && value !== null && !openidm.isEncrypted(value); }
  var crypto = freeze({
    encrypt: exported(function (value, cipher, alias) {
      return plain(value) ? openidm.encrypt(value, cipher || null, alias || null) : value;
    }),
    hash: exported(function (value, algorithm) {
      return plain(value) && typeof value === "string" ? openidm.hash(value, algorithm || null) : value;
    }),
    generateRandomString: exported(generateRandomString)
  });
  var handlebars = freeze({compile: exported((%(handlebars)s)().compile)});
  var resetPassword = freeze({
    sendMail: exported(function (object, subject, message, passwordRules, passwordLength) {
      var config = openidm.read("config/external.email"), password, mail;
      if (!config) {
        logger.info("ui/resetPassword: the email service is not configured (conf/external.email.json): the " +
                    "password of {} is not reset", object && object._id);
        return;
      }
      if (typeof G.resourcePath !== "string")
        throw new Error("ui/resetPassword: sendMail runs as a managed object's action (resourcePath is not set)");
      password = generateRandomString(passwordRules, passwordLength);
      openidm.patch(G.resourcePath, object._rev, [{operation: "add", field: "/password", value: password}]);
      mail = {from: config.from, to: object.mail, subject: subject, type: "text/html",
              body: handlebars.compile(message)({password: password, object: object})};
      try {
        openidm.action("external/email", "send", mail);
      } catch (e) {
        logger.warn("ui/resetPassword: the password of {} was reset, but the mail was not sent: {}", object._id,
                    e && e.message);
        throw {code: 400, message: "The password was reset, but the mail was not sent: " + (e && e.message)};
      }
    })
  });
  function add(names, module) { names.forEach(function (n) { modules[n] = module; }); }
  add(%(lodash)s, lodash);
  add(%(on_create)s, onCreateUser);
  add(%(on_update)s, onUpdateUser);
  add(%(conditional)s, conditionalRoles);
  add(%(crypto)s, crypto);
  add(%(handlebars_names)s, handlebars);
  add(%(reset_password)s, resetPassword);
  return freeze(modules);
})
"""

MODULES_SOURCE = _PINGIDM % {"lodash": json.dumps(_LODASH), "on_create": json.dumps(_ON_CREATE),
                             "on_update": json.dumps(_ON_UPDATE), "conditional": json.dumps(_CONDITIONAL),
                             "crypto": json.dumps(_CRYPTO), "handlebars": HANDLEBARS_SOURCE,
                             "handlebars_names": json.dumps(_HANDLEBARS), "reset_password": json.dumps(_RESET_PASSWORD)}

# What each module exports (a test holds these to the JavaScript above).
MODULE_FUNCTIONS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(_LODASH, LODASH_FUNCTIONS),
    **dict.fromkeys(_ON_CREATE, ("setDefaultFields", "createIdpRelationships")),
    **dict.fromkeys(_ON_UPDATE, ("preserveLastSync", "updateIdpRelationships")),
    **dict.fromkeys(_CONDITIONAL, ("updateConditionalGrantsForUser", "evaluateConditionalRoles", "roleCreate",
                                   "roleUpdate")),
    **dict.fromkeys(_CRYPTO, ("encrypt", "hash", "generateRandomString")),
    **dict.fromkeys(_HANDLEBARS, ("compile",)),
    **dict.fromkeys(_RESET_PASSWORD, ("sendMail",)),
}

_REQUIRE = re.compile(r"""\brequire\s*\(\s*(?:"([^"\\]*)"|'([^'\\]*)')\s*\)""")
_CALLED = re.compile(r"""\brequire\s*\(\s*(?:"([^"\\]*)"|'([^'\\]*)')\s*\)\s*\.\s*([A-Za-z_$][\w$]*)""")
_ANY_REQUIRE = re.compile(r"\brequire\s*\(")
# ``NAME = require('MODULE')``, after ``var``, ``let``, ``const`` or none (not ``==``, ``+=``, ``a.b =``).
_BOUND = re.compile(r"""(?<![\w$.])([A-Za-z_$][\w$]*)\s*=\s*require\s*\(\s*(?:"([^"\\]*)"|'([^'\\]*)')\s*\)""")


def required_modules(source: str) -> tuple[list[str], bool]:
    """The module names ``source`` requires by a literal string, and whether it also
    calls ``require`` with anything else (a name built at run time)."""
    names = [a or b for a, b in _REQUIRE.findall(source)]
    return names, len(_ANY_REQUIRE.findall(source)) > len(names)


def missing_functions(source: str) -> list[str]:
    """``MODULE.function`` for each function of a module idsync provides that ``source``
    uses and idsync's version lacks (a later PingIDM version's, a lodash function beyond
    idsync's subset): called on ``require('MODULE')`` itself, or on the variable it was
    required into (``var _ = require('lib/lodash'); _.chunk(...)``). A variable bound to
    several modules is checked against all of them."""
    found = []
    for a, b, function in _CALLED.findall(source):
        module = a or b
        if module in MODULE_FUNCTIONS and function not in MODULE_FUNCTIONS[module]:
            found.append(f"{module}.{function}")
    bound: dict[str, list[str]] = {}
    for name, a, b in _BOUND.findall(source):
        bound.setdefault(name, []).append(a or b)
    for name, modules in bound.items():
        if not all(module in MODULE_FUNCTIONS for module in modules):
            continue  # required_modules names the module idsync does not provide
        used = re.findall(rf"(?<![\w$.]){re.escape(name)}\s*\.\s*([A-Za-z_$][\w$]*)", source)
        found.extend(f"{modules[0]}.{function}" for function in used
                     if not any(function in MODULE_FUNCTIONS[module] for module in modules))
    return list(dict.fromkeys(found))
