"""Reads of the cloud–edge tiers (AI-Bazaar, docs/ai-bazaar.md): how latency-bound jobs split between the
edge and the cloud in recent rounds, the overflow share, and each tier's price, from the figures each
cleared round recorded for its tiered books (`Round.mechanism["books"][i]["tiers"]`). One query."""

from collections import defaultdict

from auctions.models import Round
from market.money import to_money

RECENT_ROUNDS = 20


def _money(value):
    return None if value is None else to_money(value)


def market_tiers(*, rounds: int = RECENT_ROUNDS) -> dict:
    """Over the last `rounds` cleared rounds: latency-bound jobs placed per tier, the overflow share
    (jobs placed on the cloud / jobs placed), and per device class the same with the newest round's
    prices per reference device-hour (the cloud leader's level; the edge followers' median, lowest and
    highest). Shares are None where nothing was placed."""
    recent = list(
        Round.objects.filter(status=Round.Status.CLEARED)
        .order_by("-id")
        .values_list("id", "mechanism")[:rounds]
    )
    placed = {"END": 0, "EDGE": 0, "CLOUD": 0}
    classes: dict[str, dict] = defaultdict(
        lambda: {"rounds": 0, "jobs": 0, "edge": 0, "cloud": 0, "latest": None, "causes": defaultdict(int)}
    )
    jobs = 0
    for round_id, mechanism in recent:  # newest first: the first figures seen are the latest prices
        for book in (mechanism or {}).get("books", []):
            figures = book.get("tiers")
            if book.get("kind") != "tiered" or not figures:
                continue
            row = classes[book["device_class"]]
            row["rounds"] += 1
            row["jobs"] += figures["jobs"]
            row["edge"] += figures["placed"]["END"] + figures["placed"]["EDGE"]
            row["cloud"] += figures["placed"]["CLOUD"]
            for cause, count in figures["overflow_causes"].items():
                row["causes"][cause] += count
            if row["latest"] is None:
                row["latest"] = {"round": round_id, **figures}
            jobs += figures["jobs"]
            for tier in placed:
                placed[tier] += figures["placed"][tier]
    total = sum(placed.values())
    return {
        "rounds": [round_id for round_id, _ in recent],
        "jobs": jobs,
        "placed": placed,
        "overflow_share": placed["CLOUD"] / total if total else None,
        "device_classes": [
            {
                "device_class": key,
                "rounds": row["rounds"],
                "jobs": row["jobs"],
                "placed_edge": row["edge"],
                "placed_cloud": row["cloud"],
                "overflow_share": row["cloud"] / (row["edge"] + row["cloud"])
                if row["edge"] + row["cloud"]
                else None,
                "overflow_causes": dict(sorted(row["causes"].items())),
                "round": row["latest"]["round"],
                "cloud_price": _money(row["latest"]["cloud_price"]),
                "edge_price_median": _money(row["latest"]["edge_price_median"]),
                "edge_price_low": _money(row["latest"]["edge_price_low"]),
                "edge_price_high": _money(row["latest"]["edge_price_high"]),
            }
            for key, row in sorted(classes.items())
        ],
    }
