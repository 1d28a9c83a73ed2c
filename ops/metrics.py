"""`GET /metrics` in the Prometheus text format; every metric is named `cpx_…`.

Two kinds of metric:

- measured in this process: the request latency histogram, observed by `LatencyMiddleware`. Under
  gunicorn each worker process keeps its own; with `PROMETHEUS_MULTIPROC_DIR` set (the production
  topology sets it) they write to files there and any worker's `/metrics` sums them all.
- read from the database at scrape time: the market's state (book depth, backlog, round timings,
  settlement batches, reconciliation issues, connected agents). The database is the one place every
  web process and every worker agrees on, so these need no cross-process plumbing; each is one
  aggregate query, a fixed number per scrape whatever the size of the market.

Set CPX_METRICS_TOKEN to demand `Authorization: Bearer <token>` (Prometheus' `authorization`
setting); unset, the endpoint is open and belongs on an internal network.
"""

import hmac
import os
import time

from django.conf import settings
from django.db.models import Count, Sum
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REQUEST_LATENCY = Histogram(
    "cpx_http_request_duration_seconds",
    "Time from the request entering Django to its answer leaving, by route template.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


class LatencyMiddleware:
    """Observes every request into `cpx_http_request_duration_seconds`. The label is the URL
    pattern (`api/v1/jobs/<int:pk>`), never the raw path, so ids do not blow up the series;
    a path that matches no pattern is `unmatched`."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.route or match.view_name) if match else "unmatched"
        REQUEST_LATENCY.labels(request.method, route, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response


class _ProcessLocal:
    """This process' own metrics (the default registry), for a single-process server."""

    def collect(self):
        yield from REGISTRY.collect()


class MarketCollector:
    """The market's state, read from the database at each scrape."""

    def collect(self):
        from auctions.models import Lease, Round
        from auctions.selectors.leases import providers_online
        from contracts.models import ReconciliationIssue, SettlementBatch
        from market.models import JobRequest, Resource

        now = timezone.now()

        backlog = GaugeMetricFamily(
            "cpx_backlog_jobs", "Jobs waiting for a round: submitted or queued.", labels=["status"]
        )
        counts = dict(
            JobRequest.objects.filter(status__in=(JobRequest.Status.SUBMITTED, JobRequest.Status.QUEUED))
            .order_by()
            .values_list("status")
            .annotate(n=Count("id"))
        )
        for status in (JobRequest.Status.SUBMITTED, JobRequest.Status.QUEUED):
            backlog.add_metric([status], counts.get(status, 0))
        yield backlog

        depth = GaugeMetricFamily(
            "cpx_book_depth",
            "The next round's book per device class: bid = queued jobs, ask = listed devices of online "
            "providers.",
            labels=["side", "device_class"],
        )
        bids = (
            JobRequest.objects.filter(status=JobRequest.Status.QUEUED)
            .order_by()
            .values_list("device_class")
            .annotate(n=Count("id"))
        )
        for device_class, n in bids:
            depth.add_metric(["bid", device_class], n)
        online = providers_online(now=now).values("id")
        asks = (
            Resource.objects.filter(status=Resource.Status.LISTED, provider__in=online)
            .order_by()
            .values_list("device_class")
            .annotate(n=Sum("device_count"))
        )
        for device_class, n in asks:
            depth.add_metric(["ask", device_class], n or 0)
        yield depth

        agents = GaugeMetricFamily(
            "cpx_agents_connected",
            "Active providers whose agent heartbeated within CPX_HEARTBEAT_TIMEOUT_S.",
        )
        agents.add_metric([], providers_online(now=now).count())
        yield agents

        leases = GaugeMetricFamily("cpx_leases_active", "Leases dispatched or running.", labels=["status"])
        lease_counts = dict(
            Lease.objects.filter(status__in=Lease.ACTIVE)
            .order_by()
            .values_list("status")
            .annotate(n=Count("id"))
        )
        for status in Lease.ACTIVE:
            leases.add_metric([status], lease_counts.get(status, 0))
        yield leases

        rounds = GaugeMetricFamily("cpx_rounds", "Rounds by status.", labels=["status"])
        round_counts = dict(Round.objects.order_by().values_list("status").annotate(n=Count("id")))
        for status in Round.Status:
            rounds.add_metric([status], round_counts.get(status, 0))
        yield rounds

        last = (
            Round.objects.filter(status=Round.Status.CLEARED)
            .order_by("-cleared_at", "-id")
            .values("cleared_at", "timings_ms", "jobs_in_book", "jobs_matched")
            .first()
        )
        phase = GaugeMetricFamily(
            "cpx_round_last_phase_seconds",
            "The last cleared round's time per phase (snapshot, clear, write).",
            labels=["phase"],
        )
        age = GaugeMetricFamily("cpx_round_last_cleared_age_seconds", "Seconds since the last round cleared.")
        matched = GaugeMetricFamily(
            "cpx_round_last_jobs", "The last cleared round's jobs in the book and matched.", labels=["kind"]
        )
        if last:
            for name, ms in sorted((last["timings_ms"] or {}).items()):
                phase.add_metric([name], float(ms) / 1000)
            age.add_metric([], max(0.0, (now - last["cleared_at"]).total_seconds()))
            matched.add_metric(["in_book"], last["jobs_in_book"])
            matched.add_metric(["matched"], last["jobs_matched"])
        yield phase
        yield age
        yield matched

        batches = GaugeMetricFamily(
            "cpx_settlement_batches", "Settlement batches by status.", labels=["status"]
        )
        batch_counts = dict(SettlementBatch.objects.order_by().values_list("status").annotate(n=Count("id")))
        for status in SettlementBatch.Status:
            batches.add_metric([status], batch_counts.get(status, 0))
        yield batches
        failed = GaugeMetricFamily(
            "cpx_settlement_batches_failed",
            "Settlement batches the chain refused (FAILED): each needs an operator.",
        )
        failed.add_metric([], batch_counts.get(SettlementBatch.Status.FAILED, 0))
        yield failed

        issues = GaugeMetricFamily(
            "cpx_reconciliation_issues_open", "Reconciliation issues not yet resolved.", labels=["kind"]
        )
        issue_counts = dict(
            ReconciliationIssue.objects.filter(resolved_at__isnull=True)
            .order_by()
            .values_list("kind")
            .annotate(n=Count("id"))
        )
        for kind in ReconciliationIssue.Kind:
            issues.add_metric([kind], issue_counts.get(kind, 0))
        yield issues

        queue = _task_queue_length()
        if queue is not None:
            messages = GaugeMetricFamily(
                "cpx_task_queue_messages",
                "Messages waiting in the Celery queue (Redis broker).",
                labels=["queue"],
            )
            messages.add_metric([settings.CELERY_TASK_DEFAULT_QUEUE], queue)
            yield messages


def _task_queue_length() -> int | None:
    """LLEN of the task queue on a Redis broker; None on another broker or when Redis is down."""
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        return int(client.llen(settings.CELERY_TASK_DEFAULT_QUEUE))
    except redis.RedisError:
        return None


def registry() -> CollectorRegistry:
    """This scrape's registry: the process-local (or all workers', in multiprocess mode) plus the market."""
    scrape = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(scrape)
    else:
        scrape.register(_ProcessLocal())
    scrape.register(MarketCollector())
    return scrape


def metrics_view(request):
    token = getattr(settings, "CPX_METRICS_TOKEN", "")
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponse("metrics need the bearer token\n", status=401, content_type="text/plain")
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
