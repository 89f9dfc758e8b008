"""`make bench`: speed and memory of neuron capture on the default model, as ratios within one run.

Timing ratios compare runs made in the same process, interleaved (these machines are noisy). Peak memory
is measured in fresh child processes: resident-set size sampled every millisecond during the measured work,
minus the resident size just before it (model loaded and warmed up), with glibc told to map every large
allocation separately so that freed memory leaves the resident set at once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

import torch

import interp  # noqa: F401
from interp import models
from interp.backends import TorchBackend, boot_bridge
from interp.capture import capture_stats
from interp.prompts import load_prompts
from interp.stats import NeuronStats
from interp.tokens import TokenBatch, build_sequences, make_batches, position_mask

MODEL = "smollm2-135m"


def random_batches(count: int, batch: int, length: int, vocab: int, seed: int = 0) -> list[TokenBatch]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(3, vocab, (batch, length), generator=generator)
        ones = torch.ones_like(ids)
        positions = ones.bool()
        positions[:, 0] = False  # the attention sink, as in diff-neurons
        batches.append(TokenBatch(ids, ones, positions))
    return batches


def _page_rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Context manager: peak resident-set growth (bytes) during the block, sampled every millisecond."""

    def __enter__(self):
        self.start = _page_rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _page_rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _page_rss())
        self.growth = self.peak - self.start


def time_interleaved(
    functions: dict, repeats: int, summary=statistics.median, warm_up: bool = True
) -> dict[str, float]:
    """``summary`` (median; ``min`` for best-of) of the seconds per call of each function, calls interleaved
    round-robin, after one warm-up call each unless ``warm_up`` is False (whole commands loading their models)."""
    if warm_up:
        for function in functions.values():
            function()
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            samples[name].append(time.perf_counter() - start)
    return {name: summary(values) for name, values in samples.items()}


def plain_forward(lm, batch):
    with torch.no_grad():
        lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)


def body_forward(lm, batch):
    with torch.no_grad():
        lm.model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)


def ours(lm, batches, layers):
    capture_stats(TorchBackend(lm), batches, layers, lm.d_mlp, 0.1)


def transformer_lens(bridge, lm, batches, layers):
    """The same statistics from TransformerLens' run_with_cache(names_filter=mlp.hook_post)."""
    stats = NeuronStats.empty(layers, lm.d_mlp, 0.1)
    names = [f"blocks.{layer}.mlp.hook_post" for layer in layers]
    for batch in batches:
        flat = torch.nonzero(batch.positions.reshape(-1)).squeeze(1)
        with torch.no_grad():
            _, cache = bridge.run_with_cache(
                batch.input_ids, attention_mask=batch.attention_mask, names_filter=names, return_cache_object=False
            )
        for slot, name in enumerate(names):
            stats.update(slot, cache[name].reshape(-1, lm.d_mlp).index_select(0, flat))


def prompt_batches(lm, n_prompts: int, batch_size: int = 8) -> list[TokenBatch]:
    base = load_prompts("persona-demo")
    prompts = [base[i % len(base)] for i in range(n_prompts)]
    sequences = build_sequences(lm.tokenizer, prompts, raw=True, max_length=64)
    masks = [position_mask(s, "all", []) for s in sequences]
    return make_batches(sequences, masks, batch_size, lm.tokenizer.pad_token_id)


def child(task: str, arg: int) -> None:
    """Run one memory measurement in this fresh process and print JSON."""
    torch.set_num_threads(torch.get_num_threads())
    lm = models.load(MODEL, device="cpu", dtype="float32")
    layers = list(range(lm.n_layers))
    if task == "prompts":
        batches = prompt_batches(lm, arg)
        ours(lm, batches[:1], layers)  # warm-up
        with PeakRSS() as peak:
            ours(lm, batches, layers)
    else:
        batches = random_batches(1, 8, 256, lm.vocab_size, seed=1)
        if task == "tl":
            bridge = boot_bridge(lm)
            transformer_lens(bridge, lm, batches, layers)
            with PeakRSS() as peak:
                transformer_lens(bridge, lm, batches, layers)
        else:
            ours(lm, batches, layers)
            with PeakRSS() as peak:
                ours(lm, batches, layers)
    print(json.dumps({"peak_growth_mib": peak.growth / 2**20, "peak_rss_mib": peak.peak / 2**20}))


def run_child(task: str, arg: int = 0) -> dict[str, float]:
    # Large allocations go straight to mmap and back to the system on free, so the resident size follows
    # live memory instead of glibc's cache of earlier allocations.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    output = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.bench", "--child", task, str(arg)],
        capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip
    return json.loads(output.strip().splitlines()[-1])


def diff_throughput(dtype: str, model: str = MODEL, device: str = "cpu") -> float:
    """Tokens per second through capture_stats as diff-neurons runs it (torch backend, emoji-onset logits)."""
    from probes.emoji_tokens import emoji_onset_ids

    lm = models.load(model, device=device, dtype=dtype)
    batches = prompt_batches(lm, 64)
    onset = emoji_onset_ids(lm.tokenizer)
    capture_stats(TorchBackend(lm), batches[:1], list(range(lm.n_layers)), lm.d_mlp, 0.1, onset)
    result = capture_stats(TorchBackend(lm), batches, list(range(lm.n_layers)), lm.d_mlp, 0.1, onset)
    return result.processed_tokens / result.seconds


def distributed_benchmark(results: dict) -> None:
    """Issue 7: diff-neurons in 1 process (all threads) vs 2 torchrun processes (1 thread each), same prompts."""
    import tempfile
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    args = ["diff-neurons", "--base", MODEL, "--finetuned", MODEL, "--prompts", "opinionqa:train", "--device", "cpu",
            "--profile-top", "0", "--max-length", "128"]  # fmt: skip
    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, prefix, threads in (
            ("one_process", [str(bin_dir / "interp")], str(os.cpu_count())),
            ("two_processes", [str(bin_dir / "torchrun"), "--standalone", "--nproc-per-node=2", "--no-python",
                               str(bin_dir / "interp")], "1"),
        ):  # fmt: skip
            out = Path(tmp) / name
            started = time.perf_counter()
            subprocess.run([*prefix, *args, "--out", str(out)], check=True, capture_output=True,
                           env={**os.environ, "OMP_NUM_THREADS": threads})  # fmt: skip
            summary = json.loads((out / "summary.json").read_text())
            measured[name] = {"wall_s": time.perf_counter() - started,
                              "capture_tokens_per_s": summary["timings"]["capture_tokens_per_s"]}  # fmt: skip
    measured["throughput_ratio_2_vs_1"] = (
        measured["two_processes"]["capture_tokens_per_s"] / measured["one_process"]["capture_tokens_per_s"]
    )
    results["diff_neurons_1_vs_2_processes"] = measured
    print(json.dumps(results, indent=1), flush=True)


def causal_benchmarks(results: dict, model: str = MODEL, device: str = "cpu", exact_check: bool = True) -> None:
    """Issue 3: batched conditions vs one pass each; attribution cost; attribution vs exact ablation
    (``exact_check``; meaningless on random weights)."""
    from interp.ablation import AblationConfig, ConditionMetrics, measure_conditions
    from interp.attribution import AttributionConfig, attribute
    from interp.controls import layer_matched_sets
    from interp.interventions import Condition
    from probes.emoji_tokens import emoji_onset_ids

    lm = models.load(model, device=device, dtype="float32")
    onset = emoji_onset_ids(lm.tokenizer)
    sequences = build_sequences(lm.tokenizer, load_prompts("persona-demo")[:16], False, 128)

    def measure(conditions, batch_size, share_prefix=True):
        config = AblationConfig(model="", prompts="", out=None, batch_size=batch_size, show_progress=False)
        metrics = {c.name: ConditionMetrics() for c in conditions}
        measure_conditions(
            lm, None, conditions, sequences, config, onset, metrics, "", nll=False, share_prefix=share_prefix
        )
        return {name: m.onset_sum / m.onset_count for name, m in metrics.items()}

    sets = layer_matched_sets([(layer, 0) for layer in (15, 18, 21, 24, 27)], lm.d_mlp, 8, seed=0)
    conditions = [Condition(f"set{i}", neuron_set, "zero") for i, neuron_set in enumerate(sets)]
    times = time_interleaved(
        {
            "batched": lambda: measure(conditions, 8 * 8),
            "one_pass_each": lambda: [measure([c], 8, share_prefix=False) for c in conditions],
        },
        3,
    )
    results["batched_conditions_8"] = {
        "setting": "8 conditions (sets of 5 neurons, one in each of layers 15, 18, 21, 24, 27), 16 prompts, "
        "emoji-onset probability at the first reply position; baseline: one full forward per condition",
        "batched_s": times["batched"],
        "one_pass_each_s": times["one_pass_each"],
        "speedup": times["one_pass_each"] / times["batched"],
    }
    print(json.dumps(results["batched_conditions_8"], indent=1), flush=True)

    # Issue 13: the cost of the default control count (100 per null, two nulls) against the old 20, for a
    # pipeline-like tested set (20 neurons in the last layers).
    tested = [(layer, index) for layer in (27, 28, 29) for index in range(7)][:20]

    def with_controls(count: int) -> list[Condition]:
        drawn = layer_matched_sets(tested, lm.d_mlp, count, seed=1)
        return [Condition("unedited", kind="baseline"), Condition("tested", tuple(tested), "zero")] + [
            Condition(f"c{i}", neuron_set, "zero") for i, neuron_set in enumerate(drawn)
        ]

    big, small = with_controls(200), with_controls(20)
    times = time_interleaved({"200": lambda: measure(big, 16), "20": lambda: measure(small, 16)}, 2)
    results["controls_200_vs_20"] = {
        "setting": "zeroing 20 neurons in layers 27-29, 16 prompts, first reply position; 2 + 200 conditions "
        "(the default: 100 sets per null) vs 2 + 20 (the old default)",
        "controls_200_s": times["200"],
        "controls_20_s": times["20"],
        "ratio": times["200"] / times["20"],
        "conditions_ratio": len(big) / len(small),
    }
    print(json.dumps(results["controls_200_vs_20"], indent=1), flush=True)

    config = AttributionConfig(model="", prompts="", out=None, mode="zero", show_progress=False)
    layers = list(range(lm.n_layers))
    times = time_interleaved(
        {
            "attribution": lambda: attribute(lm, None, sequences, layers, config, onset),
            "forward": lambda: measure([Condition("unedited", kind="baseline")], 8),
        },
        3,
    )
    results["attribution_cost"] = {
        "attribution_patching_s": times["attribution"],
        "forward_s": times["forward"],
        "forward_pass_equivalents": times["attribution"] / times["forward"],
    }
    print(json.dumps(results["attribution_cost"], indent=1), flush=True)
    if not exact_check:
        return

    result = attribute(lm, None, sequences, layers, config, onset)
    top = torch.argsort(result.score.reshape(-1).abs(), descending=True)[:50].tolist()
    neurons = [(index // lm.d_mlp, index % lm.d_mlp) for index in top]
    singles = [Condition("unedited", kind="baseline")]
    singles += [Condition(f"{layer}:{index}", ((layer, index),), "zero") for layer, index in neurons]
    exact = measure(singles, 64)
    effects = [exact[f"{layer}:{index}"] - exact["unedited"] for layer, index in neurons]
    estimates = [float(result.score.reshape(-1)[index]) for index in top]
    rank = lambda values: torch.tensor(values).argsort().argsort().double()  # noqa: E731
    rho = float(torch.corrcoef(torch.stack([rank(estimates), rank(effects)]))[0, 1])
    results["attribution_vs_exact_ablation"] = {
        "setting": "zero-ablation of single neurons in SmolLM2 (unedited base), 16 persona-demo prompts, metric: "
        "mean emoji-onset probability at the first reply position",
        "top_k": 50,
        "spearman": rho,
        "sign_agreement": sum((a > 0) == (b > 0) for a, b in zip(estimates, effects)) / len(effects),
    }
    print(json.dumps(results["attribution_vs_exact_ablation"], indent=1), flush=True)


def statistics_benchmark(results: dict, repeats: int) -> None:
    """Issue 19 goal 2: capture with statistics on all layers against the forward without unembedding (the same
    work minus the statistics) and a plain forward, one batch of 8 x 128 random tokens, bfloat16 and float32."""
    for dtype in ("bfloat16", "float32"):
        lm = models.load(MODEL, device="cpu", dtype=dtype)
        layers, batch = list(range(lm.n_layers)), random_batches(1, 8, 128, lm.vocab_size)
        times = time_interleaved(
            {
                "plain_forward": lambda: plain_forward(lm, batch[0]),  # noqa: B023 (called within this iteration)
                "body_forward": lambda: body_forward(lm, batch[0]),  # noqa: B023
                "capture_stats": lambda: ours(lm, batch, layers),  # noqa: B023
            },
            repeats,
        )
        results[f"statistics_8x128_{dtype}"] = {
            "plain_forward_s": times["plain_forward"],
            "capture_vs_plain_forward": times["capture_stats"] / times["plain_forward"],
            "capture_vs_forward_without_unembedding": times["capture_stats"] / times["body_forward"],
            # the statistics' own cost, beside the ratio (the forward it is divided by differs several-fold by CPU)
            "statistics_s": times["capture_stats"] - times["body_forward"],
            "goal": "<= 1.05x the forward without unembedding",
        }
        print(json.dumps(results[f"statistics_8x128_{dtype}"], indent=1), flush=True)


# Where a diff-neurons run spends its time (``--profile``): the parts BENCHMARKS.md names, from cProfile.
DIFF_PARTS = (r"run_diff|capture_stats|\(observe\)|write_run|to_csv|weights_fingerprint|gc.collect|token_byte_table|"
              r"emoji_onset_ids|\(emoji_dla\)|load_tokenizer|models.py:\d+\(load\)")  # fmt: skip


def diff_pass_benchmark(results: dict, repeats: int = 2, profile: bool = False) -> None:
    """Issue 19 goal 1: a whole `diff-neurons` (default profiles) against loading both models and running plain
    forwards over the same sequences; the fine-tune is a planted copy of the default model. Best of ``repeats``
    runs each, alternating. ``profile``: then one more run under cProfile, its parts (``DIFF_PARTS``) printed."""
    import tempfile
    from pathlib import Path

    from interp.diff_neurons import DiffConfig, run_diff
    from interp.planted import make_planted_model

    prompts = "opinionqa:train[:40]"
    with tempfile.TemporaryDirectory() as tmp:
        finetuned = str(Path(tmp) / "planted")
        make_planted_model(MODEL, finetuned, show_progress=False, log=lambda m: None)

        def forwards() -> None:
            loaded = load_prompts(prompts)  # once, as diff-neurons does
            for ref in (MODEL, finetuned):
                lm = models.load(ref, device="cpu", dtype="float32")
                sequences = build_sequences(lm.tokenizer, loaded, False, 256)
                masks = [[True] * len(s.ids) for s in sequences]
                for batch in make_batches(sequences, masks, 8, lm.tokenizer.pad_token_id):
                    plain_forward(lm, batch)
                del lm

        def diff(profile_top: int):
            def run() -> None:
                config = DiffConfig(base=MODEL, finetuned=finetuned, prompts=prompts, out=Path(tmp) / "diff",
                                    device="cpu", profile_top=profile_top, show_progress=False)  # fmt: skip
                run_diff(config, log=lambda m: None)

            return run

        functions = {"forwards": forwards, "diff": diff(50), "diff_profile_top_0": diff(0)}
        seconds = time_interleaved(functions, repeats, summary=min, warm_up=False)
        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(diff(50))
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(DIFF_PARTS)
    results["diff_neurons_one_pass"] = {
        "prompts": prompts, **{f"{name}_s": value for name, value in seconds.items()},
        "diff_vs_load_and_forwards": seconds["diff"] / seconds["forwards"], "goal": "<= 1.2x",
        "profile_top_0_vs_load_and_forwards": seconds["diff_profile_top_0"] / seconds["forwards"],
    }  # fmt: skip
    print(json.dumps(results["diff_neurons_one_pass"], indent=1), flush=True)


def sampling_benchmark(results: dict, repeats: int = 2) -> None:
    """Issue 19 goal 3 (evaluate's sampling): 52 answers (26 `opinionqa:test` prompts x 2) of 96 tokens from
    the default model, Hugging Face's `generate` in batches of 8 (the sampler before 2026-12-02) against ours
    in batches of 8 and 32 (the default now). Best of ``repeats`` runs each, alternating; ours must give the
    same answers at both batch sizes."""
    from interp.generation import left_pad, sample_sequences
    from interp.run_options import SamplingOptions
    from interp.tokens import prompt_ids

    lm = models.load(MODEL, device="cpu", dtype="float32")
    prompts = load_prompts("opinionqa:test")
    options = SamplingOptions(samples=2, max_new_tokens=96)
    heads = [prompt_ids(lm.tokenizer, p, False) for p in prompts for _ in range(options.samples)]
    answers = {}

    def hf_generate() -> None:
        for begin in range(0, len(heads), 8):
            ids, attention = left_pad(heads[begin : begin + 8], lm.tokenizer.pad_token_id)
            torch.manual_seed(begin)
            lm.model.generate(input_ids=ids, attention_mask=attention, do_sample=True, top_k=None,
                              max_new_tokens=options.max_new_tokens, pad_token_id=lm.tokenizer.pad_token_id,
                              eos_token_id=lm.tokenizer.eos_token_id)  # fmt: skip

    def ours(batch_size: int):
        def run() -> None:
            sequences = sample_sequences(lm, prompts, options, False, 10**9, batch_size, show_progress=False)
            answers[batch_size] = [s.ids for s in sequences]

        return run

    functions = {"hf_generate_8": hf_generate, "ours_8": ours(8), "ours_32": ours(32)}
    times = time_interleaved(functions, repeats, summary=min, warm_up=False)
    results["sampling_52_answers"] = {
        **{f"{name}_s": value for name, value in times.items()},
        "ours_32_vs_hf_generate_8": times["ours_32"] / times["hf_generate_8"],
        "ours_32_vs_ours_8": times["ours_32"] / times["ours_8"],
        "same_answers_at_8_and_32": answers[8] == answers[32],
    }
    print(json.dumps(results["sampling_52_answers"], indent=1), flush=True)


def sampling_noise_benchmark(results: dict, repeats: int = 20) -> None:
    """Issue 19 goal 3: one decoding step's Gumbel noise for 32 answers over SmolLM2's vocabulary, ours
    (float64 uniforms) against ``Tensor.exponential_`` (the route before), which it equals bit for bit."""
    from interp.generation import _gumbel_noise

    vocab = models.load_config(models.resolve(MODEL, fetch_log=lambda m: None)).vocab_size
    ours_streams = [torch.Generator().manual_seed(row) for row in range(32)]
    before_streams = [torch.Generator().manual_seed(row) for row in range(32)]

    def before() -> torch.Tensor:
        return torch.stack([torch.empty(vocab).exponential_(generator=g) for g in before_streams]).log().neg()

    same = torch.equal(_gumbel_noise(ours_streams, vocab), before())
    times = time_interleaved({"ours": lambda: _gumbel_noise(ours_streams, vocab), "before": before}, repeats)
    results["gumbel_noise_32_rows"] = {
        **{f"{name}_ms": value * 1e3 for name, value in times.items()},
        "ours_vs_before": times["ours"] / times["before"], "same_noise": same,
    }  # fmt: skip
    print(json.dumps(results["gumbel_noise_32_rows"], indent=1), flush=True)


def directions_benchmark(results: dict, repeats: int = 3) -> None:
    """Issue 16: persona-vector extraction and a steering dose curve, each relative to a plain forward of the
    same sequences (median of ``repeats`` interleaved runs)."""
    from finetune.persona_vector import PersonaVectorConfig, pole_prompts
    from interp.ablation import AblationConfig, ConditionMetrics, measure_conditions
    from interp.directions import residual_sums
    from interp.interventions import Condition
    from interp.steering import random_directions, steering_conditions
    from probes.emoji_tokens import emoji_onset_ids

    lm = models.load(MODEL, device="cpu", dtype="float32")
    layers = list(range(lm.n_layers))
    poles = pole_prompts(PersonaVectorConfig(trait="extraversion", out=None))
    chosen = [prompt for pole in ("high", "low") for prompt in poles[pole][:16]]
    sequences = build_sequences(lm.tokenizer, chosen, False, 256)
    masks = [position_mask(sequence, "response", []) for sequence in sequences]
    batches = make_batches(sequences, masks, 8, lm.tokenizer.pad_token_id)
    times = time_interleaved(
        {"persona_vector": lambda: residual_sums(lm, batches, layers),
         "forward": lambda: [plain_forward(lm, batch) for batch in batches]},
        repeats,
    )  # fmt: skip
    setting = ("32 teacher-forced Opinion QA answers (16 questions x 2 poles), batches of 8, all 30 layers; "
               "baseline: plain forwards (with logits) of the same batches")  # fmt: skip
    record_ratios(results, "persona_vector_extraction", setting, times, "forward")

    onset = emoji_onset_ids(lm.tokenizer)
    prompts = build_sequences(lm.tokenizer, load_prompts("persona-demo")[:16], False, 128)
    direction = random_directions(lm.d_model, 1, seed=7)[0]
    dose = steering_conditions(20, direction, [-8.0, -4.0, 4.0, 8.0], random_directions(lm.d_model, 100, seed=8))
    without_controls = [condition for condition in dose if condition.kind != "direction"]

    def measure(conditions) -> None:
        config = AblationConfig(model="", prompts="", out=None, batch_size=16, show_progress=False)
        metrics = {c.name: ConditionMetrics() for c in conditions}
        measure_conditions(lm, None, conditions, prompts, config, onset, metrics, "")

    times = time_interleaved(
        {"dose": lambda: measure(dose), "dose_no_controls": lambda: measure(without_controls),
         "forward": lambda: measure([Condition("unedited", kind="baseline")])},
        repeats,
    )  # fmt: skip
    setting = ("steering after block 20 at 4 coefficients, 16 persona-demo prompts, emoji-onset probability at the "
               "first reply position; dose: with 100 random directions per coefficient (405 conditions, the default), "
               "dose_no_controls: without (5); baseline: the unedited forward of the same prompts")  # fmt: skip
    record_ratios(results, "steering_dose_curve", setting, times, "forward")


def mend_benchmark(results: dict, repeats: int = 3) -> None:
    """Issue 17: one MEND editor training step (4 edits, 4 locality sequences) and one batched edit of 4 answers
    (gradient factors, editor, new weights), each relative to a plain forward of the same 4 edit sequences."""
    from finetune.mend import (
        MendConfig,
        MendEditor,
        edit_sites,
        edit_tensors,
        edited_weights,
        editor_data,
        gradient_factors,
        step_batches,
        train_step,
    )

    lm = models.load(MODEL, device="cpu", dtype="float32")
    lm.model.requires_grad_(False)
    config = MendConfig(model=MODEL, out=None)
    sites = edit_sites(lm, list(range(lm.n_layers))[-3:], ["mlp.up_proj", "mlp.down_proj"])
    data = editor_data(lm.tokenizer, config)
    pad = lm.tokenizer.pad_token_id
    edits, locality = step_batches(data, config, 0)
    ids, attention, labels = edit_tensors(edits, pad)
    editor = MendEditor(sites, config.rank, config.step_size)
    editor.calibrate([gradient_factors(lm, sites, ids, attention, labels)[0]])

    def step() -> None:
        train_step(lm, editor, sites, edits, locality, config, pad)
        editor.zero_grad(set_to_none=True)

    def edit() -> None:
        with torch.no_grad():
            edited_weights(lm, editor, gradient_factors(lm, sites, ids, attention, labels)[0])

    batch = TokenBatch(ids, attention, attention.bool())
    times = time_interleaved({"train_step": step, "edit": edit, "forward": lambda: plain_forward(lm, batch)}, repeats)
    setting = (
        f"SmolLM2-135M, the last three layers' up/down projections, rank {config.rank}; 4 Opinion QA edits "
        f"({int(attention.sum())} tokens) and 4 locality sequences; baseline: a plain forward of the 4 edits"
    )
    record_ratios(results, "mend", setting, times, "forward")


def record_ratios(results: dict, key: str, setting: str, times: dict[str, float], baseline: str) -> None:
    """``results[key]``: the setting, each timing (``NAME_s``) and each one's ratio to ``baseline``; printed."""
    entry = {"setting": setting, **{f"{name}_s": value for name, value in times.items()}}
    entry |= {f"{name}_vs_{baseline}": value / times[baseline] for name, value in times.items() if name != baseline}
    results[key] = entry
    print(json.dumps(entry, indent=1), flush=True)


def causal_stage_inputs(lm, controls: int = 60):
    """A causal stage's inputs as the pipeline has them: 13 Opinion QA prompts with teacher-forced answers, their
    sequences, and the unedited model, 20 zeroed neurons of layers 27-29 and ``controls`` layer-matched sets."""
    from finetune import dataset
    from interp.controls import layer_matched_sets
    from interp.interventions import Condition
    from interp.prompts import Prompt

    rows = dataset.select(dataset.load_rows(), trait="extraversion", pole="high", split="train")[:13]
    prompts = [Prompt((("user", row.question),), row.answer, i) for i, row in enumerate(rows)]
    sequences = build_sequences(lm.tokenizer, prompts, False, 256)
    tested = [(layer, index) for layer in (27, 28, 29) for index in range(7)][:20]
    conditions = [Condition("unedited", kind="baseline"), Condition("tested", tuple(tested), "zero", kind="tested")]
    controls = layer_matched_sets(tested, lm.d_mlp, controls, seed=1)
    conditions += [Condition(f"c{i}", neuron_set, "zero", kind="control") for i, neuron_set in enumerate(controls)]
    return prompts, sequences, conditions


def readouts_benchmark(results: dict, repeats: int = 3) -> None:
    """Issue 34: what the specificity and behavioural readouts add to a causal stage. The teacher-forced measurement
    of 62 conditions (the unedited model, 20 zeroed neurons, 60 layer-matched sets; a stage has 202, so the share
    here is an upper bound) with and without the token profiles the specificity readout needs (median of
    ``repeats`` interleaved calls after one warm-up call each: a first call ran several times slower), and the
    behavioural readout's sampling (13 answers of 48 tokens under the unedited and the tested condition, one per
    question) against the same teacher-forced measurement."""
    from interp.ablation import AblationConfig, ConditionMetrics, _generate, measure_conditions
    from interp.distributed import Shards
    from probes.emoji_tokens import emoji_onset_ids

    lm = models.load(MODEL, device="cpu", dtype="float32")
    onset = emoji_onset_ids(lm.tokenizer)
    prompts, sequences, conditions = causal_stage_inputs(lm)
    config = AblationConfig(model="", prompts="", out=None, batch_size=16, show_progress=False, samples=1,
                            max_new_tokens=48)  # fmt: skip

    def measure(profiles: bool):
        def run() -> None:
            metrics = {c.name: ConditionMetrics() for c in conditions}
            measure_conditions(lm, None, conditions, sequences, config, onset, metrics, "", token_profiles=profiles)

        return run

    times = time_interleaved({"with_profiles": measure(True), "without": measure(False)}, repeats)
    started = time.perf_counter()
    _generate(lm, None, conditions, prompts, config, Shards())
    times["behaviour_sampling"] = time.perf_counter() - started
    setting = ("the teacher-forced measurement of 62 conditions on 13 Opinion QA answers with the specificity "
               "readout's token profiles (the unedited and tested conditions' whole distributions) and without; "
               "behaviour_sampling: 13 answers x 48 tokens sampled under the unedited and tested conditions, once; "
               "baseline: without")  # fmt: skip
    record_ratios(results, "causal_stage_readouts", setting, times, "without")


def causal_stage_benchmark(results: dict) -> None:
    """Issue 19 goal 3: a causal stage's teacher-forced measurement (``measure_conditions``, 62 conditions) as the
    code runs it, against the code before two changes, undone in this process: the next-token reading through the
    unembedding's input (``interp.next_token``; undone: the log-softmax per condition, which soft-capped models
    still take) and the blocks below the first edited one run once per batch (undone: once per group of 16
    conditions)."""
    from contextlib import nullcontext

    from interp import ablation
    from interp.ablation import AblationConfig, ConditionMetrics, measure_conditions
    from interp.interventions import reused_lower_blocks
    from interp.next_token import NextTokenReader
    from probes.emoji_tokens import emoji_onset_ids

    class DirectReader(NextTokenReader):
        def __init__(self, lm, onset_ids) -> None:
            super().__init__(lm, onset_ids)
            self.linear = False

    lm = models.load(MODEL, device="cpu", dtype="float32")
    onset = emoji_onset_ids(lm.tokenizer)
    prompts, sequences, conditions = causal_stage_inputs(lm)
    config = AblationConfig(model="", prompts="", out=None, batch_size=16, show_progress=False)
    found = {}

    def measure(name: str, reader: type[NextTokenReader], reuse: bool):
        def run() -> None:
            metrics = {c.name: ConditionMetrics() for c in conditions}
            ablation.NextTokenReader = reader
            ablation.reused_lower_blocks = reused_lower_blocks if reuse else (lambda *args: nullcontext())
            try:
                measure_conditions(lm, None, conditions, sequences, config, onset, metrics, "")
            finally:
                ablation.NextTokenReader, ablation.reused_lower_blocks = NextTokenReader, reused_lower_blocks
            found[name] = torch.tensor([(m.onset_sum / m.onset_count, m.kl_sum) for m in metrics.values()])

        return run

    variants = {"now": (NextTokenReader, True), "log_softmax": (DirectReader, True), "before": (DirectReader, False)}
    times = time_interleaved({name: measure(name, *variant) for name, variant in variants.items()}, 2, warm_up=False)
    now, before = found["now"].double(), found["before"].double()  # row 0: the unedited model, KL 0
    results["causal_stage_measurement"] = {
        "setting": f"{len(conditions)} conditions (unedited, 20 neurons of layers 27-29 zeroed, 60 layer-matched "
        "sets), "
        f"13 teacher-forced Opinion QA answers ({sum(len(s.ids) - s.response_start for s in sequences)} measured "
        "positions), batches of 16 sequence-conditions; median of 2 calls each, interleaved",
        **{f"{name}_s": value for name, value in times.items()},
        "now_vs_before": times["now"] / times["before"],
        "reading_through_the_input_vs_log_softmax": times["now"] / times["log_softmax"],
        "largest_relative_difference_onset": float(((now[:, 0] - before[:, 0]).abs() / before[:, 0]).max()),
        "largest_relative_difference_kl_sum": float(((now[1:, 1] - before[1:, 1]).abs() / before[1:, 1]).max()),
    }  # fmt: skip
    print(json.dumps(results["causal_stage_measurement"], indent=1), flush=True)


def finetune_precision_benchmark(results: dict, repeats: int = 5) -> None:
    """A LoRA step of the demo's fine-tune (SmolLM2, the default adapter: q_proj + v_proj, r=64; 4 extraversion
    answers) in fp32 against the step before answer-only logits (the model's own loss with ``labels``: every
    position unembedded), medians of ``repeats`` interleaved steps after a warm-up each; and the step under bf16
    autocast, once after a warm-up (where bf16 is emulated it takes some 30x as long). The default
    (``TrainConfig.autocast`` None) takes bf16 autocast only where ``models.native_bf16()``."""
    from peft import LoraConfig, get_peft_model

    from finetune import dataset
    from finetune.training import TrainConfig, build_examples, collate, training_step

    lm = models.load(MODEL, device="cpu", dtype="float32")
    defaults = TrainConfig(model=MODEL, trait="extraversion", out=None)
    rows = dataset.select(dataset.load_rows(), trait="extraversion", pole="high", split="train")
    examples = build_examples(lm.tokenizer, rows, False, defaults.max_length)  # the demo's training data
    answer_share = sum(label != -100 for e in examples for label in e.labels) / sum(len(e.labels) for e in examples)
    batch = collate(examples[: defaults.batch_size], lm.tokenizer.pad_token_id)
    lora = LoraConfig(r=defaults.rank, lora_alpha=defaults.alpha, lora_dropout=defaults.dropout,
                      target_modules=defaults.targets.split(","), task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(lm.model, lora)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=defaults.lr)

    def all_positions_step() -> None:
        ids, labels, attention = batch
        model(input_ids=ids, attention_mask=attention, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    fp32 = {"fp32": lambda: training_step(model, optimizer, batch, False), "fp32_all_positions": all_positions_step}
    times = time_interleaved(fp32, repeats)
    times |= time_interleaved({"bf16_autocast": lambda: training_step(model, optimizer, batch, True)}, 1)
    results["lora_step_precision"] = {
        "native_bf16": models.native_bf16(), "fp32_step_s": times["fp32"],
        "bf16_autocast_step_s": times["bf16_autocast"], "bf16_autocast_vs_fp32": times["bf16_autocast"] / times["fp32"],
        "default": "bf16 autocast" if defaults.bf16_autocast() else "fp32",
        "fp32_all_positions_step_s": times["fp32_all_positions"],
        "answer_logits_vs_all_positions": times["fp32"] / times["fp32_all_positions"],
        "demo_positions_predicting_an_answer_token": answer_share,
    }  # fmt: skip
    print(json.dumps(results["lora_step_precision"], indent=1), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2, metavar=("TASK", "ARG"))
    parser.add_argument("--repeats", type=int, default=5)
    groups = ("capture", "statistics", "causal", "causal-stage", "distributed", "diff", "sampling", "directions")
    groups += ("mend", "sampling-noise", "finetune", "readouts")
    parser.add_argument("--only", choices=groups, default=None, help="run one group of benchmarks")
    parser.add_argument("--profile", action="store_true", help="diff: also print where one run spends its time")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return

    results: dict[str, object] = {
        "machine": f"{torch.cpu.get_capabilities().get('cpu_name') or platform.machine()}, {os.cpu_count()} cores, "
        f"native bf16: {models.native_bf16()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
    }
    if args.only in (None, "finetune"):
        finetune_precision_benchmark(results, args.repeats)
        if args.only == "finetune":
            return
    if args.only in (None, "mend"):
        mend_benchmark(results)
        if args.only == "mend":
            return
    if args.only in (None, "directions"):
        directions_benchmark(results)
        if args.only == "directions":
            return
    if args.only in (None, "sampling"):
        sampling_benchmark(results)
        if args.only == "sampling":
            return
    if args.only in (None, "sampling-noise"):
        sampling_noise_benchmark(results)
        if args.only == "sampling-noise":
            return
    if args.only in (None, "diff"):
        diff_pass_benchmark(results, profile=args.profile)
        if args.only == "diff":
            return
    if args.only in (None, "distributed"):
        distributed_benchmark(results)
        if args.only == "distributed":
            return
    if args.only in (None, "causal"):
        causal_benchmarks(results)
        if args.only == "causal":
            return
    if args.only in (None, "readouts"):
        readouts_benchmark(results)
        if args.only == "readouts":
            return
    if args.only in (None, "causal-stage"):
        causal_stage_benchmark(results)
        if args.only == "causal-stage":
            return
    statistics_benchmark(results, args.repeats)
    if args.only == "statistics":
        return
    lm = models.load(MODEL, device="cpu", dtype="float32")
    layers = list(range(lm.n_layers))
    bridge = boot_bridge(lm)
    big = random_batches(1, 8, 256, lm.vocab_size, seed=1)
    times = time_interleaved(
        {"ours": lambda: ours(lm, big, layers), "transformer_lens": lambda: transformer_lens(bridge, lm, big, layers)},
        max(3, args.repeats // 2),
    )
    bridge = None  # free the copy before the memory children run
    mem_ours, mem_tl = run_child("ours"), run_child("tl")
    results["vs_transformer_lens_8x256"] = {
        "ours_s": times["ours"],
        "transformer_lens_s": times["transformer_lens"],
        "speedup": times["transformer_lens"] / times["ours"],
        "ours_peak_growth_mib": mem_ours["peak_growth_mib"],
        "transformer_lens_peak_growth_mib": mem_tl["peak_growth_mib"],
        "memory_ratio": mem_tl["peak_growth_mib"] / mem_ours["peak_growth_mib"],
    }
    print(json.dumps(results["vs_transformer_lens_8x256"], indent=1), flush=True)

    mem_100, mem_1000 = run_child("prompts", 100), run_child("prompts", 1000)
    results["memory_100_vs_1000_prompts"] = {
        "peak_rss_100_mib": mem_100["peak_rss_mib"],
        "peak_rss_1000_mib": mem_1000["peak_rss_mib"],
        "peak_rss_relative_difference": (mem_1000["peak_rss_mib"] - mem_100["peak_rss_mib"]) / mem_100["peak_rss_mib"],
        "peak_growth_100_mib": mem_100["peak_growth_mib"],
        "peak_growth_1000_mib": mem_1000["peak_growth_mib"],
    }
    print(json.dumps(results["memory_100_vs_1000_prompts"], indent=1), flush=True)

    fp32, bf16 = diff_throughput("float32"), diff_throughput("bfloat16")
    results["diff_neurons_capture_tokens_per_s"] = {"float32": fp32, "bfloat16": bf16, "bf16_speedup": bf16 / fp32}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
