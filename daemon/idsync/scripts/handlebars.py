"""``require('lib/handlebars')``: idsync's own subset of Handlebars for scripts.

PingIDM's ``ui/resetPassword`` fills the mail of its ``resetPassword`` action with
``Handlebars.compile(message)({password: ..., object: ...})``; administrators write such
templates in ``managed.json``. idsync answers ``lib/handlebars`` with this subset,
written here in plain ES5: ``compile(template)`` returns a function of a context object
that fills

* ``{{name}}``, ``{{a.b.c}}``, ``{{this.a}}``: the value, HTML-escaped (``& < > " ' ` =``,
  as Handlebars escapes them);
* ``{{{name}}}`` and ``{{&name}}``: the value as it is;
* ``{{! comment}}`` and ``{{!-- comment --}}``: nothing.

A missing value, ``null`` or ``undefined`` fills nothing; any other value its ``String``.
Anything else between braces (blocks ``{{#if}}``/``{{#each}}``, partials, helpers with
arguments, ``../`` paths, ``@index``) is refused by ``compile`` with an error naming it,
rather than filled wrongly.
"""

from __future__ import annotations

__all__ = ["HANDLEBARS_SOURCE"]

HANDLEBARS_SOURCE = r"""
(function () {
  "use strict";
  var ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#x27;", "`": "&#x60;", "=": "&#x3D;"};
  var TAG = /\{\{!--[\s\S]*?--\}\}|\{\{\{([^{}]*)\}\}\}|\{\{([^{}]*)\}\}/g;
  var PATH = /^(this|[A-Za-z_$][\w$-]*)(\.[A-Za-z_$][\w$-]*)*$/;
  function escape(text) {
    return text.replace(/[&<>"'`=]/g, function (c) { return ESCAPES[c]; });
  }
  function path(text, tag) {
    var name = text.trim();
    if (!PATH.test(name))
      throw new Error("lib/handlebars: " + tag + " is not supported: idsync fills {{name}}, {{a.b}}, {{{name}}} " +
                      "and {{! comments}} only (no blocks, partials or helpers)");
    var parts = name.split(".");
    return parts[0] === "this" ? parts.slice(1) : parts;
  }
  function lookup(context, parts) {
    var value = context, i;
    for (i = 0; i < parts.length; i++) {
      if (value === null || value === undefined) return "";
      value = Object.prototype.hasOwnProperty.call(Object(value), parts[i]) ? value[parts[i]] : undefined;
    }
    return value === null || value === undefined ? "" : String(value);
  }
  function compile(template) {
    if (typeof template !== "string") throw new TypeError("lib/handlebars: compile needs a template string");
    var pieces = [], last = 0, m, inner;
    TAG.lastIndex = 0;
    while ((m = TAG.exec(template)) !== null) {
      pieces.push(template.slice(last, m.index));
      last = TAG.lastIndex;
      if (m[1] !== undefined) { pieces.push({parts: path(m[1], m[0]), raw: true}); continue; }
      if (m[2] === undefined) continue;  // a {{!-- --}} comment
      inner = m[2].trim();
      if (inner.charAt(0) === "!") continue;
      if (inner.charAt(0) === "&") pieces.push({parts: path(inner.slice(1), m[0]), raw: true});
      else pieces.push({parts: path(inner, m[0]), raw: false});
    }
    pieces.push(template.slice(last));
    return function (context) {
      var out = [], i, p, value;
      for (i = 0; i < pieces.length; i++) {
        p = pieces[i];
        if (typeof p === "string") { out.push(p); continue; }
        value = lookup(context, p.parts);
        out.push(p.raw ? value : escape(value));
      }
      return out.join("");
    };
  }
  return Object.freeze({compile: compile});
})
"""
