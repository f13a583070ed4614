"""``require('lib/handlebars')``: idsync's own subset of Handlebars for scripts.

PingIDM's ``ui/resetPassword`` fills the mail of its ``resetPassword`` action with
``Handlebars.compile(message)({password: ..., object: ...})``; administrators write such
templates in ``managed.json``, and OpenIDM's sample5 mails a recon's statistics through
one (its mapping's ``result`` script). idsync answers ``lib/handlebars`` with this
subset, written here in plain ES5: ``compile(template)`` returns a function of a context
object that fills

* ``{{name}}``, ``{{a.b.c}}``, ``{{this.a}}``, ``{{a.length}}``, ``{{../a}}`` (the
  enclosing block's context), ``{{@index}}``, ``{{@key}}``, ``{{@first}}``, ``{{@last}}``:
  the value, HTML-escaped (``& < > " ' ` =``, as Handlebars escapes them);
* ``{{{name}}}`` and ``{{&name}}``: the value as it is;
* ``{{! comment}}`` and ``{{!-- comment --}}``: nothing;
* the blocks ``{{#if a}}``, ``{{#unless a}}``, ``{{#each a}}`` (an array's items or an
  object's values, each the block's ``this``), ``{{#with a}}``, each with ``{{else}}``,
  and Mustache's sections ``{{#a}}...{{/a}}`` (an array: once per item; another value
  that is not falsy: once, with it as ``this``) and ``{{^a}}...{{/a}}`` (once when ``a``
  is falsy). Falsy is Handlebars': ``false``, ``null``, a missing value, ``""``, ``0``
  and an empty array.

A missing value, ``null`` or ``undefined`` fills nothing; any other value its ``String``.
Anything else between braces (partials, helpers with arguments or of other names,
hashes, subexpressions) is refused by ``compile`` with an error naming it, as is a block
left open or closed under another name, rather than filled wrongly.
"""

from __future__ import annotations

__all__ = ["HANDLEBARS_SOURCE"]

HANDLEBARS_SOURCE = r"""
(function () {
  "use strict";
  var ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#x27;", "`": "&#x60;", "=": "&#x3D;"};
  var TAG = /\{\{!--[\s\S]*?--\}\}|\{\{\{([^{}]*)\}\}\}|\{\{([^{}]*)\}\}/g;
  var PATH = /^(?:(?:\.\.\/)*(?:this|[A-Za-z_$][\w$-]*)(?:\.[A-Za-z_$][\w$-]*)*|@(?:index|key|first|last))$/;
  var HELPERS = {"if": true, "unless": true, "each": true, "with": true};
  var has = Object.prototype.hasOwnProperty;
  function escape(text) {
    return text.replace(/[&<>"'`=]/g, function (c) { return ESCAPES[c]; });
  }
  function refuse(tag, why) {
    throw new Error("lib/handlebars: " + tag + " is not supported: " + why);
  }
  // A path: how many contexts up (../), then its names; or a data variable (@index).
  function path(text, tag) {
    var name = text.trim(), up = 0;
    if (!PATH.test(name))
      refuse(tag, "idsync fills {{name}}, {{a.b}}, {{../a}}, {{@index}}, {{{name}}}, {{! comments}} and the " +
             "blocks #if, #unless, #each, #with and Mustache sections (no partials or other helpers)");
    if (name.charAt(0) === "@") return {data: name.slice(1)};
    while (name.indexOf("../") === 0) { up++; name = name.slice(3); }
    var parts = name.split(".");
    return {up: up, parts: parts[0] === "this" ? parts.slice(1) : parts};
  }
  function falsy(value) {
    return value === false || value === null || value === undefined || value === "" || value === 0 ||
      (Array.isArray(value) && value.length === 0);
  }
  // The template as a tree: strings, {path, raw} to fill, {block, name, path, body, inverse}.
  function parse(template) {
    var root = {body: []}, stack = [], current = root, into, last = 0, m, inner, head, word, node;
    root.into = into = root.body;  // each open block's list being filled: its body, after {{else}} its inverse
    TAG.lastIndex = 0;
    while ((m = TAG.exec(template)) !== null) {
      into.push(template.slice(last, m.index));
      last = TAG.lastIndex;
      if (m[1] !== undefined) { into.push({path: path(m[1], m[0]), raw: true}); continue; }
      if (m[2] === undefined) continue;  // a {{!-- --}} comment
      inner = m[2].trim();
      head = inner.charAt(0);
      if (head === "!") continue;
      if (head === "&") { into.push({path: path(inner.slice(1), m[0]), raw: true}); continue; }
      if (head === "#" || head === "^") {
        word = inner.slice(1).trim().split(/\s+/);
        if (head === "#" && has.call(HELPERS, word[0])) {
          if (word.length !== 2) refuse(m[0], "#" + word[0] + " takes one path");
          node = {block: word[0], name: word[0], path: path(word[1], m[0]), body: [], inverse: []};
        } else {
          if (word.length !== 1) refuse(m[0], "a helper other than #if, #unless, #each and #with");
          node = {block: head === "#" ? "section" : "inverted", name: word[0], path: path(word[0], m[0]),
                  body: [], inverse: []};
        }
        into.push(node);
        stack.push(current);
        current = node;
        node.into = into = node.body;
        continue;
      }
      if (inner === "else") {
        if (current === root) refuse(m[0], "{{else}} outside a block");
        current.into = into = current.inverse;
        continue;
      }
      if (head === "/") {
        word = inner.slice(1).trim();
        if (current === root || word !== current.name)
          refuse(m[0], current === root ? "nothing is open to close" : "the open block is {{#" + current.name + "}}");
        current = stack.pop();
        into = current.into;
        continue;
      }
      into.push({path: path(inner, m[0]), raw: false});
    }
    if (current !== root) throw new Error("lib/handlebars: {{#" + current.name + "}} is never closed");
    into.push(template.slice(last));
    return root.body;
  }
  // frames: innermost last, each {context, data}.
  function lookup(frames, p) {
    if (p.data !== undefined) {
      var data = frames[frames.length - 1].data;
      return data && has.call(data, p.data) ? data[p.data] : undefined;
    }
    var frame = frames[Math.max(frames.length - 1 - p.up, 0)], value = frame.context, i;
    for (i = 0; i < p.parts.length; i++) {
      if (value === null || value === undefined) return undefined;
      value = has.call(Object(value), p.parts[i]) ? value[p.parts[i]] : undefined;
    }
    return value;
  }
  function each(value, frames, body, out) {
    var keys = Array.isArray(value) ? null : Object.keys(Object(value)), n = keys ? keys.length : value.length, i;
    for (i = 0; i < n; i++) {
      frames.push({context: keys ? value[keys[i]] : value[i],
                   data: {index: i, key: keys ? keys[i] : i, first: i === 0, last: i === n - 1}});
      render(body, frames, out);
      frames.pop();
    }
    return n;
  }
  function render(nodes, frames, out) {
    var i, node, value;
    for (i = 0; i < nodes.length; i++) {
      node = nodes[i];
      if (typeof node === "string") { out.push(node); continue; }
      value = lookup(frames, node.path);
      if (node.block === undefined) {
        value = value === null || value === undefined ? "" : String(value);
        out.push(node.raw ? value : escape(value));
      } else if (node.block === "if" || node.block === "unless") {
        render(falsy(value) === (node.block === "unless") ? node.body : node.inverse, frames, out);
      } else if (node.block === "with") {
        if (falsy(value)) render(node.inverse, frames, out);
        else { frames.push({context: value, data: frames[frames.length - 1].data}); render(node.body, frames, out);
               frames.pop(); }
      } else if (node.block === "each") {
        if (falsy(value) || typeof value !== "object" || !each(value, frames, node.body, out))
          render(node.inverse, frames, out);
      } else if (node.block === "inverted") {
        render(falsy(value) ? node.body : node.inverse, frames, out);
      } else if (falsy(value)) {
        render(node.inverse, frames, out);
      } else if (Array.isArray(value)) {
        each(value, frames, node.body, out);
      } else {
        frames.push({context: value === true ? frames[frames.length - 1].context : value,
                     data: frames[frames.length - 1].data});
        render(node.body, frames, out);
        frames.pop();
      }
    }
  }
  function compile(template) {
    if (typeof template !== "string") throw new TypeError("lib/handlebars: compile needs a template string");
    var tree = parse(template);
    return function (context) {
      var out = [];
      render(tree, [{context: context, data: null}], out);
      return out.join("");
    };
  }
  return Object.freeze({compile: compile});
})
"""
