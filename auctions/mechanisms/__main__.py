"""Command line: `python -m auctions.mechanisms clear|price FILE|-` prints one JSON document.

Exit 0 with the result; exit 2 with `{"error": {"code", "message"}}` on bad input or when no
answer exists. A thin wrapper around `clear` and `price`. `clear FILE --replay RESULT` re-runs a book
as `clear(doc, replay=result)` does: the solves the original run's wall-clock guard cut are cut again.
"""

import contextlib
import json
import os
import sys

from auctions.mechanisms import clear, price
from auctions.mechanisms.errors import MechanismError

USAGE = "usage: python -m auctions.mechanisms clear|price FILE|- [--replay RESULT] (clear only)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        replay = len(argv) == 4 and argv[0] == "clear" and argv[2] == "--replay"
        if not (len(argv) == 2 or replay) or argv[0] not in ("clear", "price"):
            raise MechanismError("usage", USAGE)
        command, source = argv[:2]
        doc = _read(source)
        recorded = _read(argv[3]) if replay else None
        with _stdout_to_stderr():
            result = clear(doc, replay=recorded) if command == "clear" else price(doc)
    except MechanismError as error:
        _print(error.as_document())
        return 2
    _print(result)
    return 0


def _read(source: str):
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise MechanismError("usage", f"cannot read {source}: {error}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise MechanismError("bad_json", f"not valid JSON: {error}") from None


@contextlib.contextmanager
def _stdout_to_stderr():
    """Solvers (HiGHS) sometimes write to file descriptor 1 from C; keep standard output for the
    one JSON document by pointing fd 1 at standard error while the engine runs."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _print(document) -> None:
    sys.stdout.write(json.dumps(document, allow_nan=False))
    sys.stdout.write("\n")


if __name__ == "__main__":
    sys.exit(main())
