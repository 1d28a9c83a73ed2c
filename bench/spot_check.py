"""Spot-check detection rate over seeded trials (issue 10), on real llama.cpp servers.

Three llama-cpp-python servers answer under one model name: the honest provider's (tiny model, seed
1), a verifier's (the same weights, another process) and a cheaper model's (seed 2). Each trial t
(seeded by t) makes a batch of --n greedy chat requests (temperature 0, prompts drawn from a word
list), takes its honest answers, and builds what three providers would return: honest; another
model for every request; the honest answers with --m of them replaced by fabricated text. Each is
then checked by the service's own rule (auctions.services.verification: the HMAC-seeded sample of k
= --k requests, re-run by the verifier at temperature 0, exact match of the generated text).
Prints the detection rate per provider over the trials beside the expected rate (for m altered of n,
1 - C(n-m, k) / C(n, k)), and the honest provider's false-positive rate.

Usage: .venv/bin/python bench/spot_check.py [--trials 50] [--n 20] [--m 4] [--k 3]
"""

import argparse
import math
import os
import random
import sys
import tempfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = "tiny-llama"
WORDS = "edge power token model round price lease agent market cluster batch proof stake verify".split()


def ask(session, url: str, content: str) -> dict:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 12,
        "temperature": 0,
    }
    answer = session.post(url + "/v1/chat/completions", json=body, timeout=60)
    answer.raise_for_status()
    return answer.json()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--n", type=int, default=20, help="requests per batch")
    parser.add_argument("--m", type=int, default=4, help="requests a partial cheater fabricates")
    parser.add_argument("--k", type=int, default=3, help="requests re-run per check")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ["DATABASE_URL"] = "sqlite:///:memory:"  # nothing is written: the rule's functions only
    import django

    django.setup()
    from auctions.services.verification import generated_text, verification_sample
    from tests.llm import llama_cpp_available, llama_server, write_tiny_gguf

    if not llama_cpp_available():
        print("needs llama-cpp-python[server] and gguf: pip install -r requirements-llm.txt", file=sys.stderr)
        return 2
    detected = {"honest": 0, "other model": 0, f"{args.m} of {args.n} fabricated": 0}
    session = requests.Session()
    with tempfile.TemporaryDirectory(prefix="cpx-bench-spot-") as tmp:
        honest_model = write_tiny_gguf(Path(tmp) / "a.gguf", seed=1)
        other_model = write_tiny_gguf(Path(tmp) / "b.gguf", seed=2)
        with (
            llama_server(honest_model, alias=MODEL) as honest_url,
            llama_server(honest_model, alias=MODEL) as verifier_url,
            llama_server(other_model, alias=MODEL) as other_url,
        ):
            for trial in range(args.trials):
                rng = random.Random(trial)
                prompts = {
                    f"t{trial}-r{i}": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
                    for i in range(args.n)
                }
                honest = {cid: ask(session, honest_url, text) for cid, text in prompts.items()}
                fabricated = dict(honest)
                for cid in rng.sample(sorted(prompts), args.m):
                    fabricated[cid] = {"choices": [{"message": {"content": "Plausible prose."}}]}
                returned = {
                    "honest": honest,
                    "other model": {cid: ask(session, other_url, text) for cid, text in prompts.items()},
                    f"{args.m} of {args.n} fabricated": fabricated,
                }
                # The lease id seeds the sample; the trial number stands for it here.
                sample = verification_sample(lease_id=trial, eligible=sorted(prompts), k=args.k)
                rerun = {cid: generated_text(ask(session, verifier_url, prompts[cid])) for cid in sample}
                for name, answers in returned.items():
                    if any(generated_text(answers[cid]) != rerun[cid] for cid in sample):
                        detected[name] += 1
    expected = {
        "honest": 0.0,
        "other model": 1.0,
        f"{args.m} of {args.n} fabricated": 1
        - math.comb(args.n - args.m, args.k) / math.comb(args.n, args.k),
    }
    print(f"{args.trials} seeded trials, {args.n} greedy requests per batch, k = {args.k} re-run per check")
    for name, count in detected.items():
        rate = count / args.trials
        print(f"  {name:22s} caught {count:3d} / {args.trials} = {rate:5.0%}  expected {expected[name]:5.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
