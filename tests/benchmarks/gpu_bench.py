"""GPU numbers (issue 7): capture throughput and hook overhead on randomly initialised models in bf16.

No weights can be downloaded on the GPU machine, and timing needs none: models of SmolLM2-135M's and
Mistral-7B's shapes are built from their configs with random weights, directly on the GPU. For each:
plain forward vs capture with statistics on all layers (our torch hooks), tokens per second, and peak GPU
memory. Run: ``PYTHONPATH=. python3 tests/benchmarks/gpu_bench.py`` on a CUDA machine.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig

import interp  # noqa: F401
from interp.architectures import spec_for_config
from interp.backends import TorchBackend
from interp.capture import capture_stats
from interp.models import LoadedModel, ModelSource
from interp.tokens import TokenBatch

SHAPES = {
    "smollm2-135m-shape": LlamaConfig(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True, rope_theta=100000.0,
    ),
    "mistral-7b-shape": MistralConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        vocab_size=32000, max_position_embeddings=32768, sliding_window=None,
    ),
}  # fmt: skip


def timed(function, repeats: int = 5) -> float:
    """Median seconds per call on the GPU (synchronised), after two warm-up calls."""
    for _ in range(2):
        function()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def peak_memory(function) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    function()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def bench_shape(name: str, config, batch: int, length: int) -> dict:
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval().requires_grad_(False)
    spec = spec_for_config(config)
    lm = LoadedModel(ModelSource(name, "hf", Path(".")), model, None, spec, config.num_hidden_layers,
                     config.intermediate_size)  # fmt: skip
    ids = torch.randint(3, config.vocab_size, (batch, length), device="cuda")
    attention = torch.ones_like(ids)
    positions = attention.bool()
    positions[:, 0] = False
    batches = [TokenBatch(ids, attention, positions)]
    layers = list(range(lm.n_layers))

    def plain():
        with torch.no_grad():
            model(input_ids=ids, attention_mask=attention, use_cache=False)

    def body():
        with torch.no_grad():
            model.base_model(input_ids=ids, attention_mask=attention, use_cache=False)

    def capture():
        capture_stats(TorchBackend(lm), batches, layers, lm.d_mlp, 0.1)

    times = {"plain_forward": timed(plain), "body_forward": timed(body), "capture_stats": timed(capture)}
    memory = {"plain_forward_mib": peak_memory(plain), "capture_stats_mib": peak_memory(capture)}
    tokens = batch * length
    result = {
        "tokens_per_batch": tokens,
        "seconds": times,
        "capture_vs_plain_forward": times["capture_stats"] / times["plain_forward"],
        "capture_vs_body_forward": times["capture_stats"] / times["body_forward"],
        "capture_tokens_per_s": tokens / times["capture_stats"],
        "plain_tokens_per_s": tokens / times["plain_forward"],
        "peak_memory_growth": memory,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return result


def main() -> None:
    results = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "dtype": "bfloat16",
    }
    import transformers

    results["transformers"] = transformers.__version__
    plan = [("smollm2-135m-shape", 8, 256), ("smollm2-135m-shape", 32, 512), ("mistral-7b-shape", 8, 256),
            ("mistral-7b-shape", 16, 1024)]  # fmt: skip
    for name, batch, length in plan:
        key = f"{name} {batch}x{length}"
        try:
            results[key] = bench_shape(name, SHAPES[name], batch, length)
        except Exception as exc:  # report and go on: one shape failing must not lose the others
            results[key] = {"error": f"{type(exc).__name__}: {exc}"}
        torch.cuda.empty_cache()
        print(json.dumps({key: results[key]}, indent=1), flush=True)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if out:
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
