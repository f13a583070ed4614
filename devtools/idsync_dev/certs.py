"""Throwaway TLS material for test servers: a CA and one server certificate,
made with the ``openssl`` command so that no Python crypto package is needed."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TestCertificates", "make_test_certificates"]


@dataclass(frozen=True)
class TestCertificates:
    """Paths of the PEM files (the keys are unencrypted)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("the openssl command is not installed")
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _subject_alt_names(names: tuple[str, ...]) -> str:
    entries = []
    for name in names:
        try:
            ipaddress.ip_address(name)
            entries.append(f"IP:{name}")
        except ValueError:
            entries.append(f"DNS:{name}")
    return ",".join(entries)


def make_test_certificates(directory: Path, names: tuple[str, ...]) -> TestCertificates:
    """A CA valid for two days and a server certificate it signed for ``names``
    (DNS names or IP addresses; only those, so other names fail verification)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    extensions = directory / "server.ext"
    # EC keys: generated in milliseconds, where RSA would slow every test session.
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *curve, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "2",
             "-subj", "/CN=idsync throwaway test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", *curve, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={names[0]}")
    extensions.write_text(
        f"subjectAltName={_subject_alt_names(names)}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(extensions))
    key.chmod(0o600)
    return TestCertificates(ca_file=ca_crt, cert_file=crt, key_file=key)
