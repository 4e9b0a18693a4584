"""The dashboard's login: the admin key is posted once, a signed, expiring cookie follows.

The cookie holds ``<expires>.<nonce>.<mac>``: an HMAC-SHA-256 under a key derived from the
server's key-hashing secret, never the admin key itself. It is HttpOnly, SameSite=Strict, scoped
to ``/dashboard``, and Secure whenever the request came over https (behind a TLS-terminating
proxy, run aiohttp with forwarded-header support so that ``request.secure`` is true). Logging
out revokes the nonce in memory until it expires, and clears the cookie; a restart forgets
revocations but not signatures, so sessions outlive restarts and end at their expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, quote

from aiohttp import web

from gateway.core.errors import AuthenticationFailed, BodyTooLarge, PermissionDenied

log = logging.getLogger(__name__)

COOKIE = "gw_dashboard"
COOKIE_PATH = "/dashboard"
LOGIN_PATH = "/dashboard/login"
HOME_PATH = "/dashboard"
MAX_FORM_BYTES = 4096
MAX_REVOKED = 10_000
_KEY_LABEL = b"gateway:dashboard-session:v1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Sessions:
    """Issues and checks session tokens; remembers logged-out ones until they expire."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._revoked: dict[str, float] = {}

    @staticmethod
    def _mac(secret: bytes, payload: str) -> str:
        key = hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()
        digest = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def issue(self, secret: bytes) -> str:
        payload = f"{int(self._clock() + self.ttl_s)}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._mac(secret, payload)}"

    def check(self, secret: bytes, token: str | None) -> tuple[str, float] | None:
        """The nonce and expiry of a valid, unexpired, not revoked token; else None."""
        parts = (token or "").split(".")
        if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit()) or \
                len(parts[1]) > 64:
            return None
        payload = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._mac(secret, payload), parts[2]):
            return None
        expires = float(parts[0])
        if expires <= self._clock() or parts[1] in self._revoked:
            return None
        return parts[1], expires

    def revoke(self, secret: bytes, token: str | None) -> None:
        checked = self.check(secret, token)
        if checked is None:
            return
        now = self._clock()
        self._revoked = {n: e for n, e in self._revoked.items() if e > now}
        if len(self._revoked) < MAX_REVOKED:
            self._revoked[checked[0]] = checked[1]


async def read_form(request: web.Request) -> dict[str, str]:
    """A small url-encoded form (the login), refusing anything large."""
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise BodyTooLarge("The form is too large.")
    body = await request.content.read(MAX_FORM_BYTES + 1)
    if len(body) > MAX_FORM_BYTES:
        raise BodyTooLarge("The form is too large.")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def safe_next(target: str | None) -> str:
    """Where to go after login: a dashboard path on this site, never elsewhere."""
    if (not target or not target.startswith(HOME_PATH) or "//" in target or "\\" in target
            or not target.isprintable()):
        return HOME_PATH
    return target


def login_redirect(request: web.Request) -> web.HTTPSeeOther:
    target = quote(request.path_qs, safe="/?=&")
    return web.HTTPSeeOther(f"{LOGIN_PATH}?next={target}")


def admin_key_ok(authenticate_admin: Callable[[str], None], key: str) -> bool:
    """Whether ``key`` is the admin key (constant work whatever it is)."""
    try:
        authenticate_admin(f"Bearer {key.strip()}")
    except (AuthenticationFailed, PermissionDenied):
        return False
    return True


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str,
                       ttl_s: float) -> None:
    response.set_cookie(COOKIE, token, max_age=int(ttl_s), path=COOKIE_PATH, httponly=True,
                        samesite="Strict", secure=request.secure)


def clear_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=COOKIE_PATH, secure=request.secure, httponly=True,
                        samesite="Strict")
