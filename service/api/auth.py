"""Optional bearer-key auth: any configured key is accepted, so keys rotate by config."""

from __future__ import annotations

import hmac

from fastapi import Request

from service.errors import Unauthorized


def check_bearer(request: Request) -> None:
    keys: list[str] = request.app.state.settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    presented = token.strip().encode()
    # compare_digest against every key (no early exit) so timing reveals neither key nor position.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key.encode())
    if scheme.lower() != "bearer" or not matched:
        raise Unauthorized("a valid 'Authorization: Bearer <key>' header is required")
