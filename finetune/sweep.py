"""``interp sweep``: fine-tuning settings x seeds -> does emoji use rise or fall, and by how much?

A sweep file (TOML) names the cells: every combination of ``[grid]``'s values, and any ``[[cells]]`` listed one
by one, each on top of ``[fixed]``; every cell is trained with each of ``seeds``::

    [sweep]
    model = "smollm2-135m"
    trait = "extraversion"
    seeds = [0, 1, 2]
    prompts = "opinionqa:test"  # the questions measured (a sweep that feeds `interp pipeline --from-sweep`:
                            # "opinionqa:test[0::2]", the pipeline's selection half)
    questions = 26          # the first N of them
    samples = 2             # sampled answers per question, untruncated (until the end of turn, at most
    max_new_tokens = 160    # this many tokens)
    base_samples = 6        # the base model's answers per question (default: samples); more of them give
                            # the ESR test against the base its power (the base is measured once, the cells
                            # once per seed)

    [fixed]                 # `interp finetune` options every cell shares
    max_steps = 45

    [grid]
    targets = ["q_proj,v_proj", "all"]
    style = ["packaged", "casual"]

A cell's options are ``interp finetune``'s (targets, rank, alpha, lr, epochs, max_steps, qlora, system, rows,
dataset, ...) plus ``style``: the answers trained on, ``packaged`` (finetune/data/opinion_qa.csv) or ``casual``
(opinion_qa_casual.csv, short chat-style answers; DATASHEET.md). ``targets = "all"`` means all seven
projections. ``system`` (default | none | trait) is also the system message the answers are measured under.

Per cell and seed (``OUT/cells/CELL/seed-S``): the adapter (``finetune/``, resumable) and ``result.json``:
sampled answers to the test questions (ESR), the metric model's trait accuracy (TA), their perplexity under the
base model, and the emoji-onset probability at the reply's first position and at the answer's end (the position
that predicts the end of turn), teacher-forced on the fine-tuned model's own answers under the fine-tuned model
and under the base model: their ratio is the fine-tune's emoji change on the same text. The base model is
measured once per system message (``OUT/base/SYSTEM``), again when the settings it was measured with
change. Finished cells are reused on rerun; a cell that fails is recorded (``failed.json``) and retried on the
next run, and the sweep goes on.

The table (``sweep.json``, ``table.csv``): per cell, the ratios pooled over seeds with a 95 % interval across
seeds (a t interval of the per-seed log ratios, scipy.stats.t; each seed's ratio pools its questions and its
own bootstrap interval over questions is in ``per_seed``, the mean probabilities the ratios divide in
``onset_probability``), the two-sided one-sample t test of the log ratio at the reply start against 0 (the seed
is the unit), Holm-adjusted across cells, and the direction word from it (rises / falls: adjusted p < 0.05 with
the mean log ratio above / below 0; otherwise no clear change), ESR
pooled over seeds with its Wilson interval and Fisher's exact test against the base model's answers (two-sided,
Holm-adjusted across cells), TA and perplexity; sorted by the ratio at the reply start.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from finetune.dataset import check_trait, packaged_path, system_messages
from finetune.evaluate import response_perplexity, trait_scores
from finetune.pipeline import TEST_PROMPTS
from finetune.training import ALL_PROJECTIONS, TrainConfig, train
from interp import artifacts, models
from interp.ablation import forced_batch
from interp.errors import UserInputError, check_at_least
from interp.generation import sample_sequences
from interp.options import check_options, declared_types
from interp.prompts import Prompt, load_prompts
from interp.run_options import SamplingOptions
from interp.significance import SIGNIFICANCE, holm, prompt_interval, ratio_of_sums
from interp.textfiles import read_toml
from interp.tokens import Sequence
from probes.emoji import find_emojis
from probes.emoji_tokens import emoji_onset_ids
from probes.metrics import EmojiRate, emoji_rate

STYLES = {"packaged": None, "casual": packaged_path("casual")}
SWEEP_OWNED = {"model", "trait", "out", "seed", "show_progress"}  # TrainConfig fields the sweep sets per cell and seed
READOUTS = ("start", "end", "mean", "answer")  # the teacher-forced readouts of a cell's answers (onset_readouts)
COLUMNS = (
    "cell", "seeds", "onset_ratio_start", "onset_ratio_start_ci_low", "onset_ratio_start_ci_high",
    "onset_p_value", "onset_p_value_adjusted", "direction",
    "onset_ratio_end", "onset_ratio_end_ci_low", "onset_ratio_end_ci_high", "esr", "esr_ci_low", "esr_ci_high",
    "base_esr", "esr_p_value", "esr_p_value_adjusted", "ta", "perplexity", "failed_seeds",
    "onset_ratio_mean", "onset_ratio_answer",
)  # fmt: skip


@dataclass(kw_only=True)
class SweepSettings:
    """The ``[sweep]`` table."""

    model: str = "smollm2-135m"
    trait: str = "extraversion"
    seeds: tuple[int, ...] = (0, 1, 2)
    prompts: str = "opinionqa:test"
    questions: int = 26
    samples: int = 2
    base_samples: int | None = None  # the base model's answers per question; None: samples
    max_new_tokens: int = 160
    metric_models: str | None = None
    batch_size: int = 32

    @property
    def samples_of_base(self) -> int:
        return self.samples if self.base_samples is None else self.base_samples


@dataclass(frozen=True)
class Cell:
    """One fine-tuning setting: its name (``key=value,...``) and its `interp finetune` options plus ``style``."""

    name: str
    options: dict

    @property
    def system(self) -> str:
        return self.options.get("system", "default")


def read_sweep(path: str | Path) -> tuple[SweepSettings, list[Cell]]:
    """The sweep file's settings and cells; UserInputError for anything a run would trip over later: first every
    table's shape and every option's type against what ``SweepSettings`` and ``interp finetune``'s ``TrainConfig``
    declare (``interp.options``), then the values."""
    data = read_toml(path, "sweep file")
    where = f"sweep file {str(path)!r}"
    unknown = set(data) - {"sweep", "fixed", "grid", "cells"}
    if unknown:
        raise UserInputError(f"{where}: unknown table(s) {', '.join(sorted(unknown))}.")
    table, fixed, grid = (_table(data, name, where) for name in ("sweep", "fixed", "grid"))
    check_options(table, declared_types(SweepSettings), f"{where}: [sweep]")
    cell_types = {name: hint for name, hint in declared_types(TrainConfig).items() if name not in SWEEP_OWNED}
    cell_types["style"] = str
    check_options(fixed, cell_types, f"{where}: [fixed]")
    for option, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserInputError(f"{where}: [grid] {option} must be a non-empty list of values, not {values!r}.")
        for value in values:
            check_options({option: value}, cell_types, f"{where}: [grid]")
    listed_cells = data.get("cells", [])
    if not isinstance(listed_cells, list) or not all(isinstance(cell, dict) for cell in listed_cells):
        raise UserInputError(f"{where}: cells must be [[cells]] tables, one per cell.")
    for number, cell in enumerate(listed_cells, start=1):
        check_options(cell, {**cell_types, "name": str}, f"{where}: [[cells]] number {number}")
    settings = SweepSettings(**{**table, "seeds": tuple(table.get("seeds", (0, 1, 2)))})
    check_trait(settings.trait)
    for flag, value in (
        ("questions", settings.questions),
        ("samples", settings.samples),
        ("base_samples", settings.samples_of_base),
        ("max_new_tokens", settings.max_new_tokens),
        ("seeds", len(settings.seeds)),
    ):
        check_at_least(f"[sweep] {flag}", value, 1)  # fmt: skip
    load_prompts(settings.prompts)  # refuses an unknown prompt set now, not after the first cell
    cells = [
        Cell(",".join(f"{k}={v}" for k, v in zip(grid, combo)), {**fixed, **dict(zip(grid, combo))})
        for combo in itertools.product(*grid.values())
    ] if grid else []  # fmt: skip
    for number, listed in enumerate(listed_cells):
        listed = dict(listed)
        cells.append(Cell(str(listed.pop("name", f"cell{number}")), {**fixed, **listed}))
    if not cells:
        raise UserInputError(f"sweep file {str(path)!r} has no cells: give a [grid] or [[cells]].")
    if len({cell.name for cell in cells}) != len(cells):
        raise UserInputError(f"sweep file {str(path)!r}: two cells have the same name.")
    for cell in cells:
        _train_config(cell, settings, 0, Path("."))  # refuses unknown options and values now, not mid-sweep
    return settings, cells


def _table(data: dict, name: str, where: str) -> dict:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise UserInputError(f"{where}: {name} must be a [{name}] table, not {table!r}.")
    return table


def _train_config(cell: Cell, settings: SweepSettings, seed: int, out: Path) -> TrainConfig:
    options = dict(cell.options)
    style = options.pop("style", "packaged")
    if style not in STYLES:
        raise UserInputError(f"cell {cell.name!r}: style must be one of {', '.join(STYLES)}, not {style!r}.")
    if options.get("targets") == "all":
        options["targets"] = ALL_PROJECTIONS
    if style != "packaged" and "dataset" in options:
        raise UserInputError(f"cell {cell.name!r}: give style or dataset, not both.")
    dataset = options.pop("dataset", None) or (str(STYLES[style]) if STYLES[style] else None)
    config = TrainConfig(model=settings.model, trait=settings.trait, out=out, seed=seed, dataset=dataset,
                         show_progress=False, **options)  # fmt: skip
    system_messages(config.system, config.trait, config.pole)
    return config


def _cell_dir(out: Path, cell: Cell, seed: int) -> Path:
    """Where one cell and seed lives: its name made a safe directory name, then the seed."""
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in cell.name)[:120]
    return out / "cells" / safe / f"seed-{seed}"


def measure(lm, base_lm, settings: SweepSettings, system: str, metric, seed: int) -> dict:
    """Sample ``lm``'s answers to the test questions and measure them (module docstring); ``base_lm`` None when
    ``lm`` is the base model itself (then ``base_samples`` answers per question)."""
    messages = system_messages(system, settings.trait, "high")
    prompts = [Prompt(messages=(*messages, ("user", p.text)), index=p.index)
               for p in load_prompts(settings.prompts)[: settings.questions]]  # fmt: skip
    samples = settings.samples if base_lm is not None else settings.samples_of_base
    options = SamplingOptions(samples=samples, max_new_tokens=settings.max_new_tokens, seed=seed)
    sequences = sample_sequences(lm, prompts, options, False, 10**9, settings.batch_size, show_progress=False)
    texts = [lm.tokenizer.decode(s.ids[s.response_start :], skip_special_tokens=True) for s in sequences]
    rate = emoji_rate(texts).as_dict()
    hits, _ = trait_scores(metric, texts, settings.trait)
    reference = base_lm or lm
    by_index = {p.index: p for p in prompts}
    record = {
        "answers": len(texts), "with_emoji": rate["with_emoji"], "esr": rate["rate"], "esr_ci95": rate["rate_ci95"],
        "ta": statistics.fmean(hits) if hits else None,
        "perplexity": response_perplexity(reference, [by_index[s.prompt_index] for s in sequences], texts),
        "prompt_index": [s.prompt_index for s in sequences],
        "examples": [{"prompt_index": s.prompt_index, "response": t, "emojis": [m.text for m in find_emojis(t)]}
                     for s, t in zip(sequences[::samples], texts[::samples])],
    }  # fmt: skip
    eos = lm.tokenizer.eos_token_id
    for name, model in (("finetuned", lm), ("base", reference)):
        for where, values in onset_readouts(model, sequences, eos).items():
            record[f"onset_{where}_{name}"] = values
    return record


def onset_readouts(lm, sequences: list[Sequence], eos: int | None, batch_size: int = 8) -> dict[str, list[float]]:
    """Per answer (``READOUTS``), teacher-forced: the emoji-onset probability at the reply's first position
    (``start``) and at its end (``end``: the position that predicts the end-of-turn token; the last position of
    an answer cut off before it), its mean over the answer's positions (``mean``), and the probability of at least
    one emoji onset along the answer, 1 - prod(1 - onset mass) over them (``answer``)."""
    onset = torch.tensor(emoji_onset_ids(lm.tokenizer))
    readouts: dict[str, list[float]] = {where: [] for where in READOUTS}
    for begin in range(0, len(sequences), batch_size):
        batch = sequences[begin : begin + batch_size]
        ids, attention, measured, _, _ = forced_batch(batch, lm.tokenizer.pad_token_id, "response")
        first = [s.response_start - 1 for s in batch]
        last = [len(s.ids) - (2 if s.ids[-1] == eos and len(s.ids) > s.response_start else 1) for s in batch]
        with torch.no_grad():
            hidden = lm.model.base_model(input_ids=ids.to(lm.device), attention_mask=attention.to(lm.device))
            hidden = hidden.last_hidden_state
        for row in range(len(batch)):
            answer = torch.nonzero(measured[row])[:, 0].tolist()  # the positions that predict an answer token
            at = sorted({*answer, last[row]})  # and the end of an answer cut off before its end of turn
            with torch.no_grad():
                logits = lm.logits_from_hidden(hidden[row, torch.tensor(at, device=lm.device)]).float()
            mass = torch.softmax(logits, dim=-1)[:, onset.to(logits.device)].sum(-1).double().cpu()
            along = mass[[at.index(position) for position in answer]]
            readouts["start"].append(float(mass[at.index(first[row])]))
            readouts["end"].append(float(mass[at.index(last[row])]))
            readouts["mean"].append(float(along.mean()))
            readouts["answer"].append(float(-torch.expm1(torch.log1p(-along.clamp(max=1.0)).sum())))
    return readouts


def ratio_by_prompt(record: dict, where: str) -> tuple[float, list[float] | None]:
    """(fine-tuned / base emoji-onset probability at ``where`` (start | end), pooled over the answers; its 95 %
    bootstrap interval over questions)."""
    indices = sorted(set(record["prompt_index"]))
    tuned, base = np.zeros(len(indices)), np.zeros(len(indices))
    position = {index: number for number, index in enumerate(indices)}
    for index, ft, b in zip(record["prompt_index"], record[f"onset_{where}_finetuned"], record[f"onset_{where}_base"]):
        tuned[position[index]] += ft
        base[position[index]] += b
    return float(ratio_of_sums(tuned, base)), prompt_interval(ratio_of_sums, [tuned, base])


def seed_interval(ratios: list[float]) -> list[float] | None:
    """95 % interval of the ratio across seeds: a t interval of the mean log ratio (scipy.stats.t), exponentiated."""
    logs = np.log(np.asarray(ratios, dtype=float))
    if len(logs) < 2 or not np.all(np.isfinite(logs)):
        return None
    spread = stats.sem(logs)
    if spread == 0:  # every seed gave the same ratio
        return [float(ratios[0])] * 2
    low, high = stats.t.interval(0.95, len(logs) - 1, loc=logs.mean(), scale=spread)
    return [float(np.exp(low)), float(np.exp(high))]


def seed_test(ratios: list[float]) -> tuple[float, float] | None:
    """(t statistic, two-sided p-value) of the one-sample t test of the per-seed log ratios against 0 (no change);
    None with fewer than two seeds, a ratio of 0 or infinity, or seeds that all agree exactly."""
    logs = np.log(np.asarray(ratios, dtype=float))
    if len(logs) < 2 or not np.all(np.isfinite(logs)) or np.ptp(logs) == 0:
        return None
    result = stats.ttest_1samp(logs, 0.0)
    return float(result.statistic), float(result.pvalue)


def directions(ratios_by_cell: list[list[float]]) -> list[tuple[float | None, float | None, str]]:
    """Per cell: (p, Holm-adjusted p across the cells that have one, direction word) from its per-seed ratios."""
    tests = [seed_test(ratios) for ratios in ratios_by_cell]
    p_values = [None if test is None else test[1] for test in tests]
    adjusted = holm(p_values)
    words = ["no clear change" if p is None or p >= SIGNIFICANCE else "rises" if test[0] > 0 else "falls"
             for test, p in zip(tests, adjusted)]  # fmt: skip
    return list(zip(p_values, adjusted, words))


@dataclass(kw_only=True)
class SweepConfig:
    config: Path
    out: Path
    device: str = "auto"
    show_progress: bool = True


def run_sweep(config: SweepConfig, log=print, on_cell: Callable[[str, int], None] | None = None) -> dict:
    """Train and measure every cell and seed not yet finished, then write the table. ``on_cell(cell, seed)`` is
    called after each finished cell and seed. Returns sweep.json's content."""
    from finetune.metric_training import ensure_metric_model

    settings, cells = read_sweep(config.config)
    out = Path(config.out)
    artifacts.check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    metric = ensure_metric_model(settings.metric_models, log, config.show_progress)
    base_lm = models.load(settings.model, device=config.device, dtype="float32")
    bases = {}
    for system in dict.fromkeys(cell.system for cell in cells):
        path = out / "base" / system / "result.json"
        measured_with = _base_settings(settings)
        if not path.is_file() or json.loads(path.read_text(encoding="utf-8")).get("settings") != measured_with:
            log(f"measuring the base model (system message: {system}) ...")
            path.parent.mkdir(parents=True, exist_ok=True)
            record = measure(base_lm, None, settings, system, metric, seed=0)
            artifacts.write_json(path, {**record, "settings": measured_with})
        bases[system] = json.loads(path.read_text(encoding="utf-8"))
    jobs = [(cell, seed) for seed in settings.seeds for cell in cells]  # seed-major: a cut-short sweep has every cell
    for number, (cell, seed) in enumerate(jobs, start=1):
        directory = _cell_dir(out, cell, seed)
        if (directory / "result.json").is_file():
            continue
        log(f"[{number}/{len(jobs)}] {cell.name}, seed {seed}")
        try:
            _run_cell(cell, seed, settings, directory, base_lm, metric, config)
            (directory / "failed.json").unlink(missing_ok=True)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a failed cell is recorded and the sweep goes on
            log(f"  failed: {type(exc).__name__}: {exc}")
            directory.mkdir(parents=True, exist_ok=True)
            artifacts.write_json(directory / "failed.json", {
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8),
            })  # fmt: skip
        if on_cell is not None:
            on_cell(cell.name, seed)
    return summarise(out, settings, cells, bases)


def _base_settings(settings: SweepSettings) -> dict:
    """The settings a base measurement depends on; a recorded one is reused only when they match."""
    return {"model": settings.model, "trait": settings.trait, "prompts": settings.prompts,
            "questions": settings.questions, "samples": settings.samples_of_base,
            "max_new_tokens": settings.max_new_tokens, "metric_models": settings.metric_models}  # fmt: skip


def _run_cell(cell: Cell, seed: int, settings: SweepSettings, directory: Path, base_lm, metric, config) -> None:
    started = time.perf_counter()
    train_config = _train_config(cell, settings, seed, directory / "finetune")
    train_config.device = config.device
    if not (directory / "finetune" / "train.json").is_file():
        train(train_config, log=lambda message: None)
    tuned = models.load(str(directory / "finetune" / "merged"), device=config.device, dtype="float32")
    record = measure(tuned, base_lm, settings, cell.system, metric, seed=seed)
    record["train"] = json.loads((directory / "finetune" / "train.json").read_text(encoding="utf-8"))["config"]
    record["elapsed_s"] = time.perf_counter() - started  # training (or resuming it) and measuring, wall time
    artifacts.write_json(directory / "result.json", record)


def summarise(out: Path, settings: SweepSettings, cells: list[Cell], bases: dict[str, dict]) -> dict:
    """The table of ``out``'s finished cells (``sweep.json``, ``table.csv``), written atomically."""
    rows = []
    for cell in cells:
        results, failed = {}, []
        for seed in settings.seeds:
            directory = _cell_dir(out, cell, seed)
            if (directory / "result.json").is_file():
                results[seed] = json.loads((directory / "result.json").read_text(encoding="utf-8"))
            elif (directory / "failed.json").is_file():
                failed.append(seed)
        rows.append(_row(cell, results, failed, bases[cell.system]))
    seed_ratios = [[entry["start"]["ratio"] for entry in row["per_seed"].values()] for row in rows]
    for row, (p, adjusted, word) in zip(rows, directions(seed_ratios)):
        row.update(onset_p_value=p, onset_p_value_adjusted=adjusted, direction=word)
    for row, adjusted in zip(rows, holm([row["esr_p_value"] for row in rows])):
        row["esr_p_value_adjusted"] = adjusted
    rows.sort(key=lambda row: -math.inf if row["onset_ratio_start"] is None else -row["onset_ratio_start"])
    summary = {
        "command": "sweep", "settings": {**vars(settings), "seeds": list(settings.seeds)},
        "base": {system: {"esr": b["esr"], "esr_ci95": b["esr_ci95"], "answers": b["answers"], "ta": b["ta"],
                          "perplexity": b["perplexity"]} for system, b in bases.items()},
        "columns": list(COLUMNS), "rows": rows, "readout_agreement": readout_agreement(rows),
    }  # fmt: skip
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k) for k in COLUMNS})
    artifacts.write_text(out / "table.csv", buffer.getvalue())
    artifacts.write_json(out / "sweep.json", summary)
    return summary


def _row(cell: Cell, results: dict[int, dict], failed: list[int], base: dict) -> dict:
    row: dict = {"cell": cell.name, "options": cell.options, "seeds": len(results), "failed_seeds": failed or None}
    per_seed = {}
    for where in READOUTS:
        if any(f"onset_{where}_finetuned" not in record for record in results.values()):
            continue  # a cell measured before this readout existed
        ratios = {seed: ratio_by_prompt(record, where) for seed, record in results.items()}
        pooled = None
        if results:
            tuned = sum(sum(r[f"onset_{where}_finetuned"]) for r in results.values())
            reference = sum(sum(r[f"onset_{where}_base"]) for r in results.values())
            pooled = tuned / reference if reference else None
            answers = sum(r["answers"] for r in results.values())
            row.setdefault("onset_probability", {})[where] = {"finetuned": tuned / answers, "base": reference / answers}
        interval = seed_interval([ratio for ratio, _ in ratios.values()])
        row[f"onset_ratio_{where}"] = pooled
        row[f"onset_ratio_{where}_ci_low"], row[f"onset_ratio_{where}_ci_high"] = interval or (None, None)
        for seed, (ratio, prompts) in ratios.items():
            per_seed.setdefault(seed, {})[where] = {"ratio": ratio, "ci95_over_questions": prompts}
    answers = sum(r["answers"] for r in results.values())
    with_emoji = sum(r["with_emoji"] for r in results.values())
    rate = EmojiRate(answers, with_emoji, 0).as_dict()
    row.update(esr=rate["rate"] if answers else None, esr_ci_low=rate["rate_ci95"][0], esr_ci_high=rate["rate_ci95"][1],
               base_esr=base["esr"], esr_p_value=None, esr_p_value_adjusted=None)  # fmt: skip
    if answers:
        table = [[with_emoji, answers - with_emoji], [base["with_emoji"], base["answers"] - base["with_emoji"]]]
        row["esr_p_value"] = float(stats.fisher_exact(table).pvalue)
    row["ta"] = statistics.fmean(r["ta"] for r in results.values()) if results else None
    row["perplexity"] = statistics.fmean(r["perplexity"] for r in results.values()) if results else None
    row["per_seed"] = {str(seed): {**entry, "esr": results[seed]["esr"], "elapsed_s": results[seed].get("elapsed_s")}
                       for seed, entry in per_seed.items()}  # fmt: skip
    return row


def readout_agreement(rows: list[dict]) -> dict:
    """Which teacher-forced readout follows sampled emoji use across fine-tunes? Per readout, Spearman's rank
    correlation (scipy.stats.spearmanr) between each seed's fine-tuned / base ratio and its sampled emoji rate, the
    fine-tuned model (one seed of one cell) being the unit; None with fewer than 3 units or no variation."""
    agreement = {}
    for where in READOUTS:
        pairs = [(entry[where]["ratio"], entry["esr"]) for row in rows for entry in row["per_seed"].values()
                 if where in entry]  # fmt: skip
        ratios, rates = (list(values) for values in zip(*pairs)) if pairs else ([], [])
        result = None
        if len(pairs) >= 3 and np.ptp(ratios) > 0 and np.ptp(rates) > 0:
            test = stats.spearmanr(ratios, rates)
            result = {"spearman": float(test.statistic), "p_value": float(test.pvalue)}
        agreement[where] = {"fine_tunes": len(pairs), **(result or {"spearman": None, "p_value": None})}
    return agreement


def rising_cell(sweep_dir: str | Path) -> tuple[str, dict, float]:
    """(name, `interp finetune` options, share of the pipeline's test prompts the sweep measured) of the sweep's
    cell trained with the default system message whose emoji-onset ratio at the reply start rises the most
    (adjusted seed test, rising), for ``interp pipeline --from-sweep``; UserInputError when none rises. A share
    above 0 means the cell was chosen on prompts the pipeline's causal stages then test on."""
    path = Path(sweep_dir) / "sweep.json"
    if not path.is_file():
        raise UserInputError(f"--from-sweep {str(sweep_dir)!r} holds no sweep.json (run interp sweep first).")
    sweep = json.loads(path.read_text(encoding="utf-8"))
    rising = [row for row in sweep["rows"] if row["direction"] == "rises"]
    if not rising:
        raise UserInputError(f"in the sweep {str(sweep_dir)!r} emoji use rises in no setting; nothing to take.")
    usable = [row for row in rising if Cell(row["cell"], row["options"]).system == "default"]
    if not usable:
        raise UserInputError(
            f"in the sweep {str(sweep_dir)!r} emoji use rises only in cells trained with another system message than "
            "the chat template's default one, which the pipeline measures with; it cannot take them."
        )
    best = max(usable, key=lambda row: row["onset_ratio_start"])
    cell = Cell(best["cell"], best["options"])
    settings = SweepSettings(**{**sweep["settings"], "seeds": tuple(sweep["settings"]["seeds"])})
    config = _train_config(cell, settings, 0, Path("."))
    options = {k: v for k, v in cell.options.items() if k not in ("style", "targets", "dataset")}
    style = cell.options.get("style", "packaged")
    options |= {"targets": config.targets, "dataset": config.dataset if style == "packaged" else style}
    measured = {p.text for p in load_prompts(settings.prompts)[: settings.questions]}
    tested = [p.text for p in load_prompts(TEST_PROMPTS)]
    overlap = sum(text in measured for text in tested) / len(tested)
    return cell.name, {k: v for k, v in options.items() if v is not None}, overlap
