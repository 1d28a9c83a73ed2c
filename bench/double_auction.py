"""Benchmark of the double-auction clearing core against its floor and a plain-Python implementation.

Run: `.venv/bin/python bench/double_auction.py [--quick] [--repeats N]`

For books of 10^3 … 10^6 bids with one ask per ten bids (columnar, NumPy arrays, unit quantities,
uniform prices), it times, in the same run and the same process:

- `clear(doc, input_sha256=h)` for mcafee and sbba (the hash passed in, as the round service does);
- the floor: `np.sort` of the bid prices plus `np.sort` of the ask prices;
- the plain-Python reference (`double_auction_reference.clear_reference`), checked to give the same
  result; it is skipped at 10^6 bids (about 10 s a run);
- the canonical input hash of the NumPy book against `json.dumps` + sha256 of the same book as lists;
- string ids against integer ids on the same book: the ids as NumPy arrays (`np.arange` against
  "j…"/"r…" strings, as a round snapshot names jobs and resources) and as Python lists, each
  result checked to be the integer one with its ids renamed. `--ids` runs this table only.

Targets: at 10^5 bids × 10^4 asks, clear <= 10× the sort floor and >= 5× faster than
plain Python; the hash <= 1.5× json.dumps + sha256; string ids <= 1.5× integer ids (issue 13).
Ratios are of medians.
"""

import argparse
import hashlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auctions.mechanisms import clear  # noqa: E402
from auctions.mechanisms.canonical import input_sha256  # noqa: E402
from auctions.mechanisms.double_auction_reference import clear_reference  # noqa: E402

MECHANISMS = ("mcafee", "sbba")
REFERENCE_LIMIT = 100_000  # bids; beyond it the plain-Python run takes seconds per repeat


def make_book(bids: int, seed: int = 2024) -> dict:
    rng = np.random.default_rng(seed)
    asks = max(bids // 10, 1)
    return {
        "mechanism": "mcafee",
        "seed": 7,
        "bids": {
            "id": np.arange(bids),
            "price": np.round(rng.uniform(0.0, 100.0, bids), 4),
            "quantity": np.ones(bids, dtype=np.int64),
        },
        "asks": {
            "id": np.arange(bids, bids + asks),
            "price": np.round(rng.uniform(0.0, 100.0, asks), 4),
            "quantity": np.ones(asks, dtype=np.int64),
        },
    }


def as_lists(doc: dict) -> dict:
    return {
        key: (
            {column: values.tolist() for column, values in value.items()}
            if isinstance(value, dict)
            else value
        )
        for key, value in doc.items()
    }


def interleaved(functions: dict, repeats: int, limited: dict | None = None) -> dict[str, list[float]]:
    """Time each function `repeats` times, round-robin, so that load on the machine hits all alike.

    `limited` maps a name to a smaller repeat count (the slow plain-Python runs).
    """
    limited = limited or {}
    times: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        function()  # warm caches and lazy imports outside the measurement
    for round_number in range(repeats):
        for name, function in functions.items():
            if round_number >= limited.get(name, repeats):
                continue
            start = time.perf_counter()
            function()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def summary(times: list[float]) -> str:
    return f"{min(times):8.2f} {statistics.median(times):8.2f} {max(times):8.2f}"


def same(left, right) -> bool:
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same(left[key], right[key]) for key in left)
    if isinstance(left, float) or isinstance(right, float):
        return (
            left is not None and right is not None and math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-9)
        )
    return left == right


def json_sha256(doc: dict) -> str:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def with_string_ids(doc: dict) -> dict:
    """The same book with bid i named "j<i>" and ask i named "r<i>", as NumPy string arrays.

    `np.array` of the names gives the narrowest width, as a caller converting a list of names gets.
    """
    return dict(
        doc,
        bids=dict(doc["bids"], id=np.array([f"j{i}" for i in doc["bids"]["id"].tolist()])),
        asks=dict(doc["asks"], id=np.array([f"r{i}" for i in doc["asks"]["id"].tolist()])),
    )


def with_list_ids(doc: dict) -> dict:
    return dict(
        doc,
        bids=dict(doc["bids"], id=doc["bids"]["id"].tolist()),
        asks=dict(doc["asks"], id=doc["asks"]["id"].tolist()),
    )


def renamed(result: dict, names: dict) -> dict:
    """`result` with its ids renamed (fills, payments and the lottery pool)."""
    out = dict(result)
    for key in ("fills", "payments"):
        out[key] = {names[name]: value for name, value in result[key].items()}
    if "lottery" in result:
        out["lottery"] = dict(result["lottery"], pool=[names[name] for name in result["lottery"]["pool"]])
    return out


def compare_ids(sizes: list[int], repeats: int) -> None:
    print(
        "\nstring ids vs integer ids, same book; clear with the hash passed; "
        f"{repeats} repeats, ms min/median/max"
    )
    header = (
        f"{'bids x asks':>17} {'mechanism':>9} | {'int array':>26} | {'str array':>26} | {'ratio':>5} | "
        f"{'int list':>26} | {'str list':>26} | {'ratio':>5} | same"
    )
    print(header)
    print("-" * len(header))
    for bids in sizes:
        for mechanism in MECHANISMS:
            doc = dict(make_book(bids), mechanism=mechanism)
            strings = with_string_ids(doc)
            books = {
                "int array": doc,
                "str array": strings,
                "int list": with_list_ids(doc),
                "str list": with_list_ids(strings),
            }
            times = interleaved(
                {name: lambda b=book: clear(b, input_sha256="h") for name, book in books.items()}, repeats
            )
            names = dict(
                zip(
                    doc["bids"]["id"].tolist() + doc["asks"]["id"].tolist(),
                    strings["bids"]["id"].tolist() + strings["asks"]["id"].tolist(),
                    strict=True,
                )
            )
            expected = renamed(clear(doc, input_sha256="h"), names)
            agree = all(
                clear(books[name], input_sha256="h") == expected for name in ("str array", "str list")
            )
            agree = agree and clear(books["int list"], input_sha256="h") == clear(doc, input_sha256="h")
            median = {name: statistics.median(values) for name, values in times.items()}
            size = f"{bids:,} x {len(doc['asks']['id']):,}"
            print(
                f"{size:>17} {mechanism:>9} | {summary(times['int array'])} | "
                f"{summary(times['str array'])} | {median['str array'] / median['int array']:5.2f} | "
                f"{summary(times['int list'])} | {summary(times['str list'])} | "
                f"{median['str list'] / median['int list']:5.2f} | {'yes' if agree else 'NO'}"
            )
    print("target: str array <= 1.5x int array")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^3 … 10^5 bids, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per cell (default 7)")
    parser.add_argument("--ids", action="store_true", help="only string ids against integer ids")
    args = parser.parse_args(argv)
    sizes = [10**3, 10**4, 10**5] if args.quick else [10**3, 10**4, 10**5, 10**6]
    repeats = args.repeats or (3 if args.quick else 7)
    if args.ids:
        compare_ids(sizes, repeats)
        return 0
    reference_repeats = min(repeats, 3)
    print(
        f"double-auction clearing, columnar NumPy books, unit quantities; {repeats} repeats, "
        "ms min/median/max"
    )
    print(f"plain Python: {reference_repeats} repeats, skipped above {REFERENCE_LIMIT:,} bids\n")
    header = (
        f"{'bids x asks':>17} {'mechanism':>9} | {'clear (hash passed)':>26} | {'np.sort floor':>26} | "
        f"{'x floor':>7} | {'plain Python':>26} | {'speedup':>7} | same"
    )
    print(header)
    print("-" * len(header))
    for bids in sizes:
        doc = make_book(bids)
        books = {mechanism: dict(doc, mechanism=mechanism) for mechanism in MECHANISMS}
        functions = {"floor": lambda d=doc: (np.sort(d["bids"]["price"]), np.sort(d["asks"]["price"]))}
        for mechanism, book in books.items():
            functions[mechanism] = lambda b=book: clear(b, input_sha256="h")
            if bids <= REFERENCE_LIMIT:
                functions[f"plain {mechanism}"] = lambda b=book: clear_reference(b, input_sha256="h")
        times = interleaved(
            functions, repeats, {name: reference_repeats for name in functions if " " in name}
        )
        floor = times["floor"]
        for mechanism, book in books.items():
            engine = times[mechanism]
            ratio = statistics.median(engine) / statistics.median(floor)
            if bids <= REFERENCE_LIMIT:
                plain = times[f"plain {mechanism}"]
                speedup = f"{statistics.median(plain) / statistics.median(engine):7.1f}"
                agree = (
                    "yes"
                    if same(clear(book, input_sha256="h"), clear_reference(book, input_sha256="h"))
                    else "NO"
                )
                plain_text = summary(plain)
            else:
                speedup, agree, plain_text = "      -", "-", f"{'skipped (~10 s a run)':>26}"
            size = f"{bids:,} x {len(doc['asks']['id']):,}"
            print(
                f"{size:>17} {mechanism:>9} | {summary(engine)} | {summary(floor)} | {ratio:7.2f} | "
                f"{plain_text} | {speedup} | {agree}"
            )
    print("\ncanonical input hash (NumPy book) vs json.dumps + sha256 of the same book as lists, ms")
    header = f"{'bids x asks':>17} | {'input_sha256':>26} | {'json.dumps + sha256':>26} | {'ratio':>6} | same"
    print(header)
    print("-" * len(header))
    for bids in sizes:
        doc = make_book(bids)
        listed = as_lists(doc)
        times = interleaved(
            {"hash": lambda d=doc: input_sha256(d), "json": lambda d=listed: json_sha256(d)}, repeats
        )
        hashed, plain = times["hash"], times["json"]
        ratio = statistics.median(hashed) / statistics.median(plain)
        agree = "yes" if input_sha256(doc) == json_sha256(listed) else "NO"
        size = f"{bids:,} x {len(doc['asks']['id']):,}"
        print(f"{size:>17} | {summary(hashed)} | {summary(plain)} | {ratio:6.2f} | {agree}")
    compare_ids(sizes, repeats)
    print("\ntargets at 100,000 x 10,000: clear <= 10x floor, >= 5x faster than plain Python; hash <= 1.5x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
