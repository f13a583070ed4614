"""Chance in scripts that survives replays: a seed per run and a ChaCha20 stream.

A script that makes an ``openidm`` call runs again from the start with the answers so
far (``sandbox``), so what it draws at random must be what its first run drew, or
``ui/resetPassword`` would store one password and mail another. So Python picks a seed
for each run of a script from the operating system's generator (``run_seed``: 256 bits
from ``secrets``, never the clock) and hands the same seed to every replay of that run.
In JavaScript, ``Math.random`` and ``require('crypto').generateRandomString`` draw from
the ChaCha20 keystream (RFC 8439's block function) keyed by that seed, its nonce the
item's index in a batch (``Script.call_many`` makes one seed per batch), so each item
draws a stream of its own and no two runs share one.

``RANDOM_SOURCE`` is a JavaScript function that makes the generator::

    reset(seedHex, stream)   start the run's stream (64 hex digits, a small integer)
    uint32()                 the next 32 bits of the keystream, as a number
    below(n)                 uniform in [0, n) (rejection sampling: no modulo bias)
    float()                  uniform in [0, 1) with 53 bits, as Math.random answers
"""

from __future__ import annotations

import secrets

__all__ = ["RANDOM_SOURCE", "run_seed"]


def run_seed() -> str:
    """A fresh seed for one run of a script (and all its replays)."""
    return secrets.token_hex(32)


RANDOM_SOURCE = r"""
(function () {
  "use strict";
  // "expand 32-byte k", and the state: key words, block counter, nonce, the block drawn from.
  var SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574];
  var seed = null, key = null, nonce = 0, counter = 0, block = new Array(16), used = 16;
  function rotl(v, c) { return (v << c) | (v >>> (32 - c)); }
  function quarter(x, a, b, c, d) {
    x[a] = (x[a] + x[b]) | 0; x[d] = rotl(x[d] ^ x[a], 16);
    x[c] = (x[c] + x[d]) | 0; x[b] = rotl(x[b] ^ x[c], 12);
    x[a] = (x[a] + x[b]) | 0; x[d] = rotl(x[d] ^ x[a], 8);
    x[c] = (x[c] + x[d]) | 0; x[b] = rotl(x[b] ^ x[c], 7);
  }
  function refill() {
    var state = SIGMA.concat(key, [counter, nonce, 0, 0]), x = state.slice(), i;
    for (i = 0; i < 10; i++) {
      quarter(x, 0, 4, 8, 12); quarter(x, 1, 5, 9, 13); quarter(x, 2, 6, 10, 14); quarter(x, 3, 7, 11, 15);
      quarter(x, 0, 5, 10, 15); quarter(x, 1, 6, 11, 12); quarter(x, 2, 7, 8, 13); quarter(x, 3, 4, 9, 14);
    }
    for (i = 0; i < 16; i++) block[i] = (x[i] + state[i]) >>> 0;
    counter = (counter + 1) >>> 0;
    used = 0;
  }
  // The key is read from the seed on the first draw of a run: most runs draw nothing.
  function keyed() {
    var i, h;
    if (key !== null) return;
    if (typeof seed !== "string" || !/^[0-9a-f]{64}$/.test(seed))
      throw new Error("no random seed is set for this run of the script");
    key = [];
    for (i = 0; i < 64; i += 8) {  // little-endian words, as RFC 8439 reads the key's bytes
      h = seed.substr(i, 8);
      key.push(parseInt(h.substr(6, 2) + h.substr(4, 2) + h.substr(2, 2) + h.substr(0, 2), 16) >>> 0);
    }
  }
  function uint32() {
    keyed();
    if (used === 16) refill();
    return block[used++];
  }
  function below(n) {
    if (!(n >= 1 && n <= 4294967296 && Math.floor(n) === n))
      throw new RangeError("below(n): n must be a whole number from 1 to 2^32");
    var limit = Math.floor(4294967296 / n) * n, x;
    do { x = uint32(); } while (x >= limit);
    return x % n;
  }
  function float() {
    return ((uint32() >>> 5) * 67108864 + (uint32() >>> 6)) / 9007199254740992;
  }
  function reset(seedHex, stream) {
    seed = seedHex; nonce = stream >>> 0; key = null; counter = 0; used = 16;
  }
  return Object.freeze({reset: reset, uint32: uint32, below: below, float: float});
})
"""
