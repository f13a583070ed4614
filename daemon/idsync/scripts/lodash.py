"""What ``require('lib/lodash')`` answers in a script: the part of lodash that PingIDM
projects' mapping scripts use, written for idsync (plain ES5, no state, frozen).

PingIDM ships lodash in its default script library, and OpenIDM's samples transform a
comma-separated list with ``_.map``; a project that requires a module idsync does
not provide gets an error naming the module and what is provided. The functions take
an array or an object (its values, with their keys), and an iteratee given as a
function, a property name, or nothing (identity).
"""

from __future__ import annotations

__all__ = ["LODASH_FUNCTIONS", "LODASH_SOURCE"]

LODASH_FUNCTIONS = (
    "map", "filter", "reject", "forEach", "each", "reduce", "find", "findWhere", "some", "any", "every", "all",
    "includes", "contains", "isEqual",
    "keys", "values", "size", "isArray", "isString", "isNumber", "isBoolean", "isObject", "isFunction",
    "isEmpty", "isUndefined", "isNull", "isNil", "has", "get", "clone", "cloneDeep", "uniq", "union",
    "without", "difference", "intersection", "flatten", "compact", "pick", "omit", "assign", "extend",
    "first", "head", "last", "indexOf", "range", "sortBy", "groupBy", "keyBy", "join", "trim",
)

LODASH_SOURCE = r"""
(function () {
  "use strict";
  var isArray = Array.isArray, hasOwn = Object.prototype.hasOwnProperty;
  function isObject(v) { return v !== null && (typeof v === "object" || typeof v === "function"); }
  function iteratee(f) {
    if (typeof f === "function") return f;
    if (f === undefined || f === null) return function (v) { return v; };
    if (typeof f === "string" || typeof f === "number") return function (v) { return v == null ? undefined : v[f]; };
    if (isObject(f)) return function (v) {
      for (var k in f) if (hasOwn.call(f, k) && (v == null || v[k] !== f[k])) return false;
      return true;
    };
    throw new TypeError("lodash: not an iteratee: " + f);
  }
  function entries(c) {
    var out = [], k;
    if (c == null) return out;
    if (isArray(c) || typeof c === "string") { for (k = 0; k < c.length; k++) out.push([c[k], k]); return out; }
    for (k in c) if (hasOwn.call(c, k)) out.push([c[k], k]);
    return out;
  }
  function each(c, f) {
    var e = entries(c), g = iteratee(f), i;
    for (i = 0; i < e.length; i++) if (g(e[i][0], e[i][1], c) === false) break;
    return c;
  }
  function map(c, f) { var g = iteratee(f); return entries(c).map(function (e) { return g(e[0], e[1], c); }); }
  function filter(c, f) {
    var g = iteratee(f);
    return entries(c).filter(function (e) { return g(e[0], e[1], c); }).map(function (e) { return e[0]; });
  }
  function find(c, f) {
    var e = entries(c), g = iteratee(f), i;
    for (i = 0; i < e.length; i++) if (g(e[i][0], e[i][1], c)) return e[i][0];
    return undefined;
  }
  function values(c) { return entries(c).map(function (e) { return e[0]; }); }
  function uniq(a) {
    var out = [];
    (a || []).forEach(function (v) { if (out.indexOf(v) < 0) out.push(v); });
    return out;
  }
  function get(o, path, fallback) {
    var parts = isArray(path) ? path : String(path).replace(/\[(\w+)\]/g, ".$1").split("."), i;
    for (i = 0; i < parts.length; i++) {
      if (o == null) return fallback;
      o = o[parts[i]];
    }
    return o === undefined ? fallback : o;
  }
  function cloneDeep(v) { return v === undefined ? undefined : JSON.parse(JSON.stringify(v)); }
  function assign(target) {
    var i, k, s;
    target = target || {};
    for (i = 1; i < arguments.length; i++) {
      s = arguments[i];
      if (s) for (k in s) if (hasOwn.call(s, k)) target[k] = s[k];
    }
    return target;
  }
  function keyed(c, f, one) {
    var g = iteratee(f), out = {};
    entries(c).forEach(function (e) {
      var key = g(e[0], e[1], c);
      if (one) out[key] = e[0];
      else (out[key] = out[key] || []).push(e[0]);
    });
    return out;
  }
  function flatten(a) {
    var out = [];
    (a || []).forEach(function (v) { if (isArray(v)) out.push.apply(out, v); else out.push(v); });
    return out;
  }
  function includes(c, v) {
    if (typeof c === "string") return c.indexOf(v) >= 0;
    return values(c).indexOf(v) >= 0;
  }
  // Deep equality of the values scripts hold (JSON's, and dates): as lodash's isEqual compares them.
  function isEqual(a, b) {
    var k, n;
    if (a === b) return true;
    if (a !== a && b !== b) return true;  // NaN
    if (!isObject(a) || !isObject(b) || isArray(a) !== isArray(b)) return false;
    if (a instanceof Date || b instanceof Date) return a instanceof Date && b instanceof Date && +a === +b;
    if (isArray(a)) {
      if (a.length !== b.length) return false;
      for (k = 0; k < a.length; k++) if (!isEqual(a[k], b[k])) return false;
      return true;
    }
    n = 0;
    for (k in a) if (hasOwn.call(a, k)) { if (!hasOwn.call(b, k) || !isEqual(a[k], b[k])) return false; n++; }
    return Object.keys(b).length === n;
  }
  var _ = {
    isEqual: isEqual, findWhere: function (c, props) { return find(c, isObject(props) ? props : {}); },
    map: map, filter: filter, forEach: each, each: each, find: find, values: values, uniq: uniq,
    get: get, cloneDeep: cloneDeep, assign: assign, extend: assign, flatten: flatten,
    includes: includes, contains: includes,
    reject: function (c, f) { var g = iteratee(f); return filter(c, function (v, k, o) { return !g(v, k, o); }); },
    reduce: function (c, f, acc) {
      var e = entries(c), i = 0;
      if (arguments.length < 3) { acc = e.length ? e[0][0] : undefined; i = 1; }
      for (; i < e.length; i++) acc = f(acc, e[i][0], e[i][1], c);
      return acc;
    },
    some: function (c, f) { var g = iteratee(f); return entries(c).some(function (e) { return g(e[0], e[1], c); }); },
    every: function (c, f) { var g = iteratee(f); return entries(c).every(function (e) { return g(e[0], e[1], c); }); },
    any: function (c, f) { return _.some(c, f); },
    all: function (c, f) { return _.every(c, f); },
    keys: function (o) { return o == null ? [] : Object.keys(Object(o)); },
    size: function (c) { return entries(c).length; },
    isArray: isArray, isObject: isObject,
    isString: function (v) { return typeof v === "string"; },
    isNumber: function (v) { return typeof v === "number"; },
    isBoolean: function (v) { return typeof v === "boolean"; },
    isFunction: function (v) { return typeof v === "function"; },
    isUndefined: function (v) { return v === undefined; },
    isNull: function (v) { return v === null; },
    isNil: function (v) { return v == null; },
    isEmpty: function (v) { return v == null || (typeof v === "string" || isArray(v) ? v.length === 0
                                                 : isObject(v) ? Object.keys(v).length === 0 : true); },
    has: function (o, path) {
      var parts = isArray(path) ? path : String(path).split("."), i;
      for (i = 0; i < parts.length; i++) {
        if (o == null || !hasOwn.call(Object(o), parts[i])) return false;
        o = o[parts[i]];
      }
      return true;
    },
    clone: function (v) { return isArray(v) ? v.slice() : isObject(v) ? assign({}, v) : v; },
    union: function () { return uniq(flatten(Array.prototype.slice.call(arguments))); },
    without: function (a) {
      var drop = Array.prototype.slice.call(arguments, 1);
      return (a || []).filter(function (v) { return drop.indexOf(v) < 0; });
    },
    difference: function (a, b) { return (a || []).filter(function (v) { return (b || []).indexOf(v) < 0; }); },
    intersection: function (a, b) {
      return uniq((a || []).filter(function (v) { return (b || []).indexOf(v) >= 0; }));
    },
    compact: function (a) { return (a || []).filter(function (v) { return v; }); },
    pick: function (o, names) {
      var out = {}, list = isArray(names) ? names : Array.prototype.slice.call(arguments, 1);
      list.forEach(function (k) { if (o != null && k in Object(o)) out[k] = o[k]; });
      return out;
    },
    omit: function (o, names) {
      var out = assign({}, o), list = isArray(names) ? names : Array.prototype.slice.call(arguments, 1);
      list.forEach(function (k) { delete out[k]; });
      return out;
    },
    first: function (a) { return a && a.length ? a[0] : undefined; },
    head: function (a) { return a && a.length ? a[0] : undefined; },
    last: function (a) { return a && a.length ? a[a.length - 1] : undefined; },
    indexOf: function (a, v) { return (a || []).indexOf(v); },
    range: function (start, end, step) {
      if (end === undefined) { end = start; start = 0; }
      step = step || (end < start ? -1 : 1);
      var out = [], i;
      for (i = start; step > 0 ? i < end : i > end; i += step) out.push(i);
      return out;
    },
    sortBy: function (c, f) {
      var g = iteratee(f);
      return entries(c).map(function (e, i) { return [g(e[0], e[1], c), i, e[0]]; })
        .sort(function (a, b) { return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1]; })
        .map(function (e) { return e[2]; });
    },
    groupBy: function (c, f) { return keyed(c, f, false); },
    keyBy: function (c, f) { return keyed(c, f, true); },
    join: function (a, sep) { return (a || []).join(sep === undefined ? "," : sep); },
    trim: function (s) { return s == null ? "" : String(s).trim(); }
  };
  return Object.freeze(_);
})()
"""
