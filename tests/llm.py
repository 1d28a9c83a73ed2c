"""A real LLM inference server for the tests (issue 10): llama-cpp-python's OpenAI-compatible server
on a tiny random-weight Llama model that the tests write themselves with the `gguf` package (no model
can be downloaded here). At temperature 0 the model's output is deterministic.

The model: architecture `llama`, 2 blocks, 64 wide, 4 heads, a byte-level vocabulary (`<unk>`,
`<s>`, `</s>`, then `<0x00>`…`<0xFF>`), float32 weights drawn with std 0.05 from a seeded generator
(norms are ones). Under 0.5 MB; it loads in milliseconds. Text in, random bytes out — a real engine
doing real tokenisation, attention and sampling, which is what the exchange needs to be tested against.
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

MODEL = "tiny-llama"  # the name the servers answer to, and the batch files' model
N_VOCAB = 3 + 256
N_EMBD = 64
N_HEAD = 4
N_LAYER = 2
N_FF = 128
N_CTX = 512


def llama_cpp_available() -> bool:
    try:
        import gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def write_tiny_gguf(path: Path, *, seed: int = 0, name: str = "tiny-llama") -> Path:
    """Write a tiny random-weight Llama model in GGUF to `path`; another seed is another model."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)

    def weights(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)])
    writer.add_token_scores([0.0] * N_VOCAB)
    writer.add_token_types([2, 3, 3] + [6] * 256)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    ones = np.ones(N_EMBD, dtype=np.float32)
    writer.add_tensor("token_embd.weight", weights(N_VOCAB, N_EMBD))
    for block in range(N_LAYER):
        prefix = f"blk.{block}."
        writer.add_tensor(prefix + "attn_norm.weight", ones.copy())
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(prefix + part + ".weight", weights(N_EMBD, N_EMBD))
        writer.add_tensor(prefix + "ffn_norm.weight", ones.copy())
        writer.add_tensor(prefix + "ffn_gate.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(prefix + "ffn_up.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(prefix + "ffn_down.weight", weights(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", ones.copy())
    writer.add_tensor("output.weight", weights(N_VOCAB, N_EMBD))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def llama_server(model: Path, *, alias: str = "tiny-llama", timeout_s: float = 60.0, log: Path | None = None):
    """`python -m llama_cpp.server` on `model` at a free port, serving it as `alias`; yields its URL.
    Killed on exit, whatever happens."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        alias,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--chat_format",
        "chatml",
        "--n_ctx",
        str(N_CTX),
        "--n_threads",
        "1",
        "--verbose",
        "false",
    ]
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {process.returncode}")
            try:
                if requests.get(url + "/v1/models", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer within {timeout_s} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if log:
            out.close()
