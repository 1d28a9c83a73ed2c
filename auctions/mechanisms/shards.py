"""Clearing a round's books apart: the cheap allocation that orders the heterogeneous books, and the
split of books into shards of about equal work.

A round clears its heterogeneous books in a chain (each sees the devices the previous ones left), so
their documents cannot be built before the previous books' assignments are known. For the `greedy`
mechanism the assignments are the greedy pass alone; the critical-value payments and the LP bound,
which cost nearly all of a book's time, read only the book's own document. So the chain is walked
with `allocation` (the same validation and the same pass as `clear`), and every book is then cleared
in full wherever there is room: `clear(doc)` returns the same assignments (one pure function of the
document). The `welfare` mechanism's assignments come from a time-guarded MILP and have no cheaper
twin: `allocation` answers None for it, and the caller clears the book in the chain.

A `greedy` book's winners are priced independently of one another (each critical value re-runs the
order without that winner), so a large book is also cut into pieces (`clear_piece`): piece 0 is the
whole clear without payments (allocation, receipts, LP bound), pieces 1.. share the winners'
payments; `join` gives exactly `clear(doc)` (payments in the winners' order, the surplus summed
in that order).

Model of the split (`split`): a book costs about its size (bids + asks for a double auction or a
posted-price book; for a heterogeneous book n^2 P / 8 for the payments, which re-run the pass per
winner, plus 60 n P for the LP bound); books are handed out largest first to the least loaded shard
(LPT, Graham 1969, "Bounds on multiprocessing timing anomalies", SIAM J. Appl. Math. 17(2): at most
4/3 of the best makespan), ties by book index, so the split is a pure function of the documents.
"""

import heapq

from auctions.mechanisms.errors import MechanismError


def allocation(doc: dict) -> dict | None:
    """The assignments {job id: provider id} that `clear(doc)` returns for a heterogeneous `greedy`
    book, computed without payments or LP bound; None when the book's mechanism has no such
    shortcut (`welfare`). Raises MechanismError where `clear(doc)` would on the same document."""
    from auctions.mechanisms.heterogeneous import PAYMENT_RULES, _pruning, _time_limit, build_market

    mechanism = doc.get("mechanism")
    if mechanism != "greedy":
        return None
    rule = doc.get("payment_rule")
    if rule not in PAYMENT_RULES[mechanism]:
        allowed = " or ".join(sorted(PAYMENT_RULES[mechanism]))
        raise MechanismError("bad_input", f"payment_rule for {mechanism!r} must be {allowed}, not {rule!r}")
    _time_limit(doc)
    _pruning(doc, mechanism)
    from auctions.mechanisms.greedy_critical import solve_greedy

    return solve_greedy(build_market(doc), payment_rule="none")["assignments"]


LP_COST_PER_PAIR = (
    60  # the LP bound against the payments' n^2 P / 8 (2.9 s vs 0.8 s at 191 jobs, 10 s vs 72 s at 1,464)
)


def book_cost(doc: dict, *, piece: int = 0, pieces: int = 1) -> int:
    """The split's estimate of the work of clearing `doc`, or piece `piece` of `pieces` of it (see the
    module's model: a heterogeneous book's payments ~ n^2 P / 8, shared among pieces 1.., and its LP
    bound ~ 60 n P, in piece 0)."""
    if "jobs" in doc and "providers" in doc:
        jobs, providers = len(doc["jobs"]), max(len(doc["providers"]), 1)
        lp = LP_COST_PER_PAIR * jobs * providers + jobs + providers
        payments = jobs * jobs * providers // 8
        if pieces == 1:
            return lp + payments
        return lp if piece == 0 else payments // (pieces - 1)
    bids, asks = doc.get("bids", ()), doc.get("asks", ())
    size = len(bids["id"]) if isinstance(bids, dict) else sum(1 + len(b.get("accepts", ())) for b in bids)
    return size + (len(asks["id"]) if isinstance(asks, dict) else len(asks))


def split(costs: list[int], shards: int) -> list[list[int]]:
    """Book indices in `shards` groups of about equal total cost (LPT), each group in index order;
    empty groups are dropped."""
    if shards < 1:
        raise MechanismError("bad_input", "shards must be >= 1")
    heap = [(0, shard) for shard in range(shards)]
    groups: list[list[int]] = [[] for _ in range(shards)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, shard = heapq.heappop(heap)
        groups[shard].append(index)
        heapq.heappush(heap, (load + costs[index], shard))
    return [sorted(group) for group in groups if group]


def divisible(doc: dict) -> bool:
    """A book whose clearing can be cut into pieces (`clear_piece`): a `greedy` book with critical
    payments, whose winners are priced independently of one another."""
    return doc.get("mechanism") == "greedy" and doc.get("payment_rule") == "critical"


def clear_piece(doc: dict, *, piece: int, pieces: int, input_sha256: str | None = None) -> dict:
    """Piece `piece` of `pieces` (>= 2) of a divisible book: piece 0 is `clear(doc)` without payments
    (the allocation, receipts and LP bound); piece k > 0 is {"payments": every (pieces - 1)-th winner's
    from the (k - 1)-th}. `join` puts them together into exactly `clear(doc)`. Raises MechanismError as
    `clear` would."""
    from auctions.mechanisms.greedy_critical import solve_greedy
    from auctions.mechanisms.heterogeneous import build_market, clear_heterogeneous

    if not divisible(doc) or pieces < 2 or not 0 <= piece < pieces:
        raise MechanismError("bad_input", "only a greedy book with critical payments is cleared in pieces")
    if piece == 0:
        return clear_heterogeneous(doc, input_sha256=input_sha256, share=(0, 0))
    allocation(doc)  # the same validation as piece 0
    share = (piece - 1, pieces - 1)
    return {"payments": solve_greedy(build_market(doc), payment_rule="critical", share=share)["payments"]}


def join(parts: list[dict]) -> dict:
    """The result of a book from its pieces (piece 0 first): every winner's payment in the order
    `clear` lists them (the winners' order of `assignments`), and the surplus summed in that order."""
    first = parts[0]
    paid = {}
    for part in parts:
        paid.update(part["payments"])
    payments = {job: paid[job] for job in first["assignments"]}
    return {
        **first,
        "payments": payments,
        "surplus": float(sum(payments.values()) - sum(first["receipts"].values())),
    }
