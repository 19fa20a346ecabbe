"""Optional bearer-key auth: any configured key is accepted, so keys rotate by config."""

from __future__ import annotations

import hmac

from fastapi import Request

from service.errors import Unauthorized


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
