"""The SearchService's metrics: its Solves (in flight, latency by outcome, refusals by reason) and the depth of the
search queues, read from the broker at scrape time. KEDA scales the workers on the queue depth
(docs/operations.md, "Backpressure and the search metrics")."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.search.queue_depth import QueueDepth

SOLVES_IN_FLIGHT = Gauge("thinkmesh_search_solves_in_flight", "Solve searches this SearchService follows now")
SOLVE_SECONDS = Histogram(
    "thinkmesh_search_solve_seconds",
    "Solve latency, by outcome: ok (the worker's result), late (the deadline came first: the best so far, or "
    "DEADLINE_EXCEEDED), failed, refused (never queued), cancelled (the caller went away)",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
)
SOLVE_REFUSALS = Counter(
    "thinkmesh_search_solve_refusals",
    "Solves refused before anything was queued, by reason: invalid_input, too_many_solves (max_concurrent_solves), "
    "queue_full (max_solve_queue), no_time (the deadline leaves none)",
    ["reason"],
)
QUEUE_DEPTH_NAME = "thinkmesh_search_queue_depth"

OK, LATE, FAILED, REFUSED, CANCELLED = "ok", "late", "failed", "refused", "cancelled"
INVALID_INPUT, TOO_MANY_SOLVES, QUEUE_FULL, NO_TIME = "invalid_input", "too_many_solves", "queue_full", "no_time"


class QueueDepthCollector(Collector):
    """`thinkmesh_search_queue_depth{queue}`: tasks waiting in each queue, read (through the depth reader's cache)
    when Prometheus scrapes. A queue whose depth is unknown (the broker does not answer) has no sample."""

    def __init__(self, depth: QueueDepth, queues: Sequence[str]) -> None:
        self._depth = depth
        self._queues = tuple(queues)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(QUEUE_DEPTH_NAME, "Tasks waiting in the search queue", labels=["queue"])
        for queue in self._queues:
            value = self._depth.depth(queue)
            if value is not None:
                family.add_metric([queue], value)
        yield family

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(QUEUE_DEPTH_NAME, "Tasks waiting in the search queue", labels=["queue"])]


_exported: dict[int, QueueDepthCollector] = {}  # id(registry) → the collector it holds


def export_queue_depths(
    depth: QueueDepth, queues: Sequence[str], registry: CollectorRegistry = REGISTRY
) -> QueueDepthCollector:
    """Register the queue-depth gauge with `registry`, in place of one registered before (a service started
    again in the same process)."""
    previous = _exported.pop(id(registry), None)
    if previous is not None:
        registry.unregister(previous)
    collector = QueueDepthCollector(depth, queues)
    registry.register(collector)
    _exported[id(registry)] = collector
    return collector
