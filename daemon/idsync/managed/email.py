"""PingIDM's outbound email service, ``external/email``: one message sent over SMTP.

``send_email(config, action, content)`` answers scripts' ``openidm.action("external/email",
"send", message)`` (``router.py``) and ``POST openidm/external/email?_action=send``
(``api/email.py``) alike, for PingIDM's actions ``send`` and ``sendEmail`` (the name its
``ui/resetPassword`` uses), with PingIDM's answer ``{"status": "OK", "message": "Email sent"}``.
The message is PingIDM's: ``from`` (default: the configuration's), ``to``, ``cc``, ``bcc``
(comma-separated strings or lists), ``subject``, ``body``, ``type`` (``text/plain``, the
default, ``text/html`` or ``text/xml``); the ``_from``, ``_to``... spellings too.

First the message is checked and built (``compose``), then sent on a connection of its
own (``_deliver``): SMTPS with ``ssl``, STARTTLS with ``starttls`` (required then, never
skipped), TLS verified against the system's CAs or ``caFile``, AUTH with ``auth``. Every
recipient must be accepted before the content is sent, so a refused one sends nothing
to anyone (JavaMail's default), and a retry sends no copy twice.

Errors, by what the caller must do:

    NotFound              the project has no conf/external.email.json
    ObjectRejected        the message is wrong (no recipient, a line break in a header, a
                          type PingIDM does not send), or the server refused it for good
                          (5xx for the sender, a recipient or the content): nothing was sent
    PeerUnavailable       the server cannot be reached, timed out, or answered 4xx: try later
    AuthenticationFailed  the server refused the user name and password, or offers no AUTH
    TLSError              the certificate does not verify, or STARTTLS is not offered

They carry the server's reply, never the password (blanked, should a server echo it).
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formataddr, formatdate, getaddresses, make_msgid
from typing import Any

import structlog

from idsync.config.email import EmailConfig
from idsync.errors import AuthenticationFailed, IdsyncError, NotFound, ObjectRejected, PeerUnavailable, TLSError

__all__ = ["ACTIONS", "NOT_CONFIGURED", "SENT", "Message", "compose", "send_email", "tls_context"]

log = structlog.get_logger("idsync.email")

ACTIONS = ("send", "sendEmail")
SENT = {"status": "OK", "message": "Email sent"}
NOT_CONFIGURED = "the email service is not configured (conf/external.email.json)"
_TYPES = {"text/plain": "plain", "text/html": "html", "text/xml": "xml"}
_HEADERS = ("from", "to", "cc", "bcc", "subject")
_TLS_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
                 "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class Message:
    """A checked message: the envelope and the bytes to send."""

    sender: str  # the envelope's MAIL FROM
    recipients: tuple[str, ...]  # to, cc and bcc
    data: bytes
    utf8: bool  # an address is not ASCII: the server must take SMTPUTF8


def send_email(config: EmailConfig | None, action: Any, content: Any) -> dict[str, str]:
    """Send the message ``content`` as PingIDM's ``external/email`` action ``action`` does."""
    if action not in ACTIONS:
        other = "sendTemplate (PingIDM's email templates) is not available in idsync; " if action == "sendTemplate" \
            else ""
        raise ObjectRejected(f"external/email: {other}the actions are {' and '.join(ACTIONS)}, not {action!r}")
    if config is None:
        raise NotFound(NOT_CONFIGURED)
    message = compose(content, config.sender)
    try:
        _deliver(config, message)
    except IdsyncError as exc:
        log.warning("email.failed", server=config.server, recipients=len(message.recipients), error=str(exc))
        raise
    log.info("email.sent", server=config.server, recipients=len(message.recipients))
    return dict(SENT)


def compose(content: Any, default_from: str | None) -> Message:
    """PingIDM's message checked and written out; ObjectRejected saying what is wrong."""
    if not isinstance(content, Mapping):
        raise ObjectRejected("external/email: the message must be an object with to, subject and body")
    fields = {k: content.get(k, content.get(f"_{k}")) for k in (*_HEADERS, "body", "type")}
    for key in _HEADERS:
        value = fields[key]
        texts = value if isinstance(value, list) else [value]
        if not all(isinstance(t, str) or t is None for t in texts):
            raise ObjectRejected(f"external/email: {key} must be a string" + ("" if key in ("from", "subject")
                                                                               else " or a list of strings"))
        if any(c in t for t in texts if t for c in "\r\n\0"):
            raise ObjectRejected(f"external/email: {key} must be one line: a line break would start a header")
    kind = fields["type"] or "text/plain"
    if not isinstance(kind, str) or kind.lower() not in _TYPES:
        raise ObjectRejected(f"external/email: type {kind!r} is not sent; use {', '.join(_TYPES)}")
    body = fields["body"]
    if body is not None and not isinstance(body, str):
        raise ObjectRejected("external/email: body must be a string")
    sender = _addresses(fields["from"] or default_from, "from")
    if len(sender) != 1:
        raise ObjectRejected("external/email: from must be one address (and conf/external.email.json has no from)"
                             if not sender else "external/email: from must be one address")
    to, cc, bcc = (_addresses(fields[k], k) for k in ("to", "cc", "bcc"))
    if not to and not cc and not bcc:
        raise ObjectRejected("external/email: the message has no recipient (to)")
    mail = EmailMessage()
    mail["From"] = sender[0][1]
    for header, found in (("To", to), ("Cc", cc)):
        if found:
            mail[header] = ", ".join(written for _, written in found)
    mail["Subject"] = fields["subject"] if fields["subject"] is not None else "<no subject>"
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = make_msgid(domain=sender[0][0].rpartition("@")[2])
    mail.set_content(body if body is not None else "", subtype=_TYPES[kind.lower()])
    recipients = tuple(dict.fromkeys(address for address, _ in (*to, *cc, *bcc)))
    utf8 = not all(a.isascii() for a in (sender[0][0], *recipients))
    data = mail.as_bytes(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
    return Message(sender=sender[0][0], recipients=recipients, data=data, utf8=utf8)


def _addresses(value: Any, key: str) -> list[tuple[str, str]]:
    """(address, as written) for each address of a comma-separated string or a list of them."""
    texts = [] if value is None else value if isinstance(value, list) else [value]
    found = []
    for name, address in getaddresses(texts):
        if not name and not address:
            continue
        local, at, domain = address.rpartition("@")
        if not (at and local and domain) or any(c.isspace() for c in address):
            raise ObjectRejected(f"external/email: {key}: {address or name!r} is not an email address")
        found.append((address, formataddr((name, address))))
    return found


def tls_context(config: EmailConfig) -> ssl.SSLContext:
    """The TLS the configuration asks for: verified unless ``mail.smtp.ssl.trust`` says otherwise."""
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif not config.check_hostname:
        context.check_hostname = False
    if config.tls_versions:
        versions = sorted(_TLS_VERSIONS[v] for v in config.tls_versions)
        context.minimum_version, context.maximum_version = versions[0], versions[-1]
    return context


def _deliver(config: EmailConfig, message: Message) -> None:
    password = config.password() if config.auth else None
    smtp: smtplib.SMTP | None = None
    try:
        smtp = _connect(config)
        if password is not None:
            smtp.login(config.username or "", password)
        _transact(smtp, message)
    except (smtplib.SMTPException, OSError) as exc:
        raise _failure(exc, config, password) from None
    finally:
        if smtp is not None:
            _close(smtp)


def _connect(config: EmailConfig) -> smtplib.SMTP:
    if config.ssl:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(config.host, config.port, config.local_hostname,
                                              timeout=config.connect_timeout, context=tls_context(config))
    else:
        smtp = smtplib.SMTP(config.host, config.port, config.local_hostname, timeout=config.connect_timeout)
    if smtp.sock is not None:
        smtp.sock.settimeout(config.timeout)
    if config.starttls:
        smtp.ehlo()
        if not smtp.has_extn("starttls"):
            _close(smtp)
            raise TLSError(f"mail server {config.server} does not offer STARTTLS, which starttls.enable requires "
                           "(nothing is sent in clear)")
        smtp.starttls(context=tls_context(config))
    return smtp


def _transact(smtp: smtplib.SMTP, message: Message) -> None:
    """MAIL, RCPT for each recipient, DATA: every recipient is accepted before anything is sent."""
    smtp.ehlo_or_helo_if_needed()
    options = []
    if message.utf8:
        if not smtp.has_extn("smtputf8"):
            raise ObjectRejected("external/email: an address is not ASCII and the mail server does not take such "
                                 "addresses (SMTPUTF8)")
        options = ["SMTPUTF8", "BODY=8BITMIME"]
    code, reply = smtp.mail(message.sender, options)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, reply, message.sender)
    refused: dict[str, tuple[int, bytes]] = {}
    for recipient in message.recipients:
        code, reply = smtp.rcpt(recipient)
        if code not in (250, 251):
            refused[recipient] = (code, reply)
    if refused:
        smtp.rset()
        raise smtplib.SMTPRecipientsRefused(refused)
    code, reply = smtp.data(message.data)
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)


def _close(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(smtplib.SMTPException, OSError):
        smtp.quit()
    smtp.close()


def _failure(exc: BaseException, config: EmailConfig, password: str | None) -> IdsyncError:
    """What went wrong, as the caller must act on it; the server's words, the password blanked."""
    def said(code: int, reply: bytes | str) -> str:
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        return f"{code} {text.replace(password, '***') if password else text}".replace("\n", " ")

    where = f"mail server {config.server}"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return AuthenticationFailed(f"{where} refused the credentials of {config.username}: "
                                    f"{said(exc.smtp_code, exc.smtp_error)}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return AuthenticationFailed(f"{where} offers no login (AUTH), which auth.enable requires")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = "; ".join(f"{who}: {said(code, reply)}" for who, (code, reply) in exc.recipients.items())
        return _by_code(min(code for code, _ in exc.recipients.values()),
                        f"{where} refused the recipients, so the message was sent to no one: {refused}")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return _by_code(exc.smtp_code, f"{where} refused the sender {exc.sender}: "
                                       f"{said(exc.smtp_code, exc.smtp_error)}")
    if isinstance(exc, smtplib.SMTPResponseException):
        return _by_code(exc.smtp_code, f"{where} refused the message: {said(exc.smtp_code, exc.smtp_error)}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TLSError(f"{where}: the certificate does not verify ({exc.verify_message}); give its CA as caFile in "
                        "conf/external.email.json")
    if isinstance(exc, ssl.SSLError):
        return TLSError(f"{where}: TLS failed: {exc.reason or exc}")
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):  # smtplib wraps it
        return PeerUnavailable(f"{where} did not answer in time (connectiontimeout, timeout)")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return PeerUnavailable(f"{where} closed the connection")
    return PeerUnavailable(f"{where} cannot be reached: {exc.strerror or exc}" if isinstance(exc, OSError)
                           else f"{where}: {exc}")


def _by_code(code: int, text: str) -> IdsyncError:
    """A permanent refusal (5xx) is the message's; a transient one (4xx) the server's, to retry."""
    return ObjectRejected(f"external/email: {text}") if code >= 500 else PeerUnavailable(f"{text} (try again later)")
