"""Prometheus metrics of one app: requests by route, method and status, latency, images classified.

Each app has its own ``CollectorRegistry`` (two apps in one process, as in tests, count apart). With
``--workers N`` the server runs prometheus-client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is a private
directory made for that server run, every worker writes its samples there, and ``/metrics`` answered by any
worker adds up all of them. One worker keeps its samples in memory.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # others are counted as OTHER
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The service's metrics, registered in a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("ignite_lenet_http_requests", "HTTP requests answered, by route template, method and "
                                "status (route 'unmatched' for paths that match none)", ("route", "method", "status"),
                                registry=self.registry)
        self.latency = Histogram("ignite_lenet_http_request_duration_seconds", "Time from a request's start to the "
                                 "end of its response, by route template", ("route",), buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.images = Counter("ignite_lenet_images_classified", "Images given a label", registry=self.registry)
        self.image_errors = Counter("ignite_lenet_image_errors", "Images refused, by status (400 unreadable, 413 too "
                                    "large, 422 no digit found)", ("status",), registry=self.registry)
        self.abandoned = Counter("ignite_lenet_images_abandoned", "Images of accepted requests never decoded, by "
                                 "reason (client_gone: the client hung up; shutdown: answered 503 at shutdown)",
                                 ("reason",), registry=self.registry)
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        key = (route, method if method in METHODS else "OTHER", status)
        children = self._children.get(key)
        if children is None:  # .labels() takes a lock and builds a key: done once per combination
            children = self._children[key] = (self.requests.labels(key[0], key[1], str(status)),
                                               self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format: this process's samples, or every worker's in multiprocess mode."""
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
