"""CORS for the listed origins (`CORS_ORIGINS`): Starlette's middleware, with its refusal of a preflight
in problem+json like every other error (it answers plain text)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from service.api.problems import problem_body, problem_response


class ProblemCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        # Its words name what was refused ("Disallowed CORS origin, headers"), never the request's values.
        detail = bytes(response.body).decode()
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        problem = problem_body(400, "CORS preflight refused", detail, "cors-preflight")
        return problem_response(problem, headers)
