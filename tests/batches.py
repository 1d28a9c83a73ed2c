"""OpenAI Batch input files for the tests (issue 10)."""

import json

MODEL = "tiny-llama"


def batch_line(index: int, *, model: str = MODEL, chat: bool = True, max_tokens: int | None = 8, **body) -> dict:
    request = {"model": model, **body}
    if max_tokens is not None:
        request["max_tokens"] = max_tokens
    if chat:
        request.setdefault("messages", [{"role": "user", "content": f"Say something about edge power {index}."}])
        url = "/v1/chat/completions"
    else:
        request.setdefault("prompt", f"Edge power, part {index}:")
        url = "/v1/completions"
    return {"custom_id": f"request-{index}", "method": "POST", "url": url, "body": request}


def batch_jsonl(count: int, **options) -> bytes:
    return "".join(json.dumps(batch_line(i, **options)) + "\n" for i in range(1, count + 1)).encode()
