"""The OpenAI Batch input format, checked line by line: what CPX accepts, and what it learns from a
file (the requests' ids, their max_tokens, the prompt-size estimate and bound that size and meter it).

A line is `{"custom_id": str, "method": "POST", "url": "/v1/chat/completions" | "/v1/completions",
"body": {...}}`; every body names the same `model`; a chat body has a non-empty `messages` list of
`{"role", "content": str}`, a completion body a non-empty `prompt` string; `max_tokens` (optional,
CPX_BATCH_DEFAULT_MAX_TOKENS when absent) is a whole number ≥ 1; `n` is 1 and `stream` is not true
(one completion per request, so usage can be checked against max_tokens).

Prompt tokens, before any tokenizer is known (a stated estimate, used for sizing and the quote):
    estimate = ceil(UTF-8 bytes of the prompt text / 4) + 4 per message
and the bound a provider's reported `usage.prompt_tokens` must respect (no tokenizer makes more than
one token per byte; a chat template adds its markers per message and a preamble and reply primer per
request — ChatML spelled out byte by byte, the worst case, adds 93 tokens to a one-message chat):
    bound    = UTF-8 bytes of the prompt text + 48 per message + 128
Pure functions: no database, no storage.
"""

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from config.errors import DomainError

URLS = ("/v1/chat/completions", "/v1/completions")
ROLES = ("system", "user", "assistant", "developer", "tool")
LINE_KEYS = {"custom_id", "method", "url", "body"}
MAX_CUSTOM_ID = 64
MAX_TOKENS_LIMIT = 1_000_000
ESTIMATE_BYTES_PER_TOKEN = 4
ESTIMATE_PER_MESSAGE = 4
BOUND_PER_MESSAGE = 48
BOUND_PER_REQUEST = 128


class BatchLineInvalid(DomainError):
    """One line of a batch file breaks the format; `extra.line` is its 1-based number."""

    code = "batch_line_invalid"
    status = 400


class BatchTooManyLines(DomainError):
    code = "batch_too_many_lines"
    status = 400


class BatchEmpty(DomainError):
    code = "batch_empty"
    status = 400


@dataclass(frozen=True)
class BatchRequest:
    line: int
    custom_id: str
    url: str
    max_tokens: int
    prompt_bytes: int
    messages: int
    greedy: bool = False  # temperature 0 stated: its output is reproducible, so spot-checkable

    @property
    def prompt_estimate(self) -> int:
        return math.ceil(self.prompt_bytes / ESTIMATE_BYTES_PER_TOKEN) + ESTIMATE_PER_MESSAGE * self.messages

    @property
    def prompt_bound(self) -> int:
        return self.prompt_bytes + BOUND_PER_MESSAGE * self.messages + BOUND_PER_REQUEST


@dataclass
class BatchSummary:
    model: str = ""
    requests: list[BatchRequest] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return len(self.requests)

    @property
    def prompt_tokens_estimate(self) -> int:
        return sum(r.prompt_estimate for r in self.requests)

    @property
    def max_tokens_total(self) -> int:
        return sum(r.max_tokens for r in self.requests)

    def by_custom_id(self) -> dict[str, BatchRequest]:
        return {r.custom_id: r for r in self.requests}


def _bad(line: int, message: str) -> BatchLineInvalid:
    return BatchLineInvalid(f"Line {line}: {message}", line=line)


def batch_parse(lines: Iterable[bytes], *, max_lines: int, default_max_tokens: int) -> BatchSummary:
    """Check every line of an OpenAI Batch JSONL file; the summary of a good one.

    Raises BatchLineInvalid naming the first bad line, BatchTooManyLines, BatchEmpty.
    """
    summary = BatchSummary()
    seen: dict[str, int] = {}
    number = 0
    for number, raw in enumerate(lines, start=1):  # noqa: B007 - number is read after the loop
        text = raw.rstrip(b"\r\n")
        if not text.strip():
            raise _bad(number, "is empty (one request per line, no blank lines).")
        if len(summary.requests) >= max_lines:
            raise BatchTooManyLines(f"A batch file holds at most {max_lines} requests.", max_lines=max_lines)
        request = _parse_line(number, text, summary, seen, default_max_tokens)
        seen[request.custom_id] = number
        summary.requests.append(request)
    if not summary.requests:
        raise BatchEmpty("The batch file holds no requests.")
    return summary


def _parse_line(number: int, text: bytes, summary: BatchSummary, seen: dict, default_max_tokens: int):
    try:
        item = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise _bad(number, f"is not valid JSON ({error}).") from None
    if not isinstance(item, dict):
        raise _bad(number, "is not a JSON object.")
    if set(item) != LINE_KEYS:
        missing, unknown = sorted(LINE_KEYS - set(item)), sorted(set(item) - LINE_KEYS)
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(unknown)}" if unknown else "",
            )
            if part
        )
        raise _bad(number, f"has the keys custom_id, method, url, body ({detail}).")
    custom_id = item["custom_id"]
    if (
        not isinstance(custom_id, str)
        or not 1 <= len(custom_id) <= MAX_CUSTOM_ID
        or not custom_id.isprintable()
    ):
        raise _bad(number, f"custom_id is a printable string of 1 to {MAX_CUSTOM_ID} characters.")
    if custom_id in seen:
        raise _bad(number, f"custom_id {custom_id!r} repeats line {seen[custom_id]}.")
    if item["method"] != "POST":
        raise _bad(number, 'method is "POST".')
    url = item["url"]
    if url not in URLS:
        raise _bad(number, f"url is one of {', '.join(URLS)}.")
    body = item["body"]
    if not isinstance(body, dict):
        raise _bad(number, "body is a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > 100:
        raise _bad(number, "body.model names the model (1 to 100 characters).")
    if summary.model and model != summary.model:
        raise _bad(
            number, f"body.model is {model!r}, but line 1 names {summary.model!r}: one model per file."
        )
    summary.model = summary.model or model
    max_tokens = body.get("max_tokens", default_max_tokens)
    if (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        raise _bad(number, f"body.max_tokens is a whole number from 1 to {MAX_TOKENS_LIMIT}.")
    if body.get("n", 1) != 1:
        raise _bad(number, "body.n is 1 (one completion per request).")
    if body.get("stream", False) is not False:
        raise _bad(number, "body.stream is false: batch requests are not streamed.")
    if url == "/v1/chat/completions":
        prompt_bytes, messages = _chat_size(number, body.get("messages"))
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _bad(number, "body.prompt is a non-empty string.")
        prompt_bytes, messages = len(prompt.encode()), 0
    greedy = body.get("temperature") == 0 and not isinstance(body.get("temperature"), bool)
    return BatchRequest(number, custom_id, url, max_tokens, prompt_bytes, messages, greedy)


def _chat_size(number: int, messages) -> tuple[int, int]:
    if not isinstance(messages, list) or not messages:
        raise _bad(number, "body.messages is a non-empty list.")
    size = 0
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise _bad(number, f"body.messages[{index}].role is one of {', '.join(ROLES)}.")
        content = message.get("content")
        if not isinstance(content, str):
            raise _bad(number, f"body.messages[{index}].content is a string.")
        size += len(content.encode())
    return size, len(messages)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")
