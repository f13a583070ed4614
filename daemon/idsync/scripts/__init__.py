"""Sandboxed ``text/javascript`` mapping scripts (see ``idsync.scripts.engine``)."""

from __future__ import annotations

from idsync.scripts.engine import Script, ScriptEngine, compile_script, kind_of

__all__ = ["Script", "ScriptEngine", "compile_script", "kind_of"]
