"""GPU numbers (issue 7, section 3): one prepared run on a CUDA machine, written to one JSON file.

No weights can reach the GPU machine, and timing needs none: models of SmolLM2-135M's and Mistral-7B's
shapes are built from their configs with random weights (the SmolLM2 tokenizer from tests/fixtures).
1. Capture throughput, hook overhead and peak GPU memory per shape: plain forward vs capture with
   statistics on all layers through each backend (torch hooks, nnsight, TransformerLens), bf16.
2. The CPU benchmark's other groups on the GPU (``tests.benchmarks.bench``): batched ablation conditions,
   attribution cost, diff-neurons capture throughput float32 vs bfloat16.
3. The commands end to end on the GPU: ``interp plant`` into the random SmolLM2-shaped model, then
   ``interp diff-neurons`` on one device, with ``--device-map auto`` and with ``--load-in-4bit``; each
   run's time and the planted neurons' ranks (the ground truth must come out on top in every placement);
   then ``interp ablate`` of the top 6 against 10 random matched sets.
Run: ``PYTHONPATH=. python3 -m tests.benchmarks.gpu_bench OUT_DIR [shapes] [split] [commands]`` (default:
shapes and commands; ``commands`` includes 2.; ``split``: where the small model's capture time goes, with a
profile); writes OUT_DIR/gpu_bench.json and OUT_DIR/commands.log.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, MistralConfig

import interp  # noqa: F401
from interp.architectures import spec_for_config
from interp.backends import BACKENDS, make_backend
from interp.capture import capture_stats
from interp.models import LoadedModel, ModelSource
from interp.tokens import TokenBatch

TOKENIZER = Path(__file__).resolve().parents[1] / "fixtures" / "smollm2_tokenizer"
SHAPES = {
    "smollm2-135m-shape": LlamaConfig(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True, rope_theta=100000.0,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
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
    """Peak GPU memory growth (MiB) during one call."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    function()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def random_setup(name: str, config, batch: int, length: int, config_dir: Path) -> tuple[LoadedModel, TokenBatch]:
    """A bf16 model of ``config``'s shape with random weights on the GPU, and one batch of random tokens
    (every position counted but the first). ``config_dir``: where the config is (TransformerLens boots from it)."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval().requires_grad_(False)
    lm = LoadedModel(ModelSource(name, "hf", config_dir), model, AutoTokenizer.from_pretrained(TOKENIZER),
                     spec_for_config(config), config.num_hidden_layers, config.intermediate_size)  # fmt: skip
    ids = torch.randint(3, config.vocab_size, (batch, length), device="cuda")
    attention = torch.ones_like(ids)
    positions = attention.bool()
    positions[:, 0] = False
    return lm, TokenBatch(ids, attention, positions)


def bench_shape(name: str, config, batch: int, length: int, backends: tuple[str, ...]) -> dict:
    """Plain forward vs capture + statistics on every layer through each backend; one batch of random tokens."""
    with tempfile.TemporaryDirectory() as config_dir:
        config.save_pretrained(config_dir)
        lm, batch_tokens = random_setup(name, config, batch, length, Path(config_dir))
        model, ids, attention = lm.model, batch_tokens.input_ids, batch_tokens.attention_mask
        batches = [batch_tokens]
        layers = list(range(lm.n_layers))

        def plain():
            with torch.no_grad():
                model(input_ids=ids, attention_mask=attention, use_cache=False)

        times = {"plain_forward": timed(plain)}
        memory = {"plain_forward": peak_memory(plain)}
        for backend_name in backends:
            try:
                backend = make_backend(backend_name, lm)
                capture = lambda backend=backend: capture_stats(backend, batches, layers, lm.d_mlp, 0.1)  # noqa: E731
                times[backend_name] = timed(capture)
                memory[backend_name] = peak_memory(capture)
            except Exception as exc:  # report and go on: one backend failing must not lose the others
                times[backend_name] = f"{type(exc).__name__}: {exc}"
            backend = None
            torch.cuda.empty_cache()
    tokens = batch * length
    result: dict = {"tokens_per_batch": tokens, "parameters": sum(p.numel() for p in model.parameters())}
    result["seconds"] = times
    result["peak_memory_growth_mib"] = memory
    for backend_name in backends:
        if isinstance(times.get(backend_name), float):
            result[f"{backend_name}_vs_plain_forward"] = times[backend_name] / times["plain_forward"]
            result[f"{backend_name}_tokens_per_s"] = tokens / times[backend_name]
    return result


def overhead_split(name: str, config, batch: int, length: int) -> dict:
    """Where capture time goes, per backend: the forward with do-nothing callbacks vs with the statistics."""
    lm, batch_tokens = random_setup(name, config, batch, length, Path("."))
    batches = [batch_tokens]
    layers = list(range(lm.n_layers))
    seconds = {}
    for backend_name in ("torch", "nnsight"):
        backend = make_backend(backend_name, lm)
        seconds[f"{backend_name}_callbacks_only"] = timed(lambda b=backend: b.run(batches[0], layers, lambda *a: None))
        seconds[f"{backend_name}_statistics"] = timed(
            lambda b=backend: capture_stats(b, batches, layers, lm.d_mlp, 0.1)
        )
    with torch.autograd.profiler.profile(use_device="cuda") as profile:
        capture_stats(make_backend("torch", lm), batches, layers, lm.d_mlp, 0.1)
        torch.cuda.synchronize()
    table = profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return {"seconds": seconds, "profile_torch_statistics": table.splitlines()}


def write_random_model(config, out: Path) -> Path:
    """A model directory of ``config``'s shape with random float32 weights and the SmolLM2 tokenizer."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(TOKENIZER).save_pretrained(out)
    return out


def interp_cli(args: list[str], log: Path) -> float:
    """Run ``interp ARGS`` (this checkout's cli.py) and return its wall time; output goes to ``log``."""
    start = time.perf_counter()
    with open(log, "a") as handle:
        handle.write(f"\n$ interp {' '.join(args)}\n")
        handle.flush()
        subprocess.run([sys.executable, "-m", "cli", *args], check=True, stdout=handle, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def planted_ranks(diff_dir: Path, planted: list[str]) -> list[int | None]:
    with open(diff_dir / "neurons.csv") as handle:
        ranks = {f"{row['layer']}:{row['neuron']}": int(row["rank"]) for row in csv.DictReader(handle)}
    return [ranks.get(neuron) for neuron in planted]


def command_checks(work: Path, log: Path, device: str = "cuda") -> dict:
    """Plant known emoji neurons into a random SmolLM2-shaped model; diff-neurons must rank them first
    on one GPU, under ``--device-map auto`` and in NF4 (``--load-in-4bit``)."""
    base = write_random_model(SHAPES["smollm2-135m-shape"], work / "base")
    seconds = {"plant": interp_cli(["plant", "--model", str(base), "--out", str(work / "planted")], log)}
    planted = json.loads((work / "planted" / "planted.json").read_text())["neurons"]
    common = ["diff-neurons", "--base", str(base), "--finetuned", str(work / "planted"), "--prompts", "persona-demo",
              "--device", device, "--top-k", "200", "--profile-top", "10"]  # fmt: skip
    results: dict = {"planted": planted}
    for name, extra in (("one_gpu", []), ("device_map_auto", ["--device-map", "auto"]),
                        ("load_in_4bit", ["--load-in-4bit"])):  # fmt: skip
        out = work / name
        try:
            seconds[name] = interp_cli([*common, *extra, "--out", str(out)], log)
        except subprocess.CalledProcessError as exc:
            results[name] = {"error": f"exit {exc.returncode} (see commands.log)"}
            continue
        summary = json.loads((out / "summary.json").read_text())
        results[name] = {"wall_s": seconds[name], "timings": summary["timings"],
                         "planted_ranks": planted_ranks(out, planted)}  # fmt: skip
    results["plant_s"] = seconds["plant"]
    if "error" not in results["one_gpu"]:  # necessity of the planted neurons, against random matched sets
        ablate = work / "ablate"
        args = ["ablate", "--model", str(work / "planted"), "--neurons-from", str(work / "one_gpu" / "neurons.csv"),
                "--top-k", "6", "--prompts", "persona-demo", "--controls", "10", "--samples", "1", "--device", device,
                "--out", str(ablate)]  # fmt: skip
        try:
            wall = interp_cli(args, log)
            zero = json.loads((ablate / "ablation.json").read_text())["comparisons"]["zero"]
            results["ablate"] = {"wall_s": wall, **{key: zero[key] for key in ("relative_effect", "p_value")}}
        except (subprocess.CalledProcessError, KeyError) as exc:
            results["ablate"] = {"error": f"{type(exc).__name__}: {exc} (see commands.log)"}
    return results


def main() -> None:
    out_dir, parts = Path(sys.argv[1]), set(sys.argv[2:]) or {"shapes", "commands"}
    out_dir.mkdir(parents=True, exist_ok=True)
    import transformers

    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                     "transformers": transformers.__version__, "dtype": "bfloat16"}  # fmt: skip

    def record(key: str, function, *args) -> None:
        try:
            results[key] = function(*args)
        except Exception as exc:  # report and go on: one part failing must not lose the others
            results[key] = {"error": f"{type(exc).__name__}: {exc}"}
        torch.cuda.empty_cache()
        print(json.dumps({key: results[key]}, indent=1), flush=True)
        (out_dir / "gpu_bench.json").write_text(json.dumps(results, indent=1))

    plan = [("smollm2-135m-shape", 8, 256, BACKENDS), ("smollm2-135m-shape", 32, 512, ("torch",)),
            ("mistral-7b-shape", 8, 256, BACKENDS), ("mistral-7b-shape", 16, 1024, ("torch",))]  # fmt: skip
    for name, batch, length, backends in plan if "shapes" in parts else []:
        record(f"{name} {batch}x{length}", bench_shape, name, SHAPES[name], batch, length, backends)

    if "split" in parts:
        record("overhead_split smollm2-135m-shape 8x256", overhead_split, "smollm2-135m-shape",
               SHAPES["smollm2-135m-shape"], 8, 256)  # fmt: skip
    if "commands" not in parts:
        return
    from tests.benchmarks import bench

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        record("commands", command_checks, work, out_dir / "commands.log")
        model = str(work / "base")
        if (work / "base").is_dir():

            def causal() -> dict:
                measured: dict = {}
                bench.causal_benchmarks(measured, model, "cuda", exact_check=False)
                return measured

            def diff_throughput() -> dict:
                return {dtype: bench.diff_throughput(dtype, model, "cuda") for dtype in ("float32", "bfloat16")}

            record("causal", causal)
            record("diff_neurons_capture_tokens_per_s", diff_throughput)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
