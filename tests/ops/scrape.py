"""Scraping a ``--listen-metrics`` listener in tests: HTTP GET, the text format parsed with
prometheus_client's own parser."""

from __future__ import annotations

import http.client
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Answer:
    status: int
    body: str


def get(port: int, path: str, timeout: float = 5.0) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return Answer(resp.status, resp.read().decode())
    finally:
        conn.close()


def try_get(port: int, path: str) -> Answer | None:
    try:
        return get(port, path)
    except OSError:
        return None


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``: (name, sorted labels) → value."""
    answer = get(port, "/metrics")
    assert answer.status == 200, answer
    out: Samples = {}
    for family in text_string_to_metric_families(answer.body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}
