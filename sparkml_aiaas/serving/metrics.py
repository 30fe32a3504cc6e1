"""The server's Prometheus metrics (one registry per app, so tests and apps never share)."""

from __future__ import annotations

__all__ = ["Metrics"]


class Metrics:
    """Counters and histograms every protocol (REST v1, REST v2, gRPC) records into."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("sparkml_serving_requests", "HTTP requests",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("sparkml_serving_request_seconds", "request latency",
                                 ["endpoint"], registry=self.registry)
        self.errors = Counter("sparkml_serving_errors", "requests that failed inside the "
                              "server (status 5xx)", ["endpoint"], registry=self.registry)
        self.rate_limited = Counter("sparkml_serving_rate_limited", "requests refused with "
                                    "429 by the per-token rate limit", ["token"],
                                    registry=self.registry)
        self.auth_throttled = Counter("sparkml_serving_auth_throttled", "requests refused "
                                      "unchecked: their address failed authentication too "
                                      "often", registry=self.registry)
        self.predictions = Counter("sparkml_serving_predicted_records", "records scored",
                                   ["model", "version"], registry=self.registry)

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
