"""Batch inference through the exchange against the same requests sent straight to the server: the
provider agent's overhead as a ratio (issue 10).

A tiny random-weight Llama model is written with `gguf` (tests/llm.py) and served by llama-cpp-python's
OpenAI-compatible server (requirements-llm.txt). A JSONL file of --requests chat requests is then run
--repeat times each way, alternating:

- direct: the same request bodies POSTed straight to the server by a pool of --concurrency threads
  (what a provider would get running its server by hand);
- through CPX: the consumer's file is uploaded (checked, hashed, stored) and submitted as a job with
  a lease on the provider, and the real agent (`workers.agent`, openai backend, --concurrency in
  flight) polls, accepts, downloads the input with its lease, runs every request, sends the results
  in batches, and completes; the exchange writes the output and error files and settles by tokens.
  Timed from the agent's start to the lease's completion.

The exchange is Django behind its threaded WSGI server on a fresh SQLite database and file store in a
temporary directory (DATABASE_URL is ignored: a bench never writes into a real database).
Prints requests/s min/median/max each way and the ratio of the medians.

Usage: .venv/bin/python bench/llm_batch.py [--requests 200] [--concurrency 4] [--repeat 3] [--max-tokens 16]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = "tiny-llama"


def setup_django(workdir: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench-llm.sqlite3'}"
    os.environ["CPX_DATA_DIR"] = str(workdir / "data")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ["CPX_LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)


def batch_file(count: int, max_tokens: int) -> bytes:
    lines = []
    for index in range(1, count + 1):
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Say something about edge power {index}."}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        lines.append(
            json.dumps(
                {"custom_id": f"r{index}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            )
        )
    return ("\n".join(lines) + "\n").encode()


def run_direct(url: str, data: bytes, concurrency: int) -> float:
    import requests

    local = threading.local()

    def one(line: bytes) -> int:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        item = json.loads(line)
        return session.post(url + item["url"], json=item["body"], timeout=120).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        codes = list(pool.map(one, data.splitlines()))
    elapsed = time.perf_counter() - started
    assert codes.count(200) == len(codes), f"direct: {len(codes) - codes.count(200)} requests failed"
    return len(codes) / elapsed


def run_through_cpx(index: int, web_url: str, llm_url: str, data: bytes, concurrency: int) -> float:
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone
    from eth_utils import to_checksum_address

    from auctions.models import BatchResult, Lease, Round
    from market.models import User
    from market.services.accounts import api_key_create
    from market.services.files import file_upload
    from market.services.jobs import job_request_submit, job_request_transition
    from market.services.ledger import ledger_deposit
    from market.services.providers import provider_register, resource_create
    from workers.agent.backends import OpenAIBackend
    from workers.agent.client import AgentClient
    from workers.agent.runner import Agent

    now = timezone.now()
    consumer = User.objects.create(username=f"bench-consumer-{index}", role=User.Role.CONSUMER)
    ledger_deposit(user=consumer, amount=Decimal("1000"), now=now)
    user = User.objects.create(username=f"bench-provider-{index}", role=User.Role.PROVIDER)
    provider = provider_register(
        user=user,
        display_name=f"Bench {index}",
        wallet_address=to_checksum_address(f"0x{index + 1:040x}"),
        region="eu-west",
    )
    resource = resource_create(
        provider=provider,
        device_class="GPU",
        model_name="RTX 4090",
        device_count=1,
        memory_per_device_gib=Decimal("24"),
        host_ram_gib=Decimal("64"),
        vcpu=16,
        fp16_tflops=Decimal("82.6"),
        ask_per_device_hour=Decimal("0.5"),
        price_floor=Decimal("0.1"),
    )
    data_file = file_upload(
        owner=consumer, purpose="batch", upload=SimpleUploadedFile("b.jsonl", data), now=now
    )
    spec = {
        "kind": "INFERENCE",
        "model_name": MODEL,
        "params_billion": Decimal("0.001"),
        "quant_bits": 16,
        "context_length": 512,
        "batch_size": 1,
        "device_class": "GPU",
        "max_price_per_device_hour": Decimal("1"),
        "budget": Decimal("10"),
        "deadline": now + timedelta(days=1),
        "region": "eu-west",
        "input_file_id": data_file.public_id,
    }
    job, _ = job_request_submit(consumer=consumer, spec=spec, now=now)
    round_ = Round.objects.create(
        status=Round.Status.CLEARED, active_slot=None, opened_at=now, cleared_at=now
    )
    job_request_transition(job=job, from_statuses=("QUEUED",), to="MATCHED", now=now)
    lease = Lease.objects.create(
        round=round_,
        job=job,
        resource=resource,
        provider=provider,
        devices=1,
        resource_class="GPU:RTX 4090",
        unit_price_paid=Decimal("0.8"),
        unit_price_received=Decimal("0.5"),
        max_device_hours=Decimal("12.5"),
        expected_device_hours=Decimal("0.5"),
        dispatched_at=now,
    )
    _, key = api_key_create(user=user, role="provider", now=now)
    agent = Agent(
        AgentClient(web_url, key), OpenAIBackend(llm_url, concurrency=concurrency), poll_wait_s=1, once=True
    )
    started = time.perf_counter()
    agent.run()
    elapsed = time.perf_counter() - started
    lease.refresh_from_db()
    done = BatchResult.objects.filter(job=job, status_code=200).count()
    assert lease.status == "COMPLETED" and done == data.count(b"\n"), (lease.status, done)
    return done / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    from tests.llm import llama_cpp_available, llama_server, write_tiny_gguf

    if not llama_cpp_available():
        print("needs llama-cpp-python[server] and gguf: pip install -r requirements-llm.txt", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cpx-bench-llm-") as tmp:
        workdir = Path(tmp)
        setup_django(workdir)
        from workers.simulation import WebServer

        model = write_tiny_gguf(workdir / "tiny.gguf", seed=1, name=MODEL)
        data = batch_file(args.requests, args.max_tokens)
        web = WebServer(port=0).start()
        try:
            with llama_server(model, alias=MODEL) as llm_url:
                run_direct(llm_url, data[: data.index(b"\n") + 1] * 4, args.concurrency)  # warm up
                direct, through = [], []
                for index in range(args.repeat):
                    direct.append(run_direct(llm_url, data, args.concurrency))
                    through.append(run_through_cpx(index, web.url, llm_url, data, args.concurrency))
        finally:
            web.stop()
    print(
        f"{args.requests} chat requests, max_tokens {args.max_tokens}, concurrency {args.concurrency}, "
        f"{args.repeat} repeats (llama.cpp server, tiny random-weight model, 1 thread)"
    )
    for name, values in (("direct to the server", direct), ("through CPX + agent", through)):
        print(
            f"  {name:22s} requests/s  min {min(values):7.1f}  median {statistics.median(values):7.1f}  "
            f"max {max(values):7.1f}"
        )
    ratio = statistics.median(through) / statistics.median(direct)
    print(f"  agent throughput / direct (medians): {ratio:.2f}  (overhead {100 * (1 - ratio):.0f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
