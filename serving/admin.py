"""Who may change what the server serves: one decision for REST's admin API and gRPC's reload.

With an admin token, a caller must present it as `Bearer <token>`. Without one, state
changes are allowed only on a server bound to loopback (nobody else can reach it).
"""
from __future__ import annotations

import hmac
import ipaddress

ALLOWED = None
DISABLED = "disabled"  # no token configured and reachable from other hosts
UNAUTHENTICATED = "unauthenticated"  # a token is configured and the caller did not present it


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminGate:
    """The admin token (never logged, never in repr) and the host the server binds."""

    def __init__(self, token: str | None, host: str):
        self._token = token or None
        self.host = host

    def __repr__(self) -> str:
        return f"AdminGate(token={'set' if self._token else 'none'}, host={self.host!r})"

    @property
    def has_token(self) -> bool:
        return self._token is not None

    @property
    def bound_to_loopback(self) -> bool:
        return is_loopback(self.host)

    def token_matches(self, token: str) -> bool:
        """Constant-time comparison with the admin token (False when none is configured)."""
        return self._token is not None and hmac.compare_digest(token.encode(), self._token.encode())

    def check(self, authorization: str) -> str | None:
        """ALLOWED (None), DISABLED or UNAUTHENTICATED for an 'Authorization' header value."""
        if not self.has_token:
            return ALLOWED if self.bound_to_loopback else DISABLED
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not self.token_matches(token.strip()):
            return UNAUTHENTICATED
        return ALLOWED
