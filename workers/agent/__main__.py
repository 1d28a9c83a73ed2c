"""python -m workers.agent --api URL --key KEY --backend openai|simulate [options]"""

import argparse
import logging
import os
import signal
import sys

from workers.agent.backends import make_backend
from workers.agent.client import AgentClient
from workers.agent.runner import Agent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers.agent", description="CPX provider agent")
    parser.add_argument("--api", required=True, help="the exchange, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--key", default=os.environ.get("CPX_AGENT_KEY"), help="provider API key (or CPX_AGENT_KEY)"
    )
    parser.add_argument("--backend", choices=["openai", "simulate"], required=True)
    parser.add_argument(
        "--openai-url", help="the provider's OpenAI-compatible server, e.g. http://127.0.0.1:8001"
    )
    parser.add_argument("--openai-model", help="model name the server knows (default: the job's model_name)")
    parser.add_argument("--openai-chat", action="store_true", help="use /v1/chat/completions")
    parser.add_argument("--chunk-tokens", type=int, default=1024, help="tokens per replayed request")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="batch jobs: requests in flight to the server at once"
    )
    parser.add_argument(
        "--verify-models",
        default="",
        help="comma-separated models this server serves: also re-run other providers' spot checks of them",
    )
    parser.add_argument("--once", action="store_true", help="one poll; run what it offers; exit")
    parser.add_argument("--poll-wait", type=float, default=20.0, help="long-poll seconds")
    parser.add_argument("--heartbeat", type=float, default=None, help="seconds between heartbeats")
    parser.add_argument(
        "--speedup",
        type=float,
        default=float(os.environ.get("CPX_SIMULATION_SPEEDUP", "600")),
        help="simulate: simulated seconds per real second",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("--key (or CPX_AGENT_KEY) is required")
    if args.backend == "openai" and not args.openai_url:
        parser.error("--openai-url is required with --backend openai")
    if not args.speedup > 0:
        parser.error("--speedup must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = {}
    if args.backend == "openai":
        options = {
            "model": args.openai_model,
            "chat": args.openai_chat,
            "chunk_tokens": args.chunk_tokens,
            "concurrency": args.concurrency,
        }
    backend = make_backend(args.backend, openai_url=args.openai_url, speedup=args.speedup, **options)
    agent = Agent(
        AgentClient(args.api, args.key),
        backend,
        poll_wait_s=args.poll_wait,
        heartbeat_s=args.heartbeat,
        once=args.once,
        verify_models=tuple(m.strip() for m in args.verify_models.split(",") if m.strip()),
    )

    def shut_down(signum, frame):
        logging.getLogger("cpx.agent").info("signal %s: shutting down", signum)
        agent.stopping.set()
        for run in list(agent.runs.values()):
            run.stop.set()

    signal.signal(signal.SIGINT, shut_down)
    signal.signal(signal.SIGTERM, shut_down)
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
