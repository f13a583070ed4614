"""``idsync salesforce authorize``: get the refresh token of a Connected App.

Without ``--code`` it prints the authorization URL to open in a browser (scopes
``api id profile email address phone refresh_token offline_access``); after
consent Salesforce redirects to the callback URL with ``?code=...``. With
``--code`` (the code, or the whole redirect URL pasted) it exchanges the code at
``loginUrl`` with the ``authorization_code`` grant and prints the refresh token
and instance URL, or writes the token to ``--output`` (mode 0600) for a
``refreshToken_file`` / systemd credential. ``loginUrl``, ``clientId`` and
``clientSecret`` come from the project's provisioner unless given as options;
the other keys (the refresh token itself, typically) need not be set yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from idsync.errors import ConfigError

__all__ = ["register"]

_DEFAULT_CALLBACK = "https://login.salesforce.com/services/oauth2/success"


def register(sub: Any) -> None:
    """Add ``salesforce authorize`` to the ``idsync`` subcommands."""
    s = sub.add_parser("salesforce", help="Salesforce helpers")
    ssub = s.add_subparsers(dest="salesforce_command", metavar="ACTION", required=True)
    a = ssub.add_parser("authorize", help="get a Connected App's refresh token (authorization-code flow)")
    a.add_argument("--system", default="salesforce", help="the provisioner name (default: salesforce)")
    a.add_argument("--code", help="the authorization code, or the whole redirect URL; omit to print the URL to open")
    a.add_argument("--redirect-uri", default=_DEFAULT_CALLBACK,
                   help=f"the Connected App's callback URL (default: {_DEFAULT_CALLBACK})")
    a.add_argument("--login-url", help="override the provisioner's loginUrl (production, sandbox, or a URL)")
    a.add_argument("--client-id", help="override the provisioner's clientId")
    a.add_argument("--client-secret-env", default=None, metavar="NAME",
                   help="read the client secret from this environment variable instead of the provisioner")
    a.add_argument("--code-verifier", help="the PKCE code verifier, when the app requires PKCE")
    a.add_argument("--output", help="write the refresh token to this file (mode 0600) instead of printing it")
    a.add_argument("--json", action="store_true", help="print the result as JSON")
    a.set_defaults(handler=_cmd_authorize)


def _settings(args: argparse.Namespace, project_dir: Path) -> tuple[str, str, str | None, str | bool]:
    """(token URL, client id, client secret or None, TLS verification) from options and the provisioner."""
    from idsync.config.files import substitute
    from idsync.config.project import load_project
    from idsync.connectors.salesforce.config import token_url

    props: dict[str, Any] = {}
    console: dict[str, Any] = {}
    file = f"provisioner.openicf-{args.system}.json"
    if (project_dir / "conf" / file).exists():
        provisioner = load_project(project_dir).provisioners.get(args.system)
        if provisioner is not None:
            file = provisioner.file
            props = dict(provisioner.raw.get("configurationProperties") or {})
            console = provisioner.console_properties()  # what the console saved wins

    def value(key: str) -> Any:
        if key in console:
            return console[key]
        # Only the keys this command needs are substituted: the refresh token may not exist yet.
        if key not in props and f"{key}_file" not in props:
            return None
        raw = {k: v for k, v in props.items() if k in (key, f"{key}_file")}
        return substitute(raw, file=file, base=project_dir, key="configurationProperties").get(key)

    login = args.login_url or value("loginUrl") or "production"
    client_id = args.client_id or value("clientId")
    if not client_id:
        raise ConfigError(file, "configurationProperties.clientId", "is required (or pass --client-id)")
    secret = os.environ.get(args.client_secret_env) if args.client_secret_env else value("clientSecret")
    verify: str | bool = value("caFile") or (value("verifyTls") is not False)
    return token_url(str(login), file), str(client_id), secret, verify


def _code(text: str) -> str:
    if "://" in text or text.startswith("?"):
        found = parse_qs(urlsplit(text).query).get("code")
        if not found:
            raise ConfigError("--code", "", "the redirect URL has no code parameter")
        return found[0]
    # A code copied from the address bar is still URL-encoded (``...%3D%3D``);
    # Salesforce's codes never hold a literal '%'.
    return unquote(text)


def _cmd_authorize(args: argparse.Namespace, project_dir: Path) -> int:
    # httpx is imported only when used: every other command starts faster without it.
    import httpx

    from idsync.connectors.salesforce.auth import authorize_url, exchange_code
    from idsync.connectors.salesforce.client import tls_verify

    url, client_id, secret, verify = _settings(args, project_dir)
    if not args.code:
        print(authorize_url(url, client_id, args.redirect_uri))
        print("Open this URL, log in and allow access; then run this command again with "
              "--code 'THE URL YOU WERE REDIRECTED TO'.", file=sys.stderr)
        return 0
    if not secret:
        raise ConfigError(f"provisioner.openicf-{args.system}.json", "configurationProperties.clientSecret",
                          "is required (or pass --client-secret-env NAME)")
    with httpx.Client(verify=tls_verify(verify), timeout=60) as client:
        token = exchange_code(client, url, client_id, secret, _code(args.code), args.redirect_uri,
                              args.code_verifier)
    if not token.refresh_token:
        print("idsync: Salesforce issued no refresh token: give the Connected App the refresh_token, "
              "offline_access scope", file=sys.stderr)
        return os.EX_NOPERM
    result: dict[str, str] = {"instanceUrl": token.instance_url, "scope": token.scope}
    if args.output:
        path = Path(args.output)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token.refresh_token + "\n")
        result["refreshTokenFile"] = str(path)
    else:
        result["refreshToken"] = token.refresh_token
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, val in result.items():
            print(f"{key}: {val}")
    return 0
