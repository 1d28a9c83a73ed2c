"""A double-auction BOOK read into arrays: row or columnar sides, validated in bulk (docs/mechanisms.md).

Validation is vectorised: the element types of a column are collected once with `set(map(type, …))`
and the values are checked as NumPy arrays, so a 100,000-order book costs a few milliseconds. Ids
given as NumPy arrays are checked for repeats without a Python object per id: integers by bincount
or sorting, strings by sorting a 64-bit hash of their code points; lists, and whatever the hash
cannot settle, go through a set, which decides exactly and names the repeated id.
"""

import numbers
from dataclasses import dataclass

import numpy as np

from auctions.mechanisms.errors import MechanismError

# Unit quantities are counted exactly in float64 / int64 only below 2**53.
MAX_TOTAL_UNITS = 2**53


@dataclass(frozen=True)
class Side:
    """One side of a book in input order: prices and quantities as float64.

    `ids` is a list of plain Python ids, or a NumPy array of integers or strings (converted only for
    the orders that appear in a result).
    """

    ids: list | np.ndarray
    prices: np.ndarray
    quantities: np.ndarray

    def names(self, positions: np.ndarray) -> list:
        """Plain Python ids of the orders at `positions`."""
        if isinstance(self.ids, np.ndarray):
            return self.ids[positions].tolist()
        ids = self.ids
        return [ids[position] for position in positions.tolist()]


@dataclass(frozen=True)
class Book:
    """A validated BOOK: `support` is (min_bid, max_ask) or None; `seed` defaults to 0."""

    mechanism: str
    bids: Side
    asks: Side
    support: tuple[float, float] | None
    seed: int


def read_book(doc: dict, *, unit: bool) -> Book:
    """Validate `doc` and return its sides as arrays; raises MechanismError("bad_input") on any defect.

    `unit` asks for integer quantities (every mechanism but huang).
    """
    bids = _read_side(doc, "bids", unit=unit)
    asks = _read_side(doc, "asks", unit=unit)
    _refuse_repeated_ids(bids.ids, asks.ids)
    return Book(
        mechanism=doc["mechanism"],
        bids=bids,
        asks=asks,
        support=_read_support(doc),
        seed=_read_seed(doc),
    )


def _bad(message: str) -> MechanismError:
    return MechanismError("bad_input", message)


def _read_side(doc: dict, name: str, *, unit: bool) -> Side:
    if name not in doc:
        raise _bad(f"the book has no {name}")
    raw = doc[name]
    if isinstance(raw, dict):
        ids, prices, quantities = _columns(raw, name)
    elif isinstance(raw, list | tuple):
        ids, prices, quantities = _rows(raw, name)
    else:
        raise _bad(f"{name} must be a list of orders or an object of columns")
    id_list = _read_ids(ids, name)
    price_array = _read_numbers(prices, f"{name} price")
    if quantities is None:
        quantity_array = np.ones(len(id_list))
    else:
        quantity_array = _read_numbers(quantities, f"{name} quantity")
        _check_quantities(quantity_array, name, unit=unit)
    return Side(ids=id_list, prices=price_array, quantities=quantity_array)


def _rows(rows, name: str):
    try:
        ids = [row["id"] for row in rows]
        prices = [row["price"] for row in rows]
    except (KeyError, TypeError, IndexError):
        raise _bad(_first_row_defect(rows, name)) from None
    if any("quantity" in row for row in rows):
        return ids, prices, [row.get("quantity", 1) for row in rows]
    return ids, prices, None


def _first_row_defect(rows, name: str) -> str:
    for position, row in enumerate(rows):
        if not isinstance(row, dict):
            return f"{name}[{position}] must be an object"
        for field in ("id", "price"):
            if field not in row:
                return f"{name}[{position}] has no {field}"
    return f"{name} are malformed"


def _columns(raw: dict, name: str):
    for field in ("id", "price"):
        if field not in raw:
            raise _bad(f"{name} has no {field} column")
    columns = [raw["id"], raw["price"], raw.get("quantity")]
    lengths = set()
    for column in columns:
        if column is None:
            continue
        if isinstance(column, np.ndarray):
            if column.ndim != 1:
                raise _bad(f"{name} columns must be one-dimensional")
        elif not isinstance(column, list | tuple):
            raise _bad(f"{name} columns must be lists")
        lengths.add(len(column))
    if len(lengths) > 1:
        raise _bad(f"{name} columns have different lengths")
    return columns


def _read_ids(values, name: str) -> list | np.ndarray:
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "iuU" or len(values) == 0:  # np.array([]) is float: an empty side
            return values if len(values) else []
        if values.dtype.kind != "O":
            raise _bad(f"{name} ids must be strings or integers")
        values = values.tolist()
    types = set(map(type, values))
    if types <= {int, str}:
        return values if isinstance(values, list) else list(values)
    for kind in types:
        if issubclass(kind, bool | np.bool_) or not issubclass(kind, str | int | np.integer):
            raise _bad(f"{name} ids must be strings or integers, not {kind.__name__}")
    return [value.item() if isinstance(value, np.generic) else value for value in values]


def _is_number_type(kind: type) -> bool:
    if issubclass(kind, bool | np.bool_):
        return False
    return issubclass(kind, numbers.Real | np.integer | np.floating)


def _read_numbers(values, what: str) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
        array = values.astype(np.float64, copy=False)
    else:
        if isinstance(values, np.ndarray):
            if values.dtype.kind != "O":
                raise _bad(f"{what} must be numbers")
            values = values.tolist()
        types = set(map(type, values))
        if not types <= {float, int} and not all(_is_number_type(kind) for kind in types):
            raise _bad(f"{what} must be numbers")
        try:
            array = np.array(values, dtype=np.float64)
        except (OverflowError, ValueError, TypeError):
            raise _bad(f"{what} must be finite numbers") from None
    if not np.isfinite(array).all():
        raise _bad(f"{what} must be finite numbers")
    return array


def _check_quantities(quantities: np.ndarray, name: str, *, unit: bool) -> None:
    if len(quantities) == 0:
        return
    if quantities.min() < 0:
        raise _bad(f"{name} quantities must not be negative")
    if unit:
        if not (quantities == np.floor(quantities)).all():
            raise _bad(f"{name} quantities must be whole units in a unit mechanism")
        if quantities.sum() > MAX_TOTAL_UNITS:
            raise _bad(f"{name} hold more than 2**53 units")


def _refuse_repeated_ids(bid_ids, ask_ids) -> None:
    """Refuse an id repeated within or across sides, naming the first repeat in input order.

    NumPy id columns are shown distinct without making one Python object per id
    (`_arrays_are_distinct`); lists, an integer side beside a string side, and whatever the fast
    checks leave open are decided exactly with a set, which also finds the id to name.
    """
    if _arrays_are_distinct(bid_ids, ask_ids):
        return
    bid_ids = bid_ids.tolist() if isinstance(bid_ids, np.ndarray) else bid_ids
    ask_ids = ask_ids.tolist() if isinstance(ask_ids, np.ndarray) else ask_ids
    seen = set(bid_ids)
    if len(seen) == len(bid_ids):
        seen.update(ask_ids)
        if len(seen) == len(bid_ids) + len(ask_ids):
            return
    counted: set = set()
    for value in [*bid_ids, *ask_ids]:
        if value in counted:
            raise _bad(f"id {value!r} is repeated")
        counted.add(value)
    raise _bad("ids are repeated")  # pragma: no cover - the loop above always finds one


def _arrays_are_distinct(bid_ids, ask_ids) -> bool:
    """True when the non-empty sides are NumPy columns of one kind shown free of repeats.

    Integers are decided exactly (`_integers_are_distinct`), strings by a 64-bit hash of their code
    points (`_strings_are_distinct`). False means "not shown distinct here": the caller then checks
    with a set, so a hash collision costs time, never a wrong answer.
    """
    arrays = [ids for ids in (bid_ids, ask_ids) if len(ids)]
    if not all(isinstance(ids, np.ndarray) for ids in arrays):
        return False
    if not arrays:
        return True
    kinds = {ids.dtype.kind for ids in arrays}
    if kinds <= {"i", "u"}:
        return _integers_are_distinct(arrays)
    if kinds == {"U"}:
        return _strings_are_distinct(arrays)
    return False


_INT64_MAX = int(np.iinfo(np.int64).max)


def _integers_are_distinct(arrays: list[np.ndarray]) -> bool:
    """Integer ids, exactly: a dense range (database keys) by one bincount, any other by sorting.

    Offsets and sorting run in int64 when an id is negative and in uint64 otherwise, so int64 and
    uint64 columns mix without overflow; only ids spanning both ranges at once go to the set.
    """
    low = min(int(ids.min()) for ids in arrays)
    high = max(int(ids.max()) for ids in arrays)
    count = sum(len(ids) for ids in arrays)
    if low >= 0:
        dtype = np.uint64
    elif high <= _INT64_MAX:
        dtype = np.int64
    else:
        return False
    if high - low <= 8 * count + 1024:
        base = dtype(low)
        offsets = np.concatenate([(ids.astype(dtype, copy=False) - base).astype(np.int64) for ids in arrays])
        return int(np.bincount(offsets).max()) <= 1
    return _sorted_are_distinct(np.concatenate([ids.astype(dtype, copy=False) for ids in arrays]))


# FNV-1a (Fowler, Noll, Vo) offset basis and prime for 64 bits.
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _strings_are_distinct(arrays: list[np.ndarray]) -> bool:
    """String ids: True when their 64-bit hashes are distinct, which proves the ids are."""
    arrays = [_native(ids) for ids in arrays]
    width = max(_used_width(ids) for ids in arrays)
    hashes = np.concatenate([_string_hashes(ids, width) for ids in arrays])
    return _sorted_are_distinct(hashes)


def _native(ids: np.ndarray) -> np.ndarray:
    """`ids` as a C-contiguous `U` array in native byte order (itself when it already is one)."""
    if ids.flags.c_contiguous and ids.dtype.isnative and ids.dtype.itemsize:
        return ids
    return np.ascontiguousarray(ids, dtype=np.dtype(f"U{max(ids.dtype.itemsize // 4, 1)}"))


# Rows hashed per block: a block of ids stays in cache while all its words are read.
_HASH_BLOCK = 8192


def _used_width(ids: np.ndarray) -> int:
    """Code points in the longest id of a contiguous native `U` array (at most its width).

    A wide dtype (`astype(str)` of int64 gives U21 for ids of a few digits) would otherwise cost a
    hash pass per word of padding. When an id of the first or the last block fills the width, that
    is the answer; otherwise `np.strings.str_len`, which does not count NUL padding, finds it.
    """
    width = ids.dtype.itemsize // 4
    last = np.ndarray(
        (len(ids),), dtype=np.uint32, buffer=ids, offset=4 * (width - 1), strides=(ids.dtype.itemsize,)
    )
    if last[:_HASH_BLOCK].any() or last[-_HASH_BLOCK:].any():
        return width
    return int(np.strings.str_len(ids).max())


def _string_hashes(ids: np.ndarray, width: int) -> np.ndarray:
    """A 64-bit hash of each id of a contiguous native `U` array, as if its width were `width`.

    Each row is read as 8-byte words (two UCS-4 code points) through strided views, so no Python
    string is made. Per word: FNV-1a (xor, multiply; Fowler, Noll, Vo) and then `h ^= h >> 29`,
    which carries the upper half of the word, where the multiply alone would leave it, into the
    lower bits. The last word needs no mixing: for a fixed state the step is a bijection. Rows go
    in blocks of `_HASH_BLOCK` so that a wide array is read from memory once, not once per word.

    Padding: NumPy pads with NUL code points and a NumPy string cannot end with one, so an id gets
    the same words, hence the same hash, in a column of any width; words past `width` (padding in
    every row) are not read, and a side narrower than `width` reads zero words past its end.
    """
    count, itemsize = len(ids), ids.dtype.itemsize
    hashes = np.full(count, _FNV_OFFSET)
    scratch = np.empty(min(count, _HASH_BLOCK), dtype=np.uint64)
    words = (width + 1) // 2
    for start in range(0, count, _HASH_BLOCK):
        rows = min(_HASH_BLOCK, count - start)
        block, mixed = hashes[start : start + rows], scratch[:rows]
        for index in range(words):
            offset = start * itemsize + 8 * index
            if 8 * index + 8 <= itemsize:
                block ^= np.ndarray((rows,), dtype=np.uint64, buffer=ids, offset=offset, strides=(itemsize,))
            elif 8 * index + 4 <= itemsize:  # one code point left: the word's upper half is padding
                block ^= np.ndarray((rows,), dtype=np.uint32, buffer=ids, offset=offset, strides=(itemsize,))
            block *= _FNV_PRIME
            if index < words - 1:
                np.right_shift(block, 29, out=mixed)
                block ^= mixed
    return hashes


def _sorted_are_distinct(values: np.ndarray) -> bool:
    """Sorts `values` in place and tells whether no two are equal."""
    values.sort()
    return not bool((values[1:] == values[:-1]).any())


def _read_support(doc: dict) -> tuple[float, float] | None:
    if "support" not in doc:
        return None
    support = doc["support"]
    if not isinstance(support, dict) or "min_bid" not in support or "max_ask" not in support:
        raise _bad("support must be an object with min_bid and max_ask")
    bounds = _read_numbers([support["min_bid"], support["max_ask"]], "support")
    return float(bounds[0]), float(bounds[1])


def _read_seed(doc: dict) -> int:
    seed = doc.get("seed", 0)
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, int | np.integer):
        raise _bad("seed must be an integer")
    if seed < 0:
        raise _bad("seed must not be negative")
    return int(seed)
