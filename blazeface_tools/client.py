"""Python clients for the HTTP API: `BlazefaceClient` (blocking) and `AsyncBlazefaceClient` (asyncio).

    with BlazefaceClient("http://127.0.0.1:8000") as client:
        result = client.detect(open("photo.jpg", "rb").read(), model="full")   # a DetectResponse
        print(len(result.faces), result.faces[0].box if result.faces else None)

Both return the service's own response models (`service.api.schemas`), keep one HTTP connection pool per
instance (keep-alive), and retry what the service turned away for now (429, 503) or what got no answer,
with the delays of one `RetryPolicy`. Any failure that is not retried, or still fails after the retries,
raises `ApiError` carrying a typed `Problem`; one that never got an HTTP answer has status 0.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import httpx

from service.api.schemas import BatchResponse, DetectResponse, Problem

Option = str | int | float | None

# What the service answers when it is full or its backend is down for a moment; Retry-After says when.
RETRY_STATUSES = frozenset({429, 503})
# No HTTP answer at all (refused, reset, timed out): worth another try, detection being idempotent.
RETRY_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
# Problem type of a request that got no HTTP answer (status 0, as browsers report a network error).
NO_ANSWER = "urn:blazeface:client:no-answer"


class ApiError(Exception):
    """A request that failed for good: the service's problem+json, or one made here (see `NO_ANSWER`)."""

    def __init__(self, problem: Problem) -> None:
        named = f" (request_id {problem.request_id})" if problem.request_id else ""
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}{named}")
        self.problem = problem

    @property
    def status(self) -> int:
        return self.problem.status


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter that never retries sooner than `Retry-After`.

    The wait before retry n+1 is max(Retry-After, base_s · 2ⁿ) stretched by a random 0…`jitter` of itself
    (upwards only, so that clients told the same Retry-After do not all return at the same instant), and
    at most `cap_s`. A Retry-After longer than the cap is not retried: waiting less would ignore it.
    `random` and `clock` (for an HTTP-date Retry-After) are injectable for tests.
    """

    retries: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: float = 0.5
    random: Callable[[], float] = field(default=random.random, repr=False)
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def delay(self, attempt: int, retry_after: str | None = None) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (from 0), or None: give up."""
        if attempt >= self.retries:
            return None
        floor = self.retry_after_s(retry_after)
        if floor > self.cap_s:
            return None
        backoff = min(self.cap_s, self.base_s * 2**attempt)
        return min(self.cap_s, max(floor, backoff) * (1 + self.jitter * self.random()))

    def retry_after_s(self, value: str | None) -> float:
        """RFC 9110 `Retry-After`: delay-seconds or an HTTP-date; 0 when absent or unreadable."""
        if not value:
            return 0.0
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - self.clock())
        except (TypeError, ValueError):
            return 0.0


class _Client:
    """What both clients share: the requests they send, when to retry, and how answers are read."""

    def __init__(self, api_key: str | None, retry: RetryPolicy) -> None:
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retry = retry
        self.retries = 0  # requests sent again so far (what the CLI's summary reports)

    @staticmethod
    def _detect_request(
        http: httpx.Client | httpx.AsyncClient, image: bytes, options: dict[str, Option]
    ) -> httpx.Request:
        return http.build_request(
            "POST",
            "/detect",
            content=image,
            params=_params(options),
            headers={"Content-Type": "application/octet-stream"},
        )

    @staticmethod
    def _batch_request(
        http: httpx.Client | httpx.AsyncClient, images: Sequence[bytes], options: dict[str, Option]
    ) -> httpx.Request:
        files = [("images", (f"image{i}", data, "application/octet-stream")) for i, data in enumerate(images)]
        return http.build_request("POST", "/detect/batch", files=files, params=_params(options))

    def _next_delay(self, attempt: int, sent: httpx.Response | Exception) -> float | None:
        """How long to wait before sending again, or None when `sent` is the final outcome."""
        if isinstance(sent, httpx.Response):
            if sent.status_code not in RETRY_STATUSES:
                return None
            delay = self.retry.delay(attempt, sent.headers.get("Retry-After"))
        else:
            delay = self.retry.delay(attempt)
        if delay is not None:
            self.retries += 1
        return delay


def _params(options: dict[str, Option]) -> dict[str, str | int | float]:
    return {key: value for key, value in options.items() if value is not None}


def _answer(sent: httpx.Response | Exception) -> httpx.Response:
    """The response, or ApiError with its problem (a made-up one where there is no usable answer)."""
    if isinstance(sent, Exception):
        detail = f"{type(sent).__name__}: {sent}"
        raise ApiError(
            Problem(type=NO_ANSWER, title="No answer from the service", status=0, detail=detail)
        ) from sent
    if sent.is_error:
        try:
            problem = Problem.model_validate_json(sent.content)
        except ValueError:  # not problem+json: a proxy's error page, say
            problem = Problem(
                type="about:blank",
                title=sent.reason_phrase,
                status=sent.status_code,
                detail=sent.text[:200],
                request_id=sent.headers.get("x-request-id"),
            )
        raise ApiError(problem)
    return sent


class BlazefaceClient(_Client):
    """Blocking client; one connection pool per instance. `transport` is httpx's (e.g. a MockTransport)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(api_key, retry or RetryPolicy())
        self._sleep = sleep
        self._http = httpx.Client(base_url=url, headers=self._headers, timeout=timeout, transport=transport)

    def __enter__(self) -> BlazefaceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def detect(self, image: bytes, **options: Option) -> DetectResponse:
        """Options: model, min_score, max_faces, suppression, preprocess (see the API docs)."""
        response = self._send(self._detect_request(self._http, image, options))
        return DetectResponse.model_validate_json(response.content)

    def detect_batch(self, images: Sequence[bytes], **options: Option) -> list[DetectResponse | Problem]:
        """One entry per image, in order: its detection, or the problem with that image."""
        response = self._send(self._batch_request(self._http, images, options))
        return BatchResponse.model_validate_json(response.content).results

    def _send(self, request: httpx.Request) -> httpx.Response:
        attempt = 0
        while True:
            sent: httpx.Response | Exception
            try:
                sent = self._http.send(request)
            except RETRY_ERRORS as exc:
                sent = exc
            delay = self._next_delay(attempt, sent)
            if delay is None:
                return _answer(sent)
            self._sleep(delay)
            attempt += 1


class AsyncBlazefaceClient(_Client):
    """asyncio client; at most `max_connections` requests in flight, the rest wait for a connection."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        *,
        max_connections: int = 8,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(api_key, retry or RetryPolicy())
        self._sleep = sleep
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        # The pool timeout would count a wait for a free connection as a failure; the limit is the point.
        self._http = httpx.AsyncClient(
            base_url=url,
            headers=self._headers,
            timeout=httpx.Timeout(timeout, pool=None),
            limits=limits,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncBlazefaceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def detect(self, image: bytes, **options: Option) -> DetectResponse:
        """Options: model, min_score, max_faces, suppression, preprocess (see the API docs)."""
        response = await self._send(self._detect_request(self._http, image, options))
        return DetectResponse.model_validate_json(response.content)

    async def detect_batch(
        self, images: Sequence[bytes], **options: Option
    ) -> list[DetectResponse | Problem]:
        """One entry per image, in order: its detection, or the problem with that image."""
        response = await self._send(self._batch_request(self._http, images, options))
        return BatchResponse.model_validate_json(response.content).results

    async def _send(self, request: httpx.Request) -> httpx.Response:
        attempt = 0
        while True:
            sent: httpx.Response | Exception
            try:
                sent = await self._http.send(request)
            except RETRY_ERRORS as exc:
                sent = exc
            delay = self._next_delay(attempt, sent)
            if delay is None:
                return _answer(sent)
            await self._sleep(delay)
            attempt += 1
