"""A lean closed-loop HTTP/1.1 load generator (keep-alive, asyncio streams).

It shares the CPU with the server under test, so it does as little as possible per request: no HTTP
library, requests pre-encoded, responses read by Content-Length and checked only for their status.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def encode_post(url: str, body: bytes, content_type: str = "image/jpeg") -> bytes:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status, and whether the server closes the connection after it (`Connection: close`, as for
    a refusal sent before the body was read)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, closing = 0, False
    for line in head.split(b"\r\n"):
        lowered = line.lower()
        if lowered.startswith(b"content-length:"):
            length = int(line[15:])
        elif lowered.startswith(b"connection:") and b"close" in lowered:
            closing = True
    await reader.readexactly(length)
    return status, closing


async def run_load(url: str, payloads: list[bytes], concurrency: int, seconds: float) -> LoadResult:
    """`concurrency` connections each send the payloads round-robin, back to back, for `seconds`."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [encode_post(url, body) for body in payloads]
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def connection(offset: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for request in itertools.islice(itertools.cycle(requests), offset, None):
                if time.perf_counter() >= stop_at:
                    return
                started = time.perf_counter()
                writer.write(request)
                status, closing = await read_response(reader)
                latencies.append((time.perf_counter() - started) * 1e3)
                if status != 200:
                    errors += 1
                if closing:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection(i) for i in range(concurrency)))
    return LoadResult(concurrency, len(latencies), errors, time.perf_counter() - started, latencies)
