"""The SCIM protocol over httpx: one client per system, its errors mapped onto
idsync's exception tree, throttling retried, list responses paged.

    HTTP status                       raised as                  what the run does
    401, 403                          AuthenticationFailed       stops (PeerError)
    network failure, 5xx              PeerUnavailable            stops before deletes
    429, 503                          retried maximumRetries times, waiting Retry-After
                                      (seconds or HTTP date) or an exponential backoff
    404                               NotFound                   that object only
    412                               RevisionMismatch           that object (re-read once)
    400, 409, other 4xx               ObjectRejected             that object only

Messages carry the method, the path and the provider's ``scimType``/``detail``,
never a header value.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from idsync.connectors.scim.auth import make_auth
from idsync.connectors.scim.config import ScimSettings
from idsync.errors import (
    AuthenticationFailed,
    NotFound,
    ObjectRejected,
    PeerError,
    PeerUnavailable,
    RevisionMismatch,
    TLSError,
)

__all__ = ["ProviderFeatures", "ScimClient"]

log = structlog.get_logger("idsync.connectors.scim_http")

_RETRIED = {429, 503}
_SCIM_JSON = "application/scim+json"


@dataclass(frozen=True)
class ProviderFeatures:
    """What the provider's ``ServiceProviderConfig`` announces."""

    patch: bool
    etag: bool
    filter: bool
    max_results: int | None
    sort: bool = False


def _retry_after(response: httpx.Response, attempt: int, cap: float) -> float:
    header = response.headers.get("Retry-After")
    if header:
        try:
            return min(max(float(header), 0.0), cap)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return min(max(float(when.timestamp()) - time.time(), 0.0), cap)
    return min(0.5 * 2.0**attempt, cap)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    if not isinstance(body, dict):
        return response.reason_phrase
    parts = [str(body[k]) for k in ("scimType", "detail") if body.get(k)]
    errors = body.get("Errors")  # SCIM 1.1's error shape
    if not parts and isinstance(errors, list):
        parts = [str(e.get("description")) for e in errors if isinstance(e, dict) and e.get("description")]
    return ": ".join(parts) or response.reason_phrase


class ScimClient:
    """One SCIM provider: requests, errors, paging, discovery. Thread-safe (httpx)."""

    def __init__(self, system: str, settings: ScimSettings) -> None:
        self.system = system
        self.settings = settings
        self.auth = make_auth(settings)
        verify: ssl.SSLContext | bool = settings.verify_tls
        if settings.verify_tls and settings.ca_file:
            verify = ssl.create_default_context(cafile=settings.ca_file)
        media = _SCIM_JSON if settings.version == 2 else "application/json"
        self._http = httpx.Client(
            base_url=settings.endpoint + "/", auth=self.auth, verify=verify,
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            headers={"Accept": f"{media}, application/json"},
        )
        self._media = media
        self._features: ProviderFeatures | None = None
        # Set once the provider refuses a filter joined by "or": lookups go one term a request.
        self.single_terms = False
        # The provider's clock: the Date of its last answer (liveSync's first token, and its sanity check).
        self.last_date: str | None = None

    def close(self) -> None:
        self._http.close()

    # Requests ---------------------------------------------------------------

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                body: Any = None, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """Send one request, retrying throttling; raise for any error status."""
        what = f"{method} {path}"
        extra = dict(headers or {})
        if body is not None:
            extra["Content-Type"] = self._media
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path.lstrip("/"), params=params, headers=extra,
                                              json=body)
            except httpx.ConnectError as exc:
                peer = self._peer(exc)
                if isinstance(exc.__context__, ssl.SSLError) or "CERTIFICATE" in str(exc).upper():
                    raise TLSError(f"scim {self.system}: TLS verification failed for {peer}") from None
                raise PeerUnavailable(f"scim {self.system}: cannot reach {peer}: {what}") from None
            except httpx.TransportError as exc:
                raise PeerUnavailable(f"scim {self.system}: {what} failed: {type(exc).__name__} "
                                      f"from {self._peer(exc)}") from None
            if response.status_code in _RETRIED and attempt < self.settings.max_retries:
                wait = _retry_after(response, attempt, self.settings.max_retry_wait)
                log.info("scim.throttled", system=self.system, request=what, status=response.status_code,
                         wait=wait, attempt=attempt + 1)
                time.sleep(wait)
                attempt += 1
                continue
            self.last_date = response.headers.get("Date") or self.last_date
            self._raise_for(response, what)
            return response

    def _peer(self, exc: httpx.TransportError) -> str:
        """What could not be reached: the SCIM endpoint, or the OAuth token endpoint
        when the failed request was the token request."""
        try:
            url = str(exc.request.url)
        except RuntimeError:
            url = ""
        token = self.settings.token_endpoint
        if token and url.rstrip("/") == token.rstrip("/"):
            return f"the token endpoint {token}"
        return self.settings.endpoint

    def _raise_for(self, response: httpx.Response, what: str) -> None:
        code = response.status_code
        if code < 400:
            return
        text = f"scim {self.system}: {what}: HTTP {code}: {_detail(response)}"
        if code in (401, 403):
            raise AuthenticationFailed(f"scim {self.system}: authentication refused ({what}: HTTP {code})")
        if code == 404:
            raise NotFound(text)
        if code == 412:
            raise RevisionMismatch(text)
        if code >= 500 or code in _RETRIED:
            raise PeerUnavailable(text)
        raise ObjectRejected(text)

    def json(self, method: str, path: str, *, one_object: bool = False, **kwargs: Any) -> Any:
        return self.body(method, path, self.request(method, path, **kwargs), one_object=one_object)

    def body(self, method: str, path: str, response: httpx.Response, *, one_object: bool = False) -> Any:
        """The JSON of ``response``, None when empty; an answer that is not JSON fails the
        one object it is about (``one_object``), or else the whole read."""
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            error = ObjectRejected if one_object else PeerError
            raise error(f"scim {self.system}: {method} {path}: the answer is not JSON") from None

    # Discovery and paging -------------------------------------------------------

    def features(self) -> ProviderFeatures:
        """The provider's ``ServiceProviderConfig``, read once; PeerError when malformed.
        A provider without one (404) is taken to have neither PATCH nor ETags: updates
        are PUT, which every provider takes."""
        if self._features is None:
            path = "ServiceProviderConfig" if self.settings.version == 2 else "ServiceProviderConfigs"
            try:
                body = self.json("GET", path)
            except NotFound:
                log.warning("scim.no_service_provider_config", system=self.system, request=f"GET {path}",
                            assumed="no PATCH, no ETags")
                self._features = ProviderFeatures(patch=False, etag=False, filter=True, max_results=None)
                return self._features
            if not isinstance(body, dict):
                raise PeerError(f"scim {self.system}: GET {path}: not a ServiceProviderConfig")
            if self.settings.version == 2:
                self._features = _features_v2(self.system, body)
            else:
                self._features = _features(body)
        return self._features

    def list_pages(self, endpoint: str, *, filter: str | None, attributes: Sequence[str] | None,
                   count: int) -> Iterator[list[dict[str, Any]]]:
        """The resources of ``endpoint`` matching ``filter``, a page at a time
        (``startIndex``/``count`` until ``totalResults``).

        Index paging is not a snapshot: a resource deleted behind the read position
        moves every later one back by one, and one of them is never seen. Seen from a
        recon, that unseen resource looks deleted, so a ``totalResults`` that shrinks
        between pages stops the read with ``PeerUnavailable`` rather than let a
        complete-looking listing through (the run fails before its deletes)."""
        start = 1
        first_total: int | None = None
        while True:
            params: dict[str, Any] = {"startIndex": start, "count": count}
            if filter:
                params["filter"] = filter
            if attributes:
                params["attributes"] = ",".join(attributes)
            body = self.json("GET", endpoint, params=params)
            if not isinstance(body, dict):
                raise PeerError(f"scim {self.system}: GET {endpoint}: not a ListResponse")
            # Some providers leave out "Resources" on an empty page.
            resources = [r for r in body.get("Resources") or [] if isinstance(r, dict)]
            if resources and body.get("totalResults") is None:
                # Without it the end of the list cannot be told from a page that stops short.
                raise PeerError(f"scim {self.system}: GET {endpoint}: the ListResponse has no totalResults, "
                                "so whether the read is complete cannot be told")
            total = int(body.get("totalResults") or 0)
            if first_total is None:
                first_total = total
            elif total < first_total:
                raise PeerUnavailable(f"scim {self.system}: GET {endpoint}: the list shrank from {first_total} to "
                                      f"{total} while it was read, so some resources may have been skipped; "
                                      f"read it again in the next run")
            if not resources and start <= total:
                raise PeerUnavailable(f"scim {self.system}: GET {endpoint}: an empty page at startIndex {start} "
                                      f"of {total} resources; the read is incomplete")
            if resources:
                yield resources
            start += len(resources)
            if not resources or start > total:
                return


def _features(body: Mapping[str, Any]) -> ProviderFeatures:
    def supported(key: str) -> bool:
        section = body.get(key)
        return bool(isinstance(section, Mapping) and section.get("supported"))

    filter_section = body.get("filter")
    max_results = filter_section.get("maxResults") if isinstance(filter_section, Mapping) else None
    return ProviderFeatures(supported("patch"), supported("etag"), supported("filter"),
                            int(max_results) if isinstance(max_results, int) and max_results > 0 else None,
                            supported("sort"))


def _features_v2(system: str, body: Mapping[str, Any]) -> ProviderFeatures:
    """Checked against RFC 7643's model (scim2-models), so a broken document is named
    as such by ``idsync test``."""
    from pydantic import ValidationError
    from scim2_models import ServiceProviderConfig

    try:
        ServiceProviderConfig.model_validate(dict(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise PeerError(f"scim {system}: GET ServiceProviderConfig: bad schema at {where or 'top'}: "
                        f"{first.get('msg')}") from None
    return _features(body)
