"""The agent's backends and HTTP client, without the exchange: the simulation, the OpenAI backend
against a test double of the provider's own inference server, retries and error codes."""

import json
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workers.agent.__main__ import parse_args
from workers.agent.backends import (
    JobError,
    OpenAIBackend,
    ProviderFault,
    SimulateBackend,
    Stopped,
    load_replay_prompt,
)
from workers.agent.client import AgentClient, ApiError, Unavailable


class FakeOpenAIServer:
    """A TEST DOUBLE of the provider's own OpenAI-compatible server (vLLM, llama.cpp, Ollama): it
    stands for a system outside CPX. It answers /v1/completions and /v1/chat/completions with usage
    counted as one token per prompt word and `max_tokens` completion tokens, or fails as told."""

    def __init__(self, *, fail_status: int | None = None):
        self.requests: list[tuple[str, dict]] = []
        self.fail_status = fail_status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body))
                if outer.fail_status:
                    return self._send(outer.fail_status, {"error": {"message": "told to fail"}})
                if self.path == "/v1/completions":
                    prompt = body["prompt"]
                elif self.path == "/v1/chat/completions":
                    prompt = body["messages"][-1]["content"]
                else:
                    return self._send(404, {"error": {"message": "no such route"}})
                usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": body["max_tokens"]}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                self._send(
                    200, {"id": "cmpl-test", "object": "text_completion", "choices": [], "usage": usage}
                )

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def lease_doc(**overrides) -> dict:
    lease = {
        "id": 7,
        "resource": 3,
        "devices": 1,
        "resource_device_count": 1,
        "expected_device_hours": "0.001000",
        "max_device_hours": "1.000000",
        "allocated_device_seconds": "3600.000000",
        "job": {
            "id": 11,
            "kind": "INFERENCE",
            "model_name": "llama-2-7b",
            "workload_tokens": 3000,
            "context_length": 4096,
        },
    }
    job = overrides.pop("job", {})
    lease.update(overrides)
    lease["job"] = {**lease["job"], **job}
    return lease


class TestSimulateBackend:
    def test_runs_for_the_expected_time_over_the_speedup_and_reports_usage_in_proportion(self):
        reports = []

        usage = SimulateBackend(speedup=36, tick_s=0.01).run(lease_doc(), reports.append, threading.Event())

        assert (usage.progress, usage.device_seconds) == (1.0, Decimal("3.600"))
        assert usage.tokens_in + usage.tokens_out == 3000
        assert reports and all(r.device_seconds <= usage.device_seconds for r in reports)
        assert [r.progress for r in reports] == sorted(r.progress for r in reports)

    def test_never_reports_beyond_the_allocation(self):
        lease = lease_doc(expected_device_hours="2", allocated_device_seconds="10")

        usage = SimulateBackend(speedup=10**6).run(lease, lambda u: None, threading.Event())

        assert usage.device_seconds == Decimal("10")

    def test_stops_when_told(self):
        stop = threading.Event()
        stop.set()

        with pytest.raises(Stopped):
            SimulateBackend(speedup=1).run(lease_doc(), lambda u: None, stop)

    def test_marks_itself_as_a_simulation(self):
        assert SimulateBackend().simulated is True and OpenAIBackend("http://x").simulated is False


class TestOpenAIBackend:
    def test_replays_the_workload_against_the_completions_endpoint(self):
        with FakeOpenAIServer() as server:
            usage = OpenAIBackend(server.url, chunk_tokens=1024).run(
                lease_doc(), lambda u: None, threading.Event()
            )

        assert len(server.requests) == 3  # 3000 tokens in chunks of 1024
        path, body = server.requests[0]
        assert (path, body["model"], body["stream"], body["max_tokens"]) == (
            "/v1/completions",
            "llama-2-7b",
            False,
            512,
        )
        assert usage.progress == 1.0
        assert usage.tokens_in == sum(len(b["prompt"].split()) for _, b in server.requests)
        assert usage.tokens_out == sum(b["max_tokens"] for _, b in server.requests)

    def test_uses_chat_completions_and_the_servers_model_name_when_told(self):
        with FakeOpenAIServer() as server:
            OpenAIBackend(server.url + "/v1", chat=True, model="llama3:8b").run(
                lease_doc(job={"workload_tokens": 100}), lambda u: None, threading.Event()
            )

        [(path, body)] = server.requests
        assert (path, body["model"]) == ("/v1/chat/completions", "llama3:8b")

    def test_the_replayed_prompts_are_deterministic(self):
        assert load_replay_prompt(lease_id=1, job_id=2, index=3, words=50) == load_replay_prompt(
            lease_id=1, job_id=2, index=3, words=50
        )
        assert len(load_replay_prompt(lease_id=1, job_id=2, index=3, words=50).split()) == 50

    def test_runs_inference_only(self):
        with pytest.raises(JobError, match="backend openai runs inference only"):
            OpenAIBackend("http://127.0.0.1:9").run(
                lease_doc(job={"kind": "TRAINING"}), lambda u: None, threading.Event()
            )

    def test_a_request_the_server_refuses_is_a_job_error(self):
        with FakeOpenAIServer(fail_status=400) as server, pytest.raises(JobError):
            OpenAIBackend(server.url).run(lease_doc(), lambda u: None, threading.Event())

    def test_a_failing_server_is_a_provider_fault(self):
        with FakeOpenAIServer(fail_status=503) as server, pytest.raises(ProviderFault):
            OpenAIBackend(server.url, retries=1).run(lease_doc(), lambda u: None, threading.Event())

    def test_an_unreachable_server_is_a_provider_fault(self):
        with FakeOpenAIServer() as server:
            url = server.url
        with pytest.raises(ProviderFault, match="unreachable"):
            OpenAIBackend(url, retries=0).run(lease_doc(), lambda u: None, threading.Event())


class FakeExchange(FakeOpenAIServer):
    """A scripted stand-in for the CPX API: answers each request with the next (status, body)."""

    def __init__(self, script):
        super().__init__()
        self.script = list(script)
        handler = self.server.RequestHandlerClass
        outer = self

        def answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            outer.requests.append((self.path, self.rfile.read(length)))
            status, payload = outer.script.pop(0)
            self._send(status, payload)

        handler.do_POST = answer
        handler.do_GET = answer


class TestAgentClient:
    def test_retries_unavailable_answers_and_then_succeeds(self):
        script = [(503, {}), (429, {}), (200, {"running": [], "closed": []})]
        with FakeExchange(script) as exchange:
            client = AgentClient(exchange.url, "cpx_a_b", sleep=lambda s: None)

            assert client.heartbeat() == {"running": [], "closed": []}

        assert len(exchange.requests) == 3
        assert exchange.requests[0][0] == "/api/v1/agent/heartbeat"

    def test_raises_the_exchanges_error_code_at_once(self):
        error_body = {"code": "lease_already_closed", "message": "closed", "extra": {"status": "COMPLETED"}}
        with FakeExchange([(409, error_body)]) as exchange:
            client = AgentClient(exchange.url, "cpx_a_b", sleep=lambda s: None)

            with pytest.raises(ApiError) as error:
                client.complete(1, tokens_in=1, tokens_out=1, device_seconds=Decimal("1"))

        assert (error.value.status, error.value.code, error.value.extra["status"]) == (
            409,
            "lease_already_closed",
            "COMPLETED",
        )
        assert len(exchange.requests) == 1

    def test_waits_on_the_offer_channel(self):
        with FakeExchange([(200, [{"id": 7}])]) as exchange:
            client = AgentClient(exchange.url, "cpx_a_b", sleep=lambda s: None)

            assert client.poll(wait=5) == [{"id": 7}]

        assert exchange.requests[0][0] == "/api/v1/agent/offers?wait=5"

    def test_falls_back_to_the_sync_long_poll_on_an_exchange_without_the_channel(self):
        no_such_path = {"code": "not_found", "message": "No such API path.", "extra": {"path": "/x"}}
        with FakeExchange([(404, no_such_path), (200, []), (200, [])]) as exchange:
            client = AgentClient(exchange.url, "cpx_a_b", sleep=lambda s: None)

            assert client.poll(wait=5) == []
            assert client.poll(wait=5) == []

        assert [path for path, *_ in exchange.requests] == [
            "/api/v1/agent/offers?wait=5",
            "/api/v1/agent/leases?wait=5",
            "/api/v1/agent/leases?wait=5",
        ]

    def test_an_unregistered_provider_is_not_taken_for_a_missing_channel(self):
        no_profile = {"code": "not_found", "message": "Register your provider profile first.", "extra": {}}
        with FakeExchange([(404, no_profile)]) as exchange:
            client = AgentClient(exchange.url, "cpx_a_b", sleep=lambda s: None)

            with pytest.raises(ApiError):
                client.poll(wait=5)

        assert client.offer_channel

    def test_gives_up_on_an_unreachable_exchange(self):
        with FakeExchange([]) as exchange:
            url = exchange.url
        client = AgentClient(url, "cpx_a_b", retries=2, sleep=lambda s: None)

        with pytest.raises(Unavailable):
            client.poll(wait=0)


class TestCommandLine:
    def test_parses_the_documented_options(self):
        args = parse_args(
            ["--api", "http://x", "--key", "cpx_a_b", "--backend", "simulate", "--once", "--speedup", "60"]
        )

        assert (args.backend, args.once, args.speedup) == ("simulate", True, 60.0)

    @pytest.mark.parametrize(
        "argv",
        [
            ["--api", "http://x", "--key", "k", "--backend", "openai"],
            ["--api", "http://x", "--key", "k", "--backend", "gpu"],
            ["--api", "http://x", "--key", "k", "--backend", "simulate", "--speedup", "0"],
        ],
    )
    def test_refuses_bad_options(self, argv):
        with pytest.raises(SystemExit):
            parse_args(argv)
