"""Reading a Ladle `/metrics` page in tests: parsed by prometheus-client's own parser."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families


def scrape(base_url: str) -> dict[str, list]:
    """Samples of every family on `base_url`/metrics, by sample name (e.g. `x_total`, `x_bucket`)."""
    response = requests.get(f"{base_url}/metrics", timeout=30)
    response.raise_for_status()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels` (0 when none)."""
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))
