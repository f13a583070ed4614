"""What the throwaway servers share: ending their foreground process, and applying LDIF
through them with ``ldapmodify``."""

from __future__ import annotations

import subprocess

__all__ = ["end_process", "ldapmodify"]


def end_process(process: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """Terminate ``process`` if it still runs, and kill it after ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def ldapmodify(url: str, bind_dn: str, password: str, text: str) -> str | None:
    """Apply LDIF as ``bind_dn`` (plain entries added, ``changetype`` records as written);
    None, or what ldapmodify said when it failed."""
    done = subprocess.run(["ldapmodify", "-x", "-H", url, "-D", bind_dn, "-w", password, "-a"],
                          input=text, capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else f"ldapmodify failed ({done.returncode}): {done.stderr.strip()}"
