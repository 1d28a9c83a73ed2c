"""The books of a round: the bulk snapshot of the market, the routing of jobs to books, the engine
documents, and the fills read back from the engine's results (the model is in services/rounds.py).

Resource classes are those of `auctions.mechanisms.classes` (device class, memory tier, region) and
its `group_book` policy: a single-device job bids in the smallest tier of its own device class and
region that guarantees its memory and has supply. Beyond `group_book`, which sees only memory and
region, a job goes to a heterogeneous book when the class cannot express its constraints (a latency
SLA some device of the class misses, a provider that failed it, a deadline the slowest device
misses), when it is alone in its class, or when its region has no fitting class (`group_book`'s
"unplaced": another region may serve it).
"""

import bisect
import hashlib
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from django.conf import settings

from auctions.mechanisms import classes, latency, quality, throughput
from auctions.mechanisms.canonical import canonical_json
from auctions.mechanisms.posted_price import clearing_price_estimate, posted_gains_bound, unit_gains_bound
from auctions.selectors import rounds as selectors
from auctions.selectors.backup_pool import standby_held_devices
from auctions.services import broker_books, gang_books, tier_books
from auctions.services.elastic_demand import elastic_document, elastic_fills

LOTTERY_MECHANISMS = frozenset({"sbba", "sbba_buyer_lottery"})
MIN_UNIT_BIDS = 2
# Heterogeneous candidate pruning: keep the cheapest providers holding this many times the devices
# the book's jobs need (at least MIN_CANDIDATES providers).
CANDIDATE_MARGIN = 1.5
MIN_CANDIDATES = 16


def class_label(value: str) -> str:
    """A stored device class or region as a label of a class key: '/' (the key's separator) becomes
    '-', an empty value '-'. Input is checked (market.models.providers.REGION_PATTERN), but a key is
    built from whatever the database holds, and one odd row must not stop a round or the pricing."""
    return value.replace("/", "-") or "-"


def class_of(*, device_class: str, memory_gib: float, region: str) -> str:
    """The resource class key of `classes.py` ("GPU/24G/eu-west"), labels through `class_label`."""
    return classes.resource_class_key(class_label(device_class), memory_gib, class_label(region))


@dataclass(frozen=True)
class Snapshot:
    jobs: list
    resources: list
    exclusions: dict  # job id -> provider ids that failed it


@dataclass(frozen=True)
class Fill:
    job: dict
    resource: dict
    devices: int
    resource_class: str
    unit_price_paid: float
    unit_price_received: float
    expected_device_hours: float
    elastic: dict | None = None  # an elastic job's purchase (auctions/services/elastic_demand.py)
    gang: dict | None = None  # a gang member's stage (auctions.services.gang_books)


def snapshot_book(
    *, now: datetime, include_unseen: bool, lock: bool = True, extra_jobs: tuple = ()
) -> Snapshot:
    """The book in three bulk queries: jobs (locked FOR UPDATE unless `lock` is off: a quote only
    reads), exclusions, resources with free devices. `extra_jobs` (job rows not in the database, a
    quote's job) join the end of the queue, so they lose ties as a newly submitted job would."""
    jobs = selectors.round_book_jobs(now=now, lock=lock) + [dict(job) for job in extra_jobs]
    exclusions = defaultdict(set)
    for job_id, provider_id in selectors.round_book_exclusions():
        exclusions[job_id].add(provider_id)
    resources = selectors.round_book_resources(
        now=now,
        heartbeat_timeout_s=getattr(settings, "CPX_HEARTBEAT_TIMEOUT_S", 60),
        include_unseen=include_unseen,
    )
    rule = quality.QualityRule(float(getattr(settings, "CPX_SLA_QUALITY_WEIGHT", 0.0)))
    for job in jobs:
        job["memory"] = float(job["memory_per_device_gib"])
        job["bid"] = float(job["max_price_per_device_hour"])
        job["base_device_hours"] = throughput.base_device_hours(**_workload(job))
        job["hours_left"] = (job["deadline"] - now).total_seconds() / 3600
    # Devices held in standby for running jobs (auctions.services.backup_pool) are not for sale.
    held = standby_held_devices()
    resources = [r for r in resources if r["device_count"] - r["busy"] - held.get(r["id"], 0) > 0]
    for resource in resources:
        resource["free"] = resource["device_count"] - resource["busy"] - held.get(resource["id"], 0)
        resource["memory"] = float(resource["memory_per_device_gib"])
        resource["ask"] = float(resource["ask_per_device_hour"])
        _quality_adjust(resource, rule)
        resource["speed"] = float(resource["speed_factor"])
        tflops = float(resource["fp16_tflops"])
        resource["tflops"] = tflops if tflops > 0 else throughput.REFERENCE_FP16_TFLOPS * resource["speed"]
        resource["region"] = resource["provider__region"]
        resource["tier"] = resource.get("provider__tier", "EDGE")
        resource["class"] = class_of(
            device_class=resource["device_class"], memory_gib=resource["memory"], region=resource["region"]
        )
    return Snapshot(jobs=jobs, resources=resources, exclusions=dict(exclusions))


def _quality_adjust(resource: dict, rule: "quality.QualityRule") -> None:
    """Reputation feeds clearing (issue 12): the book clears on ask × f, f = 1 + w(1 − reputation),
    and the provider is paid the clearing price / f (auctions.mechanisms.quality states the model
    and what truthfulness survives). f and the reported ask go in the book documents (`quality`)."""
    reputation = resource.get("provider__reputation")
    factor = 1.0 if reputation is None else quality.quality_factor(float(reputation), rule)
    resource["quality_factor"] = factor
    resource["reported_ask"] = resource["ask"]
    resource["ask"] = quality.adjusted_ask(resource["ask"], factor)


def _received(resource: dict, price: float) -> float:
    return quality.receipt(price, resource.get("quality_factor", 1.0))


def _workload(job: dict) -> dict:
    hours = job["workload_device_hours"]
    return {
        "kind": job["kind"],
        "params_billion": float(job["params_billion"]),
        "workload_tokens": job["workload_tokens"],
        "workload_device_hours": None if hours is None else float(hours),
    }


def device_hours_on(job: dict, resource: dict) -> float:
    """Device-hours the job needs on this resource (throughput model)."""
    return throughput.job_device_hours(
        **_workload(job), fp16_tflops=resource["tflops"], speed_factor=resource["speed"]
    )


def _reference_estimate(bids: list[float], asks: list[dict]) -> float | None:
    """The market-clearing price per reference device-hour of bids (per reference device-hour)
    against asks {price per device-hour, quantity, speed} (ask / speed per reference device-hour);
    None when a side is empty."""
    if not asks:
        return None
    return clearing_price_estimate(bids, [(a["price"] / a["speed"], a["quantity"]) for a in asks])


def _reason(code: str, message: str, **figures) -> dict:
    return {"code": code, "message": message, **figures}


def posted_prices() -> dict[str, float]:
    """Each class's posted price (per reference device-hour) for the next round, from data fixed
    before it: the newest market-clearing estimate the class got in the last
    CPX_PRICING_RECENT_ROUNDS cleared rounds (`Round.prices[class]["estimate"]`). Nothing here reads
    the book the price will clear. (BookBuilder gives a class with no estimate the median estimate of
    its device class's classes, still from earlier rounds.)"""
    prices: dict[str, float] = {}
    for round_obj in selectors.round_recent_cleared(limit=settings.CPX_PRICING_RECENT_ROUNDS):
        for key, entry in (round_obj.prices or {}).items():
            if key not in prices and entry.get("estimate") is not None:
                prices[key] = float(entry["estimate"])
    return dict(sorted(prices.items()))


@dataclass
class _Book:
    kind: str
    doc: dict
    text: str
    digest: str
    meta: dict
    jobs: dict = field(default_factory=dict)  # engine id -> job
    resources: dict = field(default_factory=dict)  # engine id -> resource


class BookBuilder:
    """Routes a snapshot's jobs to books and clears them in order (heterogeneous parts, then classes)."""

    def __init__(self, *, snapshot: Snapshot, config: dict, now: datetime):
        self.jobs = snapshot.jobs
        self.resources = snapshot.resources
        self.exclusions = snapshot.exclusions
        self.config = config
        self.now = now
        self.books: list[_Book] = []
        self.free = {r["id"]: r["free"] for r in self.resources}
        self.classes: dict[str, list] = defaultdict(list)
        tiers: dict[tuple, set] = defaultdict(set)
        for resource in self.resources:
            self.classes[resource["class"]].append(resource)
            tiers[(resource["device_class"], resource["region"])].add(classes.memory_tier(resource["memory"]))
        self.tiers = {key: sorted(values) for key, values in tiers.items()}
        self._rtt_cache: dict = {}
        self._slowest_cache: dict = {}
        self.unit_jobs: dict[str, list] = defaultdict(list)
        self.hetero_jobs: list = []
        self.posted_jobs: list = []  # single-device jobs of the posted-price book (rule "depth")
        # Elastic jobs (docs/eetorp.md) buy last, at the devices' own asks: no routing of their own.
        self.elastic_jobs = [job for job in self.jobs if job.get("elastic")]
        self.fixed_jobs = [job for job in self.jobs if not job.get("elastic")]
        self.rule = config.get("rule", "per_class")
        self.prices = self._class_prices(config.get("posted_prices") or {})
        # Gang jobs clear in their own book, all or nothing, before every other (gang_books.py).
        self.gang_jobs = [job for job in self.jobs if job.get("gang")]
        # Latency-bound jobs with both edge and cloud supply clear in tiered books (tier_books.py).
        self.tier_jobs = [
            job for job in tier_books.tier_route(self) if not job.get("gang") and not job.get("elastic")
        ]
        tiered = {job["id"] for job in self.tier_jobs}
        self.routable = [job for job in self.fixed_jobs if job["id"] not in tiered and not job.get("gang")]
        self.broker_jobs = broker_books.take_brokered_jobs(self)  # the `brokers` book (docs/mecm.md)
        if self.rule == "depth":
            self._route_by_depth()
            return
        for job in self.routable:
            key = self._unit_class(job)
            if key is not None:
                self.unit_jobs[key].append(job)
            else:
                self.hetero_jobs.append(job)
        # A double auction needs a second bid to price the first (McAfee and trade reduction drop the
        # only trade of a one-bid class); a lone bid clears in a heterogeneous book at its critical
        # value instead. The rule counts bids, never reads them, so no bid can steer its own route.
        thin = [key for key, jobs in self.unit_jobs.items() if len(jobs) < MIN_UNIT_BIDS]
        if thin:
            for key in thin:
                self.hetero_jobs.extend(self.unit_jobs.pop(key))
            position = {job["id"]: i for i, job in enumerate(self.jobs)}
            self.hetero_jobs.sort(key=lambda job: position[job["id"]])

    def _class_prices(self, posted: dict) -> dict:
        """Posted prices for every class of the snapshot: its own estimate from earlier rounds, else the
        median of the estimates of its device class's classes (earlier rounds too, so no trader of
        this round sets it); a device class with no estimate at all has no price this round."""
        prices = dict(posted)
        by_device: dict[str, list] = defaultdict(list)
        for key, price in posted.items():
            by_device[key.split("/", 1)[0]].append(price)
        for key in sorted(self.classes):
            device = key.split("/", 1)[0]
            if key not in prices and by_device.get(device):
                prices[key] = statistics.median(by_device[device])
        return prices

    def _route_by_depth(self) -> None:
        """Rule "depth": a class is thick when at least `thick_min_orders` single-device jobs bid in it
        and it has at least as many free devices; thick classes clear by the unit double auction (it
        loses at most one of k >= thick_min_orders efficient trades), every other single-device job
        goes to the one posted-price book over the thin classes' devices, where it may take any device
        that fits it. Multi-device jobs (and jobs above the last memory tier) stay heterogeneous.
        Thickness counts orders and devices, never reads a price, so no report steers a route."""
        minimum = self.config["thick_min_orders"]
        candidates: dict[str, list] = defaultdict(list)
        for job in self.routable:
            if job["device_count"] != 1 or classes.required_tier(job["memory"]) is None:
                self.hetero_jobs.append(job)
                continue
            key = self._unit_class(job)
            if key is None:
                self.posted_jobs.append(job)
            else:
                candidates[key].append(job)
        for key, jobs in candidates.items():
            units = sum(r["free"] for r in self.classes[key])
            if len(jobs) >= minimum and units >= minimum:
                self.unit_jobs[key] = jobs
            else:
                self.posted_jobs.extend(jobs)
        # A class with no price yet (no earlier round saw it, no quote) cannot post one: its jobs clear
        # as under "per_class" this once (a double auction from two bids, else the heterogeneous book),
        # and the round records the class's estimate, so the next round posts it. A job with no home
        # class goes to the posted-price book when some class of its device class has a price.
        # A job whose home class is thick but cannot bid in it (a latency SLA, a deadline or a failed
        # provider the class cannot express) goes to the heterogeneous book as under "per_class": the
        # posted-price book only offers thin classes' devices.
        prices = self.prices
        thin_priced = {
            key.split("/", 1)[0] for key in self.classes if key in prices and key not in self.unit_jobs
        }
        posted, fallback = [], defaultdict(list)
        for job in self.posted_jobs:
            home = self._home_class(job)
            if home in self.unit_jobs:
                self.hetero_jobs.append(job)
            elif home in prices or (home is None and job["device_class"].replace("/", "-") in thin_priced):
                posted.append(job)
            elif (key := self._unit_class(job)) is not None:
                fallback[key].append(job)
            else:
                self.hetero_jobs.append(job)
        for key, jobs in fallback.items():
            if len(jobs) >= MIN_UNIT_BIDS:
                self.unit_jobs[key] = jobs
            else:
                self.hetero_jobs.extend(jobs)
        position = {job["id"]: i for i, job in enumerate(self.jobs)}
        self.posted_jobs = sorted(posted, key=lambda job: position[job["id"]])
        self.hetero_jobs.sort(key=lambda job: position[job["id"]])

    # --- routing

    def _unit_class(self, job: dict) -> str | None:
        """The class a single-device job bids in, or None when only a heterogeneous book can place it."""
        key = self._home_class(job)
        if key is None:
            return None
        members = self.classes[key]
        excluded = self.exclusions.get(job["id"])
        if excluded and any(r["provider_id"] in excluded for r in members):
            return None
        if (
            job["latency_sla_ms"] is not None
            and not self._worst_rtt(key, job["region"]) <= job["latency_sla_ms"]
        ):
            return None  # some device of the class is too far (NaN, an unknown place, fails too)
        if device_hours_on(job, self._slowest(key)) > job["hours_left"]:
            return None  # the slowest device of the class would miss the deadline
        return key

    def _home_class(self, job: dict) -> str | None:
        """The smallest memory tier of the job's device class and region that fits it and has supply."""
        if job["device_count"] != 1:
            return None
        needed = classes.required_tier(job["memory"])
        tiers = self.tiers.get((job["device_class"], job["region"]), [])
        index = bisect.bisect_left(tiers, needed) if needed is not None else len(tiers)
        if index == len(tiers):
            return None
        return class_of(device_class=job["device_class"], memory_gib=tiers[index], region=job["region"])

    def _worst_rtt(self, key: str, consumer_region: str) -> float:
        cache_key = (key, consumer_region)
        if cache_key not in self._rtt_cache:
            rtts = [self._rtt(consumer_region, r) for r in self.classes[key]]
            self._rtt_cache[cache_key] = math.nan if any(map(math.isnan, rtts)) else max(rtts)
        return self._rtt_cache[cache_key]

    def _slowest(self, key: str) -> dict:
        """A device as slow as the slowest of the class on both measures (hours fall with each)."""
        if key not in self._slowest_cache:
            members = self.classes[key]
            self._slowest_cache[key] = {
                "tflops": min(r["tflops"] for r in members),
                "speed": min(r["speed"] for r in members),
            }
        return self._slowest_cache[key]

    def _rtt(self, consumer_region: str, resource: dict) -> float:
        key = (consumer_region, resource["id"])
        if key not in self._rtt_cache:
            rtt = latency.estimate_rtt_ms(
                consumer_region=consumer_region,
                provider_region=resource["region"],
                provider_lat=resource["provider__latitude"],
                provider_lon=resource["provider__longitude"],
            )
            self._rtt_cache[key] = math.nan if rtt is None else rtt
        return self._rtt_cache[key]

    def _hetero_parts(self, hetero_jobs: list) -> list[tuple[np.ndarray, list]]:
        """Heterogeneous jobs grouped by the exact set of resources each may use, most constrained first."""
        if not hetero_jobs or not self.resources:
            return []
        device_class = np.array([r["device_class"] for r in self.resources], dtype=object)
        memory = np.array([r["memory"] for r in self.resources])
        free = np.array([r["free"] for r in self.resources])
        provider = np.array([r["provider_id"] for r in self.resources])
        resource_region = np.array([r["region"] for r in self.resources], dtype=object)
        rtt_by_region: dict[str, np.ndarray] = {}
        parts: dict[bytes, list] = {}
        masks: dict[bytes, np.ndarray] = {}
        for job in hetero_jobs:
            mask = (device_class == job["device_class"]) & (memory >= job["memory"] - 1e-9)
            mask &= free >= job["device_count"]
            if job.get("placement") == "strict" and job["latency_sla_ms"] is None:
                # A strict job without a latency SLA runs in its own region; with one, its SLA is its
                # placement (within latency_sla_ms of its region, market.services.placement).
                mask &= resource_region == job["region"]
            if job["latency_sla_ms"] is not None:
                region = job["region"]
                if region not in rtt_by_region:
                    rtt_by_region[region] = np.array([self._rtt(region, r) for r in self.resources])
                with np.errstate(invalid="ignore"):
                    mask &= rtt_by_region[region] <= job["latency_sla_ms"]
            excluded = self.exclusions.get(job["id"])
            if excluded:
                mask &= ~np.isin(provider, list(excluded))
            if not mask.any():
                continue
            key = mask.tobytes()
            parts.setdefault(key, []).append(job)
            masks[key] = mask
        order = sorted(parts, key=lambda key: (int(masks[key].sum()), parts[key][0]["id"]))
        return [(masks[key], parts[key]) for key in order]

    # --- documents and clearing

    def run(self, *, clear_document) -> list:
        """Build and clear every book in order; returns the engine results (aligned with the snapshot)."""
        results: list = []
        gang = gang_books.gang_book_document(self)
        if gang is not None:
            book = self._add(gang_books.KIND, *gang, {"kind": gang_books.KIND})
            result = clear_document(book.doc, book.digest)
            for members in result["assignments"].values():
                for member in members:
                    self.free[book.resources[member["provider"]]["id"]] -= member["devices"]
            results.append(result)
        brokered = broker_books.broker_book_document(self, self.broker_jobs, device_hours_on)
        if brokered is not None:
            book = self._add(broker_books.KIND, *brokered, {"kind": broker_books.KIND})
            result = clear_document(book.doc, book.digest)
            for job_id, resource_id in result["assignments"].items():
                self.free[book.resources[resource_id]["id"]] -= book.jobs[job_id]["device_count"]
            results.append(result)
        self._clear_hetero(self._hetero_parts(self.hetero_jobs), clear_document, results)
        unmatched: list = []
        for doc, jobs, resources, meta in tier_books.tier_books(self, self.tier_jobs):
            book = self._add("tiered", doc, jobs, resources, meta)
            result = clear_document(book.doc, book.digest)
            for resource_id in result["assignments"].values():
                self.free[book.resources[resource_id]["id"]] -= 1
            book.meta["tiers"] = tier_books.tier_summary(book.doc, result)
            results.append(result)
            unmatched.extend(tier_books.tier_unmatched(book.jobs, result))
        if unmatched and self.rule == "depth":  # the fall-through (tier_books.tier_unmatched)
            hetero_jobs = self._fall_through(unmatched)
            self._clear_hetero(self._hetero_parts(hetero_jobs), clear_document, results)
        unit = self.config["unit"]
        for key in sorted(self.unit_jobs):
            jobs = self.unit_jobs[key]
            asks = [r for r in self.classes[key] if self.free[r["id"]] > 0]
            if not asks:
                continue
            doc = {
                "mechanism": unit["mechanism"],
                "bids": {
                    "id": [f"j{job['id']}" for job in jobs],
                    "price": [job["bid"] for job in jobs],
                    "quantity": [1] * len(jobs),
                },
                "asks": {
                    "id": [f"r{r['id']}" for r in asks],
                    "price": [r["ask"] for r in asks],
                    "quantity": [self.free[r["id"]] for r in asks],
                },
            }
            if unit["mechanism"] in LOTTERY_MECHANISMS:
                doc["seed"] = unit["seed"]
            book = self._add("unit", doc, jobs, asks, {"kind": "unit", "resource_class": key})
            results.append(clear_document(book.doc, book.digest))
        book = self._posted_book()
        if book is not None:
            results.append(clear_document(book.doc, book.digest))
        # Last, elastic jobs (docs/eetorp.md): each takes a device left at that device's ask, then buys
        # its best response at that price.
        book = self._elastic_posted_book(self.fills(results)) if self.elastic_jobs else None
        if book is not None:
            results.append(clear_document(book.doc, book.digest))
            fills = self.fills(results)
            doc = elastic_document(fills)
            if doc is not None:
                jobs = [fill.job for fill in fills if fill.job.get("elastic")]
                book = self._add("elastic", doc, jobs, [], {"kind": "elastic"})
                results.append(clear_document(book.doc, book.digest))
        return results

    def _clear_hetero(self, parts: list, clear_document, results: list) -> None:
        """Clear heterogeneous books, one per part, in order, taking their devices off `free`."""
        hetero = self.config["heterogeneous"]
        for mask, jobs in parts:
            providers = self._candidates(
                [
                    r
                    for r, allowed in zip(self.resources, mask, strict=True)
                    if allowed and self.free[r["id"]]
                ],
                jobs,
            )
            if not providers:
                continue
            book = self._add(
                "heterogeneous",
                {
                    "mechanism": hetero["mechanism"],
                    "payment_rule": hetero["payment_rule"],
                    "time_limit_s": hetero["time_limit_s"],
                    "jobs": [self._hetero_job(job) for job in jobs],
                    "providers": [self._hetero_provider(r) for r in providers],
                },
                jobs,
                providers,
                {"kind": "heterogeneous", "device_class": jobs[0]["device_class"]},
            )
            result = clear_document(book.doc, book.digest)
            for job_id, resource_id in result["assignments"].items():
                self.free[book.resources[resource_id]["id"]] -= book.jobs[job_id]["device_count"]
            results.append(result)

    def _fall_through(self, jobs: list) -> list:
        """Route the jobs the tiered books left as rule "depth" routes any job (tier_books docstring,
        "Fall-through"): a thick class it can bid in takes it into its unit book; a job whose home class
        is thick but cannot hold it, or with no priced class, goes to a heterogeneous book (returned);
        any other joins the posted-price book. Thickness was fixed before: a fall-through job never
        makes or unmakes a thick class."""
        thin_priced = {
            key.split("/", 1)[0] for key in self.classes if key in self.prices and key not in self.unit_jobs
        }
        hetero, posted = [], []
        for job in jobs:
            key, home = self._unit_class(job), self._home_class(job)
            if key is not None and key in self.unit_jobs:
                self.unit_jobs[key].append(job)
            elif home in self.unit_jobs:
                hetero.append(job)
            elif home in self.prices or (
                home is None and job["device_class"].replace("/", "-") in thin_priced
            ):
                posted.append(job)
            else:
                hetero.append(job)
        position = {job["id"]: i for i, job in enumerate(self.jobs)}
        self.posted_jobs = sorted(self.posted_jobs + posted, key=lambda job: position[job["id"]])
        return hetero

    def _elastic_posted_book(self, fills: list) -> "_Book | None":
        """Elastic jobs on the devices the books above left, each device at its own ask per reference
        device-hour (ask / speed): the leaders' posted prices of EETORP. The posted-price rule with one
        price per device, so a job takes the cheapest fitting device whose price is below its choke
        price (its bid), rationed by the public hash (truthful: no report moves a price)."""
        if not self.elastic_jobs:
            return None
        left = {r["id"]: r["free"] for r in self.resources}
        for fill in fills:
            left[fill.resource["id"]] -= fill.devices
        asks = [r for r in self.resources if left[r["id"]] > 0]
        if not asks:
            return None
        accepts = self._accepts(self.elastic_jobs, asks)
        doc = {
            "mechanism": "posted_price",
            "salt": self.config.get("salt", "elastic"),
            "prices": {f"r{r['id']}": r["ask"] / r["speed"] for r in asks},
            "bids": [
                {"id": f"j{job['id']}", "price": job["bid"], "accepts": names}
                for job, names in zip(self.elastic_jobs, accepts, strict=True)
            ],
            "asks": [
                {
                    "id": f"r{r['id']}",
                    "price": r["ask"],
                    "quantity": left[r["id"]],
                    "class": f"r{r['id']}",
                    "speed": r["speed"],
                }
                for r in asks
            ],
        }
        return self._add("elastic_posted", doc, self.elastic_jobs, asks, {"kind": "elastic_posted"})

    def _accepts(self, jobs: list, asks: list) -> list[list[str]]:
        """Per job, the asks that fit it: its device class, enough memory, a provider that has not
        failed it, its latency SLA (RTT from its region), its deadline on that device, and its own
        region when it is strict without an SLA."""
        device_class = np.array([r["device_class"] for r in asks], dtype=object)
        memory = np.array([r["memory"] for r in asks])
        provider = np.array([r["provider_id"] for r in asks])
        region = np.array([r["region"] for r in asks], dtype=object)
        rtt_by_region: dict[str, np.ndarray] = {}
        accepted = []
        for job in jobs:
            mask = (device_class == job["device_class"]) & (memory >= job["memory"] - 1e-9)
            if job["latency_sla_ms"] is not None:
                if job["region"] not in rtt_by_region:
                    rtt_by_region[job["region"]] = np.array([self._rtt(job["region"], r) for r in asks])
                with np.errstate(invalid="ignore"):
                    mask &= rtt_by_region[job["region"]] <= job["latency_sla_ms"]
            if job.get("placement") == "strict" and job["latency_sla_ms"] is None:
                mask &= region == job["region"]
            excluded = self.exclusions.get(job["id"])
            if excluded:
                mask &= ~np.isin(provider, list(excluded))
            accepts = [
                f"r{asks[i]['id']}"
                for i in np.flatnonzero(mask)
                if device_hours_on(job, asks[i]) <= job["hours_left"]
            ]
            accepted.append(accepts)
        return accepted

    def _posted_book(self) -> "_Book | None":
        """The posted-price book (rule "depth"): thin classes' free devices at the class's posted price
        (config `posted_prices`, fixed before the round), each job accepting every device that fits it:
        its device class, enough memory, a provider that has not failed it, its latency SLA (RTT from
        its region), its deadline on that device, and its own region when `placement` is "strict"."""
        prices = self.prices
        if not self.posted_jobs:
            return None
        asks = [
            r
            for r in self.resources
            if self.free[r["id"]] > 0 and r["class"] not in self.unit_jobs and r["class"] in prices
        ]
        if not asks:
            return None
        bids = [
            {"id": f"j{job['id']}", "price": job["bid"], "accepts": accepts}
            for job, accepts in zip(self.posted_jobs, self._accepts(self.posted_jobs, asks), strict=True)
        ]
        used = sorted({r["class"] for r in asks})
        doc = {
            "mechanism": "posted_price",
            "salt": self.config["salt"],
            "prices": {key: prices[key] for key in used},
            "bids": bids,
            "asks": [
                {
                    "id": f"r{r['id']}",
                    "price": r["ask"],
                    "quantity": self.free[r["id"]],
                    "class": r["class"],
                    "speed": r["speed"],
                }
                for r in asks
            ],
        }
        return self._add("posted_price", doc, self.posted_jobs, asks, {"kind": "posted_price"})

    def _candidates(self, providers: list, jobs: list) -> list:
        """The cheapest providers (cost per speed-1 device-hour, ask / speed) holding CANDIDATE_MARGIN
        times the devices the jobs need, at least MIN_CANDIDATES of them, in id order.

        Candidate pruning: greedy gives each job the cheapest provider with room, so the
        expensive tail rarely wins anything, while every provider costs the engine a column per job.
        The cut reads asks and job sizes only, never a bid."""
        needed = CANDIDATE_MARGIN * sum(job["device_count"] for job in jobs)
        if len(providers) <= MIN_CANDIDATES or sum(self.free[r["id"]] for r in providers) <= needed:
            return providers
        kept, devices = [], 0
        for resource in sorted(providers, key=lambda r: (r["ask"] / r["speed"], r["id"])):
            if len(kept) >= MIN_CANDIDATES and devices >= needed:
                break
            kept.append(resource)
            devices += self.free[resource["id"]]
        return sorted(kept, key=lambda r: r["id"])

    def _add(self, kind: str, doc: dict, jobs: list, resources: list, meta: dict) -> _Book:
        adjusted = [r for r in resources if r.get("quality_factor", 1.0) != 1.0]
        if adjusted:  # the snapshot records the factors, so a replay (and a reader) sees them
            doc["quality"] = {
                "weight": float(getattr(settings, "CPX_SLA_QUALITY_WEIGHT", 0.0)),
                "reputation": {f"r{r['id']}": float(r["provider__reputation"]) for r in adjusted},
                "factor": {f"r{r['id']}": r["quality_factor"] for r in adjusted},
                "reported_ask": {f"r{r['id']}": r["reported_ask"] for r in adjusted},
            }
        text = canonical_json(doc)
        book = _Book(
            kind=kind,
            doc=doc,
            text=text,
            digest=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            meta=meta,
            jobs={f"j{job['id']}": job for job in jobs},
            resources={f"r{r['id']}": r for r in resources},
        )
        self.books.append(book)
        return book

    def _hetero_job(self, job: dict) -> dict:
        devices = job["device_count"]
        return {
            "id": f"j{job['id']}",
            # The job's value: its max price for every device-hour it needs on a speed-1 device.
            "bid": job["bid"] * job["base_device_hours"],
            "gpus": devices,
            "vram_per_gpu": job["memory"],
            "vcpu": 0,
            "ram": 0,
            "base_hours": job["base_device_hours"] / devices,
            "deadline_hours": job["hours_left"],
        }

    def _hetero_provider(self, resource: dict) -> dict:
        return {
            "id": f"r{resource['id']}",
            "gpus": self.free[resource["id"]],
            "vram_per_gpu": resource["memory"],
            "vcpu": 0,
            "ram": 0,
            "speed": resource["speed"],
            "ask_per_gpu_hour": resource["ask"],
        }

    def snapshot_text(self) -> str:
        """The canonical JSON list of the book documents: `clear(json.loads(text))` re-runs the round."""
        return "[" + ",".join(book.text for book in self.books) + "]"

    @property
    def book_meta(self) -> list:
        return [book.meta for book in self.books]

    # --- results

    def fills(self, results: list) -> list[Fill]:
        """One fill per matched job, all its devices on one resource."""
        fills, elastic = [], None
        for book, result in zip(self.books, results, strict=True):
            if book.kind == gang_books.KIND:
                fills.extend(
                    Fill(
                        **{
                            **part,
                            "unit_price_received": _received(part["resource"], part["unit_price_received"]),
                        }
                    )
                    for part in gang_books.gang_fill_parts(book, result)
                )
            elif book.kind == "elastic":
                elastic = (book.doc, result)
            elif book.kind == broker_books.KIND:
                parts = broker_books.broker_fill_parts(
                    book, result, received=_received, device_hours_on=device_hours_on
                )
                fills.extend(Fill(**part) for part in parts)
            elif book.kind == "heterogeneous":
                fills.extend(self._hetero_fills(book, result))
            elif book.kind in ("posted_price", "tiered", "elastic_posted"):
                fills.extend(self._posted_fills(book, result))
            else:
                fills.extend(self._unit_fills(book, result))
        return fills if elastic is None else elastic_fills(fills, *elastic)

    def _posted_fills(self, book: _Book, result: dict) -> list[Fill]:
        fills = []
        for job_id, resource_id in result["assignments"].items():
            job, resource = book.jobs[job_id], book.resources[resource_id]
            price = result["unit_prices"][job_id]
            fills.append(
                Fill(
                    job=job,
                    resource=resource,
                    devices=1,
                    resource_class=resource["class"],
                    unit_price_paid=price,
                    unit_price_received=_received(resource, price),
                    expected_device_hours=device_hours_on(job, resource),
                )
            )
        return fills

    def _unit_fills(self, book: _Book, result: dict) -> list[Fill]:
        if not result["traded_quantity"]:
            return []
        bids, asks = book.doc["bids"], book.doc["asks"]
        # Devices of a class are interchangeable: the best bids take the cheapest filled devices.
        winners = sorted(
            (i for i, name in enumerate(bids["id"]) if result["fills"].get(name)),
            key=lambda i: (-bids["price"][i], i),
        )
        sellers = sorted(
            (i for i, name in enumerate(asks["id"]) if result["fills"].get(name)),
            key=lambda i: (asks["price"][i], i),
        )
        slots = [asks["id"][i] for i in sellers for _ in range(int(result["fills"][asks["id"][i]]))]
        fills = []
        for i, slot in zip(winners, slots, strict=True):
            job, resource = book.jobs[bids["id"][i]], book.resources[slot]
            fills.append(
                Fill(
                    job=job,
                    resource=resource,
                    devices=1,
                    resource_class=book.meta["resource_class"],
                    unit_price_paid=result["buyer_price"],
                    unit_price_received=_received(resource, result["seller_price"]),
                    expected_device_hours=device_hours_on(job, resource),
                )
            )
        return fills

    def _hetero_fills(self, book: _Book, result: dict) -> list[Fill]:
        docs_jobs = {j["id"]: j for j in book.doc["jobs"]}
        docs_providers = {p["id"]: p for p in book.doc["providers"]}
        cost: dict[str, float] = {}  # kappa_jk: what the provider asked for the job
        hosted: dict[str, float] = defaultdict(float)
        for job_id, provider_id in result["assignments"].items():
            engine_hours = (
                docs_jobs[job_id]["gpus"]
                * docs_jobs[job_id]["base_hours"]
                / docs_providers[provider_id]["speed"]
            )
            cost[job_id] = docs_providers[provider_id]["ask_per_gpu_hour"] * engine_hours
            hosted[provider_id] += cost[job_id]
        fills = []
        for job_id, provider_id in result["assignments"].items():
            job, resource = book.jobs[job_id], book.resources[provider_id]
            engine_hours = (
                docs_jobs[job_id]["gpus"]
                * docs_jobs[job_id]["base_hours"]
                / docs_providers[provider_id]["speed"]
            )
            paid = result["payments"].get(job_id, docs_jobs[job_id]["bid"])
            # The provider's receipt is shared among its jobs by cost (VCG adds a bonus over cost),
            # and capped at the job's payment: no lease runs a deficit.
            receipt = result["receipts"].get(provider_id, hosted[provider_id])
            share = receipt * cost[job_id] / hosted[provider_id] if hosted[provider_id] > 0 else 0.0
            fills.append(
                Fill(
                    job=job,
                    resource=resource,
                    devices=job["device_count"],
                    resource_class=resource["class"],
                    unit_price_paid=paid / engine_hours,
                    unit_price_received=_received(resource, min(share, paid) / engine_hours),
                    expected_device_hours=device_hours_on(job, resource),
                )
            )
        return fills

    def waiting_reasons(self, results: list, *, matched: set) -> dict[int, dict]:
        """Why each job of the snapshot that this round did not match waits: {job id: {code, message,
        and figures}}, codes `bid_below_price` (with `price`, the lowest price that would have served
        it, and `short_by`), `rationed` (its price was met but the devices went to orders ahead of it),
        `reduced_trade` (the double auction gave up its trade), `no_willing_supply` (no device that
        fits it takes the posted price), `outbid` (a heterogeneous book gave the devices to others),
        `deadline`, `memory`, `no_supply` (no free device fits it: memory, devices on one node, region
        or latency SLA, or all busy). Prices are per reference device-hour."""
        reasons: dict[int, dict] = {}
        for book, result in zip(self.books, results, strict=True):
            if book.kind == "elastic":
                for name in result["declined"]:
                    reasons[book.jobs[name]["id"]] = _reason(
                        "elastic_declined",
                        "At the price it cleared its utility buys nothing (its minimum is not worth the "
                        "price, or its budget cannot pay for it).",
                    )
            elif book.kind in ("posted_price", "elastic_posted"):
                self._posted_reasons(book, result, reasons)
            elif book.kind == "tiered":
                reasons.update(tier_books.tier_waiting_reasons(book.doc, result, book.jobs))
            elif book.kind == "unit":
                self._unit_reasons(book, result, reasons, matched)
            elif book.kind == gang_books.KIND:
                for job in book.jobs.values():
                    if job["id"] not in matched:
                        reasons[job["id"]] = gang_books.gang_waiting_reason(book, job)
            else:
                for job in book.jobs.values():
                    if job["id"] not in matched:
                        reasons[job["id"]] = self._hetero_reason(job, book)
        for job in self.jobs:
            if job["id"] not in matched and job["id"] not in reasons:
                reasons[job["id"]] = self._unplaced_reason(job)
        # A job the tiered book left and the fall-through matched has a reason from the first book only.
        return {job_id: reason for job_id, reason in reasons.items() if job_id not in matched}

    def _posted_reasons(self, book: _Book, result: dict, reasons: dict) -> None:
        prices = book.doc["prices"]
        asks = {a["id"]: a for a in book.doc["asks"]}
        willing = {name for name, a in asks.items() if a["price"] / a["speed"] <= prices[a["class"]]}
        for bid in book.doc["bids"]:
            if bid["id"] in result["assignments"]:
                continue
            job = book.jobs[bid["id"]]
            offered = [prices[asks[a]["class"]] for a in bid["accepts"] if a in willing]
            if not bid["accepts"]:
                reasons[job["id"]] = self._unplaced_reason(job)
            elif not offered:
                reasons[job["id"]] = _reason(
                    "no_willing_supply",
                    "No free device that fits the job takes its class's posted price now.",
                )
            elif min(offered) > bid["price"]:
                low = min(offered)
                reasons[job["id"]] = _reason(
                    "bid_below_price",
                    f"The bid is {low - bid['price']:.6f} below the lowest posted price of a fitting class "
                    f"({low:.6f} per reference device-hour).",
                    price=low,
                    short_by=low - bid["price"],
                )
            else:
                reasons[job["id"]] = _reason(
                    "rationed",
                    "Its price was met, but the fitting devices went to orders ahead of it this round.",
                )

    def _unit_reasons(self, book: _Book, result: dict, reasons: dict, matched: set) -> None:
        bids = book.doc["bids"]
        order = sorted(range(len(bids["id"])), key=lambda i: (-bids["price"][i], i))
        for rank, i in enumerate(order):
            job = book.jobs[bids["id"][i]]
            if job["id"] in matched:
                continue
            price = result["buyer_price"]
            if rank < result["efficient_trades"]:
                reasons[job["id"]] = _reason(
                    "reduced_trade",
                    "The class's double auction gave up this trade to stay truthful and budget-balanced.",
                )
            elif price is not None and bids["price"][i] < price:
                reasons[job["id"]] = _reason(
                    "bid_below_price",
                    f"The bid is {price - bids['price'][i]:.6f} below the class's clearing price "
                    f"({price:.6f}).",
                    price=price,
                    short_by=price - bids["price"][i],
                )
            else:
                reasons[job["id"]] = _reason(
                    "outbid", "Higher bids took the class's free devices this round."
                )

    def _hetero_reason(self, job: dict, book: _Book) -> dict:
        costs = [r["ask"] / r["speed"] for r in book.resources.values()]
        low = min(costs) if costs else None
        if low is not None and job["bid"] < low:
            return _reason(
                "bid_below_price",
                f"The bid is {low - job['bid']:.6f} below the cheapest fitting device "
                f"({low:.6f} per reference device-hour).",
                price=low,
                short_by=low - job["bid"],
            )
        return _reason("outbid", "Other jobs took the devices that fit it this round.")

    def _unplaced_reason(self, job: dict) -> dict:
        same = [r for r in self.resources if r["device_class"] == job["device_class"]]
        if not any(r["memory"] >= job["memory"] - 1e-9 for r in same):
            return _reason(
                "memory", f"No free device has {job['memory']:g} GiB per device; it waits for one that does."
            )
        fitting = [
            r for r in same if r["memory"] >= job["memory"] - 1e-9 and r["free"] >= job["device_count"]
        ]
        if fitting and all(
            device_hours_on(job, r) / job["device_count"] > job["hours_left"] for r in fitting
        ):
            return _reason("deadline", "No free device that fits it can finish before its deadline.")
        return _reason(
            "no_supply",
            "No free device fits it now (memory, devices on one node, region or latency SLA): it waits "
            "for one.",
            region=job["region"],
        )

    def summary(self, results: list) -> dict:
        """Welfare, LP bound and gap, clearing prices per class, and each class's clearing-price estimate.

        `lp_bound` bounds the welfare of every book as the round routed them: the LP-relaxation bound of
        each heterogeneous book plus the gains of the efficient trades of each unit or posted-price book
        (no rule can do better in that book). It is None when a heterogeneous book has no bound (its LP
        did not finish), because a partial bound would not bound the whole. `gap` = (bound - welfare) /
        |bound|; floating error never makes it negative, and the bound is never below the welfare.
        Welfare is in each book's own unit (money per job in heterogeneous books, per device-hour in
        unit and posted-price books), as before; the bound adds the same units book by book."""
        welfare, bound, bounded, prices = 0.0, 0.0, True, {}
        for book, result in zip(self.books, results, strict=True):
            if book.kind == "elastic":
                continue  # quantities of trades priced above, no trade of its own
            if book.kind == "elastic_posted":  # per-device prices: no class price to publish
                welfare += result["gains_from_trade"]
                bound += max(posted_gains_bound(book.doc), result["gains_from_trade"])
                continue
            if book.kind == gang_books.KIND:  # bound: every gang's value, as if it cost nothing
                welfare += result["welfare"]
                bound += max(result["welfare"], sum(max(0.0, job["bid"]) for job in book.doc["jobs"]))
                continue
            if book.kind in ("heterogeneous", broker_books.KIND):
                welfare += result["welfare"]
                if result.get("lp_bound") is None:
                    bounded = False
                else:
                    bound += max(result["lp_bound"], result["welfare"])
                continue
            welfare += result["gains_from_trade"]
            if book.kind == "tiered":
                bound += max(posted_gains_bound(book.doc), result["gains_from_trade"])
                continue
            if book.kind == "posted_price":
                bound += max(posted_gains_bound(book.doc), result["gains_from_trade"])
                prices.update(self._posted_prices_summary(book, result))
                continue
            book_bids = book.doc["bids"]
            bid_prices = (
                list(book_bids["price"]) if isinstance(book_bids, dict) else [b["price"] for b in book_bids]
            )
            ask_units = self._ask_units(book)
            bound += max(unit_gains_bound(bid_prices, ask_units), result["gains_from_trade"])
            prices[book.meta["resource_class"]] = {
                "rule": book.doc["mechanism"],
                "buyer_price": result["buyer_price"],
                "seller_price": result["seller_price"],
                "traded": result["traded_quantity"],
                "efficient_trades": result["efficient_trades"],
                "bids": len(book.doc["bids"]["id"]),
                "asks": len(book.doc["asks"]["id"]),
                "estimate": _reference_estimate(
                    bid_prices,
                    [
                        {"price": price, "quantity": units, "speed": book.resources[name]["speed"]}
                        for name, (price, units) in zip(book.doc["asks"]["id"], ask_units, strict=True)
                    ],
                ),
            }
        if self.rule == "depth":
            self._unpriced_estimates(prices)
        if not bounded:
            return {"welfare": welfare, "lp_bound": None, "gap": None, "prices": prices}
        gap = max(0.0, (bound - welfare) / max(abs(bound), 1e-12)) if bound > 0 else 0.0
        return {"welfare": welfare, "lp_bound": bound, "gap": gap, "prices": prices}

    def _unpriced_estimates(self, prices: dict) -> None:
        """Classes no book priced this round get an estimate from their home demand against their free
        devices at the snapshot, so that the next round can post a price for them."""
        demand: dict[str, list[float]] = defaultdict(list)
        for job in self.jobs:
            home = self._home_class(job)
            if home is not None and home not in prices:
                demand[home].append(job["bid"])
        for key, bids in sorted(demand.items()):
            members = [
                {"price": r["ask"], "quantity": r["free"], "speed": r["speed"]}
                for r in self.classes[key]
                if r["free"] > 0
            ]
            prices[key] = {
                "rule": None,
                "buyer_price": None,
                "seller_price": None,
                "traded": 0,
                "bids": len(bids),
                "asks": len(members),
                "estimate": _reference_estimate(bids, members),
            }

    @staticmethod
    def _ask_units(book: _Book) -> list[tuple[float, int]]:
        asks = book.doc["asks"]
        if isinstance(asks, dict):
            return list(zip(asks["price"], asks["quantity"], strict=True))
        return [(a["price"], a["quantity"]) for a in asks]

    def _posted_prices_summary(self, book: _Book, result: dict) -> dict:
        """Per class of the posted-price book: its posted price, trades, and the market-clearing price
        of its own demand (jobs whose home class it is, and jobs that accepted it and stayed unmatched)
        against its devices — the estimate the NEXT round posts (spec: docs/engine.md)."""
        matched = result["assignments"]
        demand: dict[str, list[float]] = defaultdict(list)
        home_count: dict[str, int] = defaultdict(int)
        ask_class = {a["id"]: a["class"] for a in book.doc["asks"]}
        for bid in book.doc["bids"]:
            job = book.jobs[bid["id"]]
            home = self._home_class(job)
            keys = {home} if home in book.doc["prices"] else set()
            if bid["id"] not in matched:
                keys |= {ask_class[a] for a in bid["accepts"]}
            if home is not None:
                home_count[home] += 1
            for key in keys:
                demand[key].append(bid["price"])
        traded: dict[str, int] = defaultdict(int)
        for ask in matched.values():
            traded[ask_class[ask]] += 1
        summary = {}
        for key, price in book.doc["prices"].items():
            members = [a for a in book.doc["asks"] if a["class"] == key]
            units = [(a["price"], a["quantity"]) for a in members]
            summary[key] = {
                "rule": "posted_price",
                "posted_price": price,
                "buyer_price": price if traded[key] else None,
                "seller_price": price if traded[key] else None,
                "traded": traded[key],
                "bids": home_count[key],
                "asks": len(units),
                "estimate": _reference_estimate(demand[key], members),
            }
        return summary
