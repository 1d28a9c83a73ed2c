"""`cpx_round clear` opens and clears a round now; `cpx_round list [--limit N]` lists rounds;
`cpx_round replay ID` re-runs a round from its snapshot and compares hashes (exit 0 match, 1 mismatch,
2 unknown round); `cpx_round replay --file SNAPSHOT [--result RESULT]` does the same offline for a
snapshot downloaded from GET /api/v1/rounds/{id}/snapshot (no database read; exit 2 for a file that
is not a snapshot). With settlement on chain, `replay ID` also checks the round's hashes committed on
chain (`chain.status`: match, mismatch, not_committed, unavailable, off); a mismatch exits 1, and so does a
round not committed under `--require-chain`."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from auctions.selectors.rounds import round_list
from auctions.services.replays import snapshot_replay
from auctions.services.rounds import RoundNotFound, round_clear, round_open
from config.errors import DomainError
from contracts.services.round_commitments import round_replay_on_chain


class Command(BaseCommand):
    help = "Rounds: clear one now, list them, or replay one from its published snapshot."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("clear", help="open a round (or take the active one) and clear it now")
        listing = sub.add_parser("list", help="the latest rounds, newest first")
        listing.add_argument("--limit", type=int, default=20)
        replay = sub.add_parser("replay", help="recompute a round from its snapshot; exit 1 on mismatch")
        replay.add_argument("round_id", type=int, nargs="?", help="a round in this database")
        replay.add_argument("--file", help="a snapshot downloaded from GET /api/v1/rounds/{id}/snapshot")
        replay.add_argument("--result", help="its result (GET /api/v1/rounds/{id}/result), to compare too")
        replay.add_argument(
            "--require-chain", action="store_true", help="exit 1 unless the chain holds matching hashes"
        )

    def handle(self, *args, action, **options):
        if action == "clear":
            return self._clear()
        if action == "list":
            return self._list(options["limit"])
        if options["file"]:
            return self._replay_file(options["file"], options["result"])
        if options["round_id"] is None:
            raise CommandError("replay needs a round id or --file SNAPSHOT")
        return self._replay(options["round_id"], options["require_chain"])

    def _clear(self):
        now = timezone.now()
        try:
            round_obj = round_clear(round_id=round_open(now=now).pk, now=now)
        except DomainError as error:
            raise CommandError(f"{error.code}: {error.message}") from None
        self.stdout.write(
            f"round {round_obj.pk} {round_obj.status}: jobs {round_obj.jobs_in_book}, "
            f"resources {round_obj.resources_in_book}, matched {round_obj.jobs_matched}, "
            f"welfare {round_obj.welfare}, timings_ms {json.dumps(round_obj.timings_ms)}"
            + (f", error {round_obj.error}" if round_obj.error else "")
        )
        for resource_class, prices in sorted(round_obj.prices.items()):
            self.stdout.write(
                f"  {resource_class}: traded {prices['traded']} buyer {prices['buyer_price']} "
                f"seller {prices['seller_price']}"
            )

    def _list(self, limit: int):
        for round_obj in round_list()[: max(1, limit)]:
            self.stdout.write(
                f"{round_obj.pk}\t{round_obj.status}\t{round_obj.opened_at:%Y-%m-%d %H:%M:%S}\t"
                f"jobs {round_obj.jobs_in_book}\tmatched {round_obj.jobs_matched}\t"
                f"welfare {round_obj.welfare}\t{round_obj.snapshot_sha256[:12]}"
            )

    def _replay(self, round_id: int, require_chain: bool = False):
        try:
            report = round_replay_on_chain(round_id=round_id)
        except RoundNotFound:
            self.stderr.write(json.dumps({"round": round_id, "error": "no such round"}))
            sys.exit(2)
        self.stdout.write(json.dumps(report, indent=2))
        chain = report["chain"]["status"]
        self.stderr.write(
            f"round {round_id}: replay {'matches' if report['match'] else 'DOES NOT match'}; "
            f"on chain: {chain.replace('_', ' ')}"
        )
        ok = report["match"] and chain != "mismatch" and (chain == "match" or not require_chain)
        sys.exit(0 if ok else 1)

    def _replay_file(self, path: str, result_path: str | None):
        try:
            snapshot = _read_json(path)
            result = _read_json(result_path) if result_path else None
            report = snapshot_replay(snapshot=snapshot, result=result)
        except (OSError, ValueError, DomainError) as error:
            self.stderr.write(json.dumps({"file": path, "error": getattr(error, "message", str(error))}))
            sys.exit(2)
        self.stdout.write(json.dumps(report, indent=2))
        verdict = "hashes match" if report["match"] else "hashes DO NOT match"
        self.stderr.write(f"round {report['round']}: {verdict}")
        sys.exit(0 if report["match"] else 1)


def _read_json(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
