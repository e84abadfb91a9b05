"""The services' own Prometheus histograms, scraped before and after a bench phase.

Only reads what the services export; when a service has no metrics endpoint (or not these
metrics), the means are simply missing.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Mapping

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape(port: int) -> dict[str, float]:
    """`name{labels}` -> value of every sample at http://127.0.0.1:port/metrics; {} if none."""
    try:
        with _NO_PROXY.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    samples = {}
    for line in text.splitlines():
        if (match := _SAMPLE.match(line)) is not None:
            try:
                samples[match[1] + (match[2] or "")] = float(match[3])
            except ValueError:
                continue
    return samples


def histogram_means_ms(
    before: Mapping[str, float], after: Mapping[str, float], histogram: str, label: str
) -> dict[str, float]:
    """Mean in ms of each `label` value's observations of `histogram` between two scrapes."""
    means = {}
    pattern = re.compile(rf'^{re.escape(histogram)}_sum\{{.*{re.escape(label)}="([^"]*)"')
    for key, total in after.items():
        if (match := pattern.match(key)) is None:
            continue
        count_key = key.replace(f"{histogram}_sum", f"{histogram}_count", 1)
        count = after.get(count_key, 0.0) - before.get(count_key, 0.0)
        if count > 0:
            means[match[1]] = 1000 * (total - before.get(key, 0.0)) / count
    return means


def histogram_mean_ms(
    before: Mapping[str, float], after: Mapping[str, float], histogram: str
) -> float | None:
    """Mean in ms of all observations of an unlabelled (or summed) histogram."""
    sums = [k for k in after if k.startswith(f"{histogram}_sum")]
    total = sum(after[k] - before.get(k, 0.0) for k in sums)
    counts = [k.replace("_sum", "_count", 1) for k in sums]
    count = sum(after.get(k, 0.0) - before.get(k, 0.0) for k in counts)
    return 1000 * total / count if count > 0 else None
