"""Optional bearer-key auth: any configured key is accepted, so keys rotate by config. And the checks a
WebSocket handshake needs beyond it: which origins may open `/stream`, and the key as a subprotocol."""

from __future__ import annotations

import hmac

from fastapi import Request

from service.errors import Forbidden, Unauthorized

# `/stream`'s subprotocols. Browsers cannot set headers on a WebSocket, so a page offers its key as
# `bearer.<key>` beside `blazeface.v1`; the server selects `blazeface.v1`, never echoing the key (and a
# browser fails a handshake that offered subprotocols and got none back).
STREAM_SUBPROTOCOL = "blazeface.v1"
_KEY_SUBPROTOCOL_PREFIX = "bearer."


def verify_bearer(authorization: str, keys: list[str]) -> None:
    """Raise `Unauthorized` unless auth is off or the header carries one of `keys`."""
    if not keys:
        return
    scheme, _, token = authorization.partition(" ")
    presented = token.strip().encode()
    # compare_digest against every key (no early exit) so timing reveals neither key nor position.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key.encode())
    if scheme.lower() != "bearer" or not matched:
        raise Unauthorized("a valid 'Authorization: Bearer <key>' header is required")


async def check_bearer(request: Request) -> None:
    """FastAPI dependency for the HTTP routes (async, so FastAPI runs it inline, not in a thread)."""
    verify_bearer(request.headers.get("authorization", ""), request.app.state.settings.api_keys)


def verify_stream_key(authorization: str, subprotocols: list[str], keys: list[str]) -> None:
    """The key of a WebSocket handshake: the Authorization header, else a `bearer.<key>` subprotocol.
    The refusal's detail is HTTP's: a browser never sees it, and other clients send the header."""
    if not authorization:
        offered = (p for p in subprotocols if p.startswith(_KEY_SUBPROTOCOL_PREFIX))
        authorization = "Bearer " + next(offered, "").removeprefix(_KEY_SUBPROTOCOL_PREFIX)
    verify_bearer(authorization, keys)


def verify_origin(origin: str | None, host: str, allowed: list[str]) -> None:
    """Raise `Forbidden` unless a browser page of this origin may open a WebSocket here.

    Browsers apply no CORS to WebSockets, only send `Origin`, so without this any site's page could
    stream through a visitor's browser to a server it can reach (an intranet or localhost one). The
    rule mirrors what CORS gives HTTP: no `Origin` (not a browser) is allowed; the page's own origin
    (`Origin`'s host:port is the `Host` header) is allowed; another origin only when `CORS_ORIGINS`
    lists it (or holds `*`). Behind a proxy that rewrites `Host`, list the public origin there.
    """
    if origin is None or origin in allowed or "*" in allowed:
        return
    # An Origin is "scheme://host[:port]" (or "null"); split by hand, as urlsplit raises on a bad one.
    if host and origin.partition("://")[2].lower() == host.lower():
        return
    raise Forbidden("this Origin may not open /stream; cross-origin pages need it in CORS_ORIGINS")
