"""Reading a server's /metrics, as Prometheus would, into plain numbers."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

JITNET = "jitnet.v1.NetworkService"


class Scrape:
    """One read of /metrics: value(name, **labels) sums the samples whose labels include those."""

    def __init__(self, port: int):
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        self.text = text.decode()
        self.samples = [(s.name, s.labels, s.value)
                        for family in text_string_to_metric_families(self.text)
                        for s in family.samples]

    def value(self, name: str, **labels) -> float:
        return sum(v for n, ls, v in self.samples
                   if n == name and all(ls.get(k) == str(w) for k, w in labels.items()))

    def labels(self, name: str, key: str) -> set[str]:
        return {ls[key] for n, ls, _ in self.samples if n == name and key in ls}

    def handled(self, method: str, service: str = JITNET) -> dict[str, float]:
        """grpc_code -> count of one method, the codes seen at least once."""
        return {ls["grpc_code"]: v for n, ls, v in self.samples
                if n == "grpc_server_handled_total" and ls["grpc_method"] == method
                and ls["grpc_service"] == service and v}
