"""Why a TLS connection to a directory failed, in words an operator can act on.

libldap (built with GnuTLS on Debian) reports a refused certificate only as
"Can't contact LDAP server" or "Connect error". When a TLS connection fails, the
same handshake is tried once more with Python's ``ssl`` under the same rules (the
CA file or the system's CAs, the host name checked, verification as configured),
through StartTLS when that is how the connection starts, and its reason is the one
reported: "certificate verify failed: ..." or "certificate is not valid for HOST".
"""

from __future__ import annotations

import socket
import ssl

from idsync.connectors.ldap.config import LdapSettings

__all__ = ["tls_failure"]

# LDAPMessage {messageID 1, extendedReq {requestName "1.3.6.1.4.1.1466.20037"}} (RFC 4511 4.14.1).
_START_TLS = b"\x30\x1d\x02\x01\x01\x77\x18\x80\x16" + b"1.3.6.1.4.1.1466.20037"


def _context(settings: LdapSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.ca_file)
    if not settings.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def tls_failure(settings: LdapSettings) -> str | None:
    """The reason a TLS handshake with the server fails, or None when it does not
    (or the server cannot be reached at all: not a TLS problem)."""
    timeout = settings.connect_timeout
    try:
        with socket.create_connection((settings.host, settings.port), timeout=timeout) as sock:
            if settings.start_tls:
                sock.sendall(_START_TLS)
                if not sock.recv(4096):
                    return "StartTLS refused: the server closed the connection"
            with _context(settings).wrap_socket(sock, server_hostname=settings.host):
                return None
    except ssl.SSLCertVerificationError as error:
        message = str(error.verify_message or "")
        if "mismatch" in message or "not valid for" in message:
            return f"certificate is not valid for {settings.host}"
        return f"certificate verify failed: {message}"
    except ssl.SSLError as error:
        return str(error.reason or error)
    except OSError:
        return None
