"""The generated bad-input corpus (corpus.py), twice, against a real `python -m service` with small limits.

Every case must get its documented status quickly; every 4xx must be a clean problem+json; the server
must stay healthy and its memory must not grow across the two passes. Run with `-s` to see the table.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from blazeface_tools.testkit.corpus import Case, SlowProgress, build_corpus, good_requests
from blazeface_tools.testkit.servers import ServiceProcess, service_process

pytestmark = pytest.mark.slow

MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_PIXELS = 20_000_000
MAX_BATCH_IMAGES = 8
# Generous: the slowest valid case (a 20 MP all-zero PNG) took 0.4 s on the 2-core dev machine; a
# trickled body is timed from the moment it passed the limit (measured 1.25-1.5 s: the answer comes at
# once, and a client that keeps sending reads it when the server closes, after its 1 s linger).
ANSWER_WITHIN_S = 5.0
# RSS of the server process (VmRSS): measured 147.6 MB after warm-up, 154.1 after pass 1, 154.0 after
# pass 2 (+6.5 MB, all of it in pass 1: allocator pools reaching their working size). The bound leaves
# ample room for allocator noise on other machines and would still catch a leak of one decoded 20 MP
# image (60 MB) per pass; pass 1 → pass 2 growth, with the working set already warm, is what a leak
# looks like.
RSS_GROWTH_BOUND_MB = 150
RSS_PASS_TO_PASS_BOUND_MB = 50
PROBLEM = "application/problem+json"
FORBIDDEN_IN_DETAIL = ("Traceback", 'File "', ".py", "/work", "/usr/", "site-packages", "0x7f")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class Outcome:
    case: Case
    run: int
    status: int | None  # None: no HTTP answer at all (connection error or client timeout)
    elapsed_s: float  # from the request's start, or from passing the body limit for trickled bodies
    problems: list[str]  # what is wrong with the answer besides its status


def check_answer(case: Case, response: httpx.Response) -> list[str]:
    """Format problems of one answer: problem+json shape for 4xx, JSON results for 200."""
    found: list[str] = []
    kind = response.headers.get("content-type", "")
    if 400 <= response.status_code < 500:
        if kind != PROBLEM:
            return [f"content-type {kind!r}"]
        body = response.json()
        # The app's answers name the request (its header too); the HTTP protocol's own refusals, for a
        # request the app never saw, do not.
        request_id = response.headers.get("x-request-id")
        if set(body) != {"type", "title", "status", "detail"} | ({"request_id"} if request_id else set()):
            found.append(f"keys {sorted(body)}")
        if body.get("request_id", request_id) != request_id:
            found.append("request_id differs from X-Request-ID")
        if body.get("status") != response.status_code:
            found.append(f"body status {body.get('status')}")
        detail = body.get("detail")
        if not isinstance(detail, str) or not detail.strip():
            found.append("empty detail")
        else:
            if len(detail) > 500:
                found.append(f"detail of {len(detail)} chars echoes input")
            found += [f"detail contains {word!r}" for word in FORBIDDEN_IN_DETAIL if word in detail]
        if response.status_code == 429 and "retry-after" not in response.headers:
            found.append("429 without Retry-After")
    elif response.status_code == 200:
        if kind != "application/json":
            return [f"content-type {kind!r}"]
        body = response.json()
        expected_key = "results" if case.path == "/detect/batch" else "faces"
        if expected_key not in body:
            found.append(f"200 without {expected_key!r}")
    return found


def send(client: httpx.Client, url: str, case: Case, run: int) -> Outcome:
    progress = SlowProgress()
    started = time.monotonic()
    try:
        response = client.request("POST", url + case.url_path, **case.httpx_kwargs(progress))
    except httpx.HTTPError as exc:
        return Outcome(case, run, None, time.monotonic() - started, [f"no answer: {exc!r}"])
    finished = time.monotonic()
    elapsed = finished - (progress.limit_passed_at or started)
    return Outcome(case, run, response.status_code, elapsed, check_answer(case, response))


@dataclass
class CorpusRun:
    outcomes: list[Outcome]
    health_failures: list[str]
    rss_mb: dict[str, float]
    log: str


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory, built_models: None) -> Iterator[CorpusRun]:
    cases = build_corpus(
        max_body_bytes=MAX_BODY_BYTES, max_pixels=MAX_PIXELS, max_batch_images=MAX_BATCH_IMAGES
    )
    env = {
        "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "MAX_PIXELS": str(MAX_PIXELS),
        "MAX_BATCH_IMAGES": str(MAX_BATCH_IMAGES),
        "WORKERS": "1",
    }
    with (
        service_process(tmp_path_factory.mktemp("corpus"), **env) as server,
        httpx.Client(timeout=30) as client,
    ):
        outcomes, health = [], []
        # Warm-up: both models, the batch path, a big decode; the RSS bound is measured from here.
        for case in good_requests():
            assert send(client, server.url, case, 0).status == 200, case.name
        rss = {"after warm-up": rss_mb(server.process.pid)}
        for run in (1, 2):
            group = None
            for case in cases:
                if case.group != group:
                    health += health_check(client, server, f"run {run} before group {case.group}")
                    group = case.group
                outcomes.append(send(client, server.url, case, run))
                if server.process.poll() is not None:
                    pytest.fail(f"server exited after {case.name!r}:\n{server.log()[-3000:]}")
            health += health_check(client, server, f"run {run} end")
            rss[f"after pass {run}"] = rss_mb(server.process.pid)
        for case in good_requests()[:2]:  # still serving real work after all of that
            if send(client, server.url, case, 3).status != 200:
                health.append(f"good request {case.name!r} failed after the corpus")
        yield CorpusRun(outcomes, health, rss, server.log())
    print_table(outcomes, rss)


def health_check(client: httpx.Client, server: ServiceProcess, when: str) -> list[str]:
    failures = []
    for path in ("/healthz", "/readyz"):
        try:
            status = client.get(server.url + path, timeout=5).status_code
        except httpx.HTTPError as exc:
            failures.append(f"{when}: {path} {exc!r}")
            continue
        if status != 200:
            failures.append(f"{when}: {path} {status}")
    return failures


def print_table(outcomes: list[Outcome], rss: dict[str, float]) -> None:
    first = [o for o in outcomes if o.run == 1]
    second = {o.case.name: o for o in outcomes if o.run == 2}
    width = max(len(o.case.name) for o in first)
    print(f"\n{'case':<{width}}  group         expect  pass1  pass2  max_s")
    for outcome in first:
        again = second[outcome.case.name]
        print(
            f"{outcome.case.name:<{width}}  {outcome.case.group:<12}  {outcome.case.expect:>6}  "
            f"{outcome.status!s:>5}  {again.status!s:>5}  {max(outcome.elapsed_s, again.elapsed_s):5.2f}"
        )
    statuses = Counter(o.status for o in outcomes)
    print(f"{len(first)} cases × 2 passes; statuses: {dict(sorted(statuses.items(), key=str))}")
    print("RSS MB: " + ", ".join(f"{key} {value:.1f}" for key, value in rss.items()))


def test_every_case_gets_its_documented_status(corpus_run: CorpusRun) -> None:
    wrong = [
        f"pass {o.run} {o.case.name!r}: expected {o.case.expect}, got {o.status}"
        for o in corpus_run.outcomes
        if o.status != o.case.expect
    ]
    assert not wrong, "\n".join(wrong)


def test_no_5xx_and_no_internal_errors_logged(corpus_run: CorpusRun) -> None:
    errors = [o.case.name for o in corpus_run.outcomes if o.status is None or o.status >= 500]
    assert not errors, errors
    assert "Traceback" not in corpus_run.log and "unhandled error" not in corpus_run.log, corpus_run.log[
        -3000:
    ]


def test_every_answer_is_well_formed(corpus_run: CorpusRun) -> None:
    bad = [f"pass {o.run} {o.case.name!r}: {o.problems}" for o in corpus_run.outcomes if o.problems]
    assert not bad, "\n".join(bad)


def test_every_case_is_answered_promptly(corpus_run: CorpusRun) -> None:
    slow = [
        f"pass {o.run} {o.case.name!r}: {o.elapsed_s:.2f} s"
        for o in corpus_run.outcomes
        if o.elapsed_s > ANSWER_WITHIN_S
    ]
    assert not slow, "\n".join(slow)


def test_server_stays_healthy(corpus_run: CorpusRun) -> None:
    assert not corpus_run.health_failures, corpus_run.health_failures


def test_memory_does_not_grow(corpus_run: CorpusRun) -> None:
    rss = corpus_run.rss_mb
    assert rss["after pass 2"] - rss["after warm-up"] < RSS_GROWTH_BOUND_MB, rss
    assert rss["after pass 2"] - rss["after pass 1"] < RSS_PASS_TO_PASS_BOUND_MB, rss
