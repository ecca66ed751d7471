"""Reading a server's ``/metrics`` with prometheus-client's own parser of the text exposition."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape(url: str) -> list[Sample]:
    """Every sample a server's ``/metrics`` exposes right now (``url`` is the server's base URL)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return parse(response.read().decode())


def parse(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def metric_sum(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` (e.g. ``pushserver_subscriptions``) that carry ``labels``."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def metric(url: str, name: str, **labels: str) -> float:
    """``metric_sum`` of one fresh scrape of the server at ``url``."""
    return metric_sum(scrape(url), name, **labels)
