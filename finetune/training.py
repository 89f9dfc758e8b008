"""``interp finetune``: a LoRA (or QLoRA) adapter that gives a chat model one Big Five trait pole.

Each training example is the chat-templated Opinion QA question followed by the trait's answer; the loss
counts the assistant's tokens only. Training is deterministic for a seed (data order from per-epoch
generators, dropout from the saved RNG state) and resumable: every ``checkpoint_every`` steps the adapter,
the optimizer state and the RNG state are written (safetensors + JSON, atomically) to ``OUT/checkpoint``,
and a rerun with the same settings continues from there. Outputs: ``OUT/adapter`` (PEFT, safetensors),
``OUT/merged`` (the merged model, safetensors), ``OUT/train_log.jsonl`` and ``OUT/train.json``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from finetune.checkpoint import append_log, load_checkpoint, save_checkpoint, step_progress, truncate_log
from finetune.dataset import POLES, check_trait, data_hash, load_rows, question_for, select, system_messages
from interp import artifacts, models
from interp.errors import UserInputError, check_at_least
from interp.models import QLORA_MARKER
from interp.prompts import Prompt
from interp.run_options import RunOptions
from interp.tokens import prompt_ids, response_ids

ALL_PROJECTIONS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@dataclass(kw_only=True)
class TrainConfig(RunOptions):
    """Defaults: the paper's adapter shape (q_proj + v_proj, r=64, alpha=16, dropout 0.1, lr 2e-4), which on
    SmolLM2 moved emoji use in the paper's direction (STACK_NOTES.md), 3 epochs: about 2-3 minutes per trait
    on 2 CPU cores with fp32 weights and bf16 autocast where the CPU has native bf16 (fp32 elsewhere)."""

    model: str
    trait: str
    out: Path
    pole: str = "high"
    qlora: bool = False
    rank: int = 64
    alpha: float = 16.0
    dropout: float = 0.1
    targets: str = "q_proj,v_proj"
    epochs: float = 3.0
    lr: float = 2e-4
    batch_size: int = 4
    max_steps: int | None = None
    seed: int = 0
    dataset: str | None = None
    checkpoint_every: int = 20
    # bf16 autocast on CPU (fp32 master weights); None: where the CPU has native bf16 (models.native_bf16),
    # since emulated bf16 is many times slower than fp32. Ignored for QLoRA and on GPUs.
    autocast: bool | None = None
    max_length: int = 160
    system: str = "default"  # the system message trained with: default | none | trait (finetune.dataset)
    rows: int | None = None  # train on the first N rows only (data size)

    def identity(self) -> dict:
        """The settings a checkpoint must share with a rerun to be resumed (not out, progress, max_steps)."""
        skip = {"out", "show_progress", "max_steps", "checkpoint_every"}
        identity = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items() if k not in skip}
        identity["autocast"] = self.bf16_autocast()  # resolved, so a checkpoint resumes only in the same precision
        for name, default in (("system", "default"), ("rows", None)):  # later options: absent at their default,
            if identity[name] == default:  # so earlier checkpoints still resume
                del identity[name]
        return identity

    def bf16_autocast(self) -> bool:
        """The ``autocast`` setting resolved: as asked, or (None) whether the CPU has native bf16."""
        return models.native_bf16() if self.autocast is None else self.autocast


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # -100 on prompt tokens


@dataclass
class TrainResult:
    out: Path
    steps: int
    final_loss: float
    seconds: float
    resumed_from: int
    record: dict = field(default_factory=dict)


def validate(config: TrainConfig) -> None:
    if config.pole not in POLES:
        raise UserInputError(f"--pole must be high or low, not {config.pole!r}.")
    if config.rank < 1 or config.alpha <= 0 or not 0 <= config.dropout < 1:
        raise UserInputError("--rank must be at least 1, --alpha positive and --dropout in [0, 1).")
    if config.epochs <= 0 or config.lr <= 0 or config.batch_size < 1:
        raise UserInputError("--epochs, --lr and --batch-size must be positive.")
    if config.max_steps is not None and config.max_steps < 1:
        raise UserInputError("--max-steps must be at least 1.")
    check_at_least("--rows", config.rows, 1)
    system_messages(config.system, config.trait, config.pole)  # refuses an unknown --system
    artifacts.check_output_dir(config.out)


def build_examples(tokenizer, rows, raw: bool, max_length: int, system: tuple = ()) -> list[Example]:
    """Question (after the ``system`` messages) plus answer per row; the loss counts the answer's tokens only."""
    examples = []
    for row in rows:
        head = prompt_ids(tokenizer, Prompt(messages=(*system, ("user", row.question or question_for(row.topic)))), raw)
        answer = response_ids(tokenizer, row.answer)
        ids = (head + answer)[:max_length]
        labels = ([-100] * len(head) + answer)[:max_length]
        examples.append(Example(ids, labels))
    return examples


def collate(examples: list[Example], pad_id: int):
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention[row, :n] = 1
    return ids, labels, attention


def _batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Example indices of global step ``step``: epoch e shuffles with seed + e; a short last batch is kept."""
    per_epoch = math.ceil(n / batch_size)
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return order[position * batch_size : (position + 1) * batch_size]


def training_step(model, optimizer, batch: tuple[torch.Tensor, ...], autocast: bool) -> float:
    """One optimizer step on a ``collate``d batch (ids, labels, attention [B, T]); ``autocast``: under bf16
    autocast on the CPU, with the model's own ``labels`` loss, as the published bf16 fine-tunes were trained
    (``answer_loss`` rounds differently, and a fine-tune's trajectory amplifies rounding into other effect sizes:
    BENCHMARKS.md, "Fine-tuning"); in fp32 with ``answer_loss``. Returns the loss."""
    ids, labels, attention = (t.to(model.device) for t in batch)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        if autocast:
            loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        else:
            loss = answer_loss(model, ids, labels, attention)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def answer_loss(model, ids: torch.Tensor, labels: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the labelled tokens (``labels`` [B, T], -100 elsewhere), as a causal LM's own loss
    with ``labels`` computes it, but unembedding only the positions that predict a labelled token: the answers'
    (about half of the demo's tokens) and not the prompts' (skipping a [positions, vocab] product and its
    backward)."""
    predicts = torch.zeros_like(labels, dtype=torch.bool)  # position t predicts token t + 1
    predicts[:, :-1] = labels[:, 1:] != -100
    logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=predicts).logits  # [N, vocab]
    return torch.nn.functional.cross_entropy(logits.float(), labels[:, 1:][predicts[:, :-1]])


def train(config: TrainConfig, log=print, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train (or resume) one adapter. ``on_step(step, loss)`` is called after each optimizer step."""
    from peft import LoraConfig, get_peft_model

    validate(config)
    rows = select(load_rows(config.dataset), config.trait, config.pole, "train")[: config.rows]
    if not rows:
        raise UserInputError(f"the dataset has no training rows for {config.trait} ({config.pole}).")
    started = time.perf_counter()
    base = models.resolve(config.model, fetch_log=log)
    if base.kind == "adapter":
        raise UserInputError(f"--model {config.model!r} is an adapter; merge it first (interp merge).")
    lm = models.load_quantized(base) if config.qlora else models.load(base, device=config.device, dtype="float32")
    tokenizer = lm.tokenizer
    system = system_messages(config.system, config.trait, config.pole)
    examples = build_examples(tokenizer, rows, config.raw, config.max_length, system)
    targets = [t.strip() for t in config.targets.split(",") if t.strip()]
    lora = LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets,
        task_type="CAUSAL_LM",
    )  # fmt: skip
    base_fingerprint = None if config.qlora else lm.fingerprint()
    torch.manual_seed(config.seed)
    try:
        model = get_peft_model(lm.model, lora)
    except ValueError as exc:
        raise UserInputError(f"--targets {config.targets!r} do not fit this model: {exc}") from None
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)
    per_epoch = math.ceil(len(examples) / config.batch_size)
    total = config.max_steps or math.ceil(config.epochs * per_epoch)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    start_step, losses = _resume(out, config, model, optimizer)
    if start_step:
        log(f"resuming from step {start_step} of {total}")
    fp32_on_cpu = lm.device.type == "cpu" and not config.qlora  # where autocast applies
    use_autocast = fp32_on_cpu and config.bf16_autocast()
    if fp32_on_cpu:
        log("training with bf16 autocast over fp32 weights" if use_autocast else "training in fp32")
    pad_id = tokenizer.pad_token_id
    log_path = out / "train_log.jsonl"
    step = start_step
    with step_progress(total, start_step, config.show_progress) as advance:
        for step in range(start_step, total):
            batch = [examples[i] for i in _batch_indices(step, len(examples), config.batch_size, config.seed)]
            losses.append(training_step(model, optimizer, collate(batch, pad_id), use_autocast))
            append_log(log_path, {"step": step + 1, "loss": losses[-1], "epoch": (step + 1) / per_epoch})
            advance(losses[-1])
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == total:
                from peft import get_peft_model_state_dict

                save_checkpoint(out / "checkpoint", get_peft_model_state_dict(model), optimizer, step + 1, losses,
                                config.identity())  # fmt: skip
            if on_step is not None:
                on_step(step + 1, losses[-1])
    seconds = time.perf_counter() - started
    record = {
        "command": "finetune",
        "config": config.identity() | {"max_steps": config.max_steps},
        "base_fingerprint": base_fingerprint,
        "data": {"rows": len(rows), "hash": data_hash(rows), "dataset": config.dataset or "packaged"},
        "steps": total,
        "epochs": total / per_epoch,
        "final_loss": losses[-1] if losses else None,
        "mean_loss_last_epoch": sum(losses[-per_epoch:]) / len(losses[-per_epoch:]) if losses else None,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "seconds": seconds,
        "resumed_from_step": start_step,
    }
    _write_outputs(out, config, model, base, record, log)
    return TrainResult(out, total, record["final_loss"], seconds, start_step, record)


def _resume(out: Path, config: TrainConfig, model, optimizer) -> tuple[int, list[float]]:
    """(step, losses) restored from ``out/checkpoint``, or (0, []) when there is none."""
    from peft import set_peft_model_state_dict

    if not (out / "checkpoint").exists():
        (out / "train_log.jsonl").unlink(missing_ok=True)
        return 0, []
    adapter, step, losses = load_checkpoint(out / "checkpoint", optimizer, config.identity())
    set_peft_model_state_dict(model, adapter)
    truncate_log(out / "train_log.jsonl", step)
    return step, losses


def _write_outputs(out: Path, config: TrainConfig, model, base, record: dict, log) -> None:
    """The adapter (PEFT format, records its base), the merged model and train.json, each atomically."""
    model.peft_config["default"].base_model_name_or_path = config.model
    with artifacts.staged_run_dir(out / "adapter") as staging:
        model.save_pretrained(staging, safe_serialization=True)
        if config.qlora:
            artifacts.write_json(staging / QLORA_MARKER, {"quant_type": "nf4", "base": config.model})
    log("merging the adapter into the base model ...")
    record["merged_fingerprint"] = merge_adapter(config.model, out / "adapter", out / "merged")
    artifacts.write_json(out / "train.json", record)


def merge_adapter(base: str, adapter: str | Path, out: Path) -> str:
    """Merge ``adapter`` into ``base`` in fp32 and write the merged model (weights and tokenizer) to ``out``,
    which appears whole; returns its weights fingerprint. A QLoRA adapter is merged into a fresh 4-bit base,
    dequantised first (the exact way on CPU; STACK_NOTES)."""
    artifacts.check_run_dir(out)
    merged = models.load(str(adapter), base_ref=base, device="cpu", dtype="float32")
    with artifacts.staged_run_dir(out) as staging:
        merged.model.save_pretrained(staging, safe_serialization=True)
        merged.tokenizer.save_pretrained(staging)
    return merged.fingerprint()


def train_traits(trait: str, out: Path, log=print, **options) -> list[TrainResult]:
    """``train`` for one trait into ``out``, or for every trait (``all``) into ``out/TRAIT``."""
    traits = check_trait(trait, allow_all=True)
    results = []
    for name in traits:
        config = TrainConfig(trait=name, out=Path(out) / name if len(traits) > 1 else Path(out), **options)
        log(f"training {name} ({config.pole}) -> {config.out}")
        results.append(train(config, log=log))
    return results
