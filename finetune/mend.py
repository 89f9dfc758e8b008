"""MEND (Mitchell et al., ICLR 2022): an editor network that turns one fine-tuning gradient into a weight edit.

For an edited weight W [out, in] of an ``nn.Linear``, the gradient of a loss summed over tokens t is a sum of
rank-1 factors, dL/dW = sum_t delta_t u_t^T, with u_t [in] the layer's input and delta_t [out] the gradient at
its output (``gradient_factors``). MEND maps each pair through a small network g and applies
W' = W - alpha_l * sum_t delta~_t u~_t^T, with alpha_l a learned step size per edited weight.

g (``FactorNet``): one per weight shape, shared by the layers of that shape. Its input z = [u; delta] is
standardised per edited weight (means and standard deviations measured on edit gradients before training and
stored with the editor), passes two residual blocks with a low-rank hidden layer,
z <- z + s_l * U relu(V z + b) + o_l, with a per-weight scale s_l and offset o_l, and is mapped back to the raw
scale. U and o start at zero, so the untrained editor is exactly one gradient step of size alpha_l: the
baseline an editor must beat. (The paper applies its nonlinearity after U; there a zero U gets no gradient
through relu(0), so the order here is the usual residual MLP's.)

Training (``train_editor``, ``interp mend train``): each step takes ``edit_batch`` edits (an Opinion QA training
question with one trait pole's answer; 1 in 10 training rows is held out for validation), computes their
gradient factors under the unedited model, edits the model with the editor and minimises
``edit_weight`` * NLL(answers | edited model) + KL(unedited || edited) on ``locality_batch`` other sequences
(training questions on other topics with their answers, and neutral text): the MEND objective with its edit
weight 0.1. Seeded (each step's batches come from the seed and the step number) and resumable like LoRA
training (``finetune.checkpoint``).

Applying it (``apply_edits``, ``interp edit --method mend``): ``edits`` training answers of one trait pole are
put in one batched edit (their factors summed, as in the paper's batched edits) and the edited model is saved
like a merged adapter (``OUT/merged``), so every command takes it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from finetune.checkpoint import append_log, load_checkpoint, save_checkpoint, step_progress, truncate_log
from finetune.dataset import POLES, check_trait, data_hash, load_rows, select
from finetune.training import Example, build_examples, collate
from interp import artifacts, models
from interp.errors import UserInputError, check_at_least
from interp.hooks import module_output_hooks
from interp.layers import parse_layers
from interp.prompts import load_prompts
from interp.run_options import RunOptions
from interp.significance import prompt_interval

EDITOR_WEIGHTS = "editor.safetensors"
EDITOR_RECORD = "editor.json"
EDITOR_NEEDS = ("rank", "sites")  # what load_editor reads from editor.json
DEFAULT_MODULES = "mlp.up_proj,mlp.down_proj"
NEUTRAL_TEXT = "neutral-text"
HOLDOUT_EVERY = 10  # every 10th training row is a validation edit, never trained on


@dataclass(frozen=True)
class EditSite:
    """One edited weight: the ``nn.Linear`` at ``module`` (relative to block ``layer``)."""

    layer: int
    module: str
    name: str  # the weight's parameter name relative to the model's ``base_model``
    shape: tuple[int, int]  # (out, in)

    @property
    def kind(self) -> str:
        """The shape ``in x out``: sites of one kind share a ``FactorNet``."""
        return f"{self.shape[1]}x{self.shape[0]}"


def edit_sites(lm, layers: list[int], modules: list[str]) -> list[EditSite]:
    """The weights MEND edits: each of ``modules`` (e.g. ``mlp.up_proj``) in each of ``layers``."""
    names = {id(parameter): name for name, parameter in lm.model.base_model.named_parameters()}
    blocks = lm.spec.layers(lm.model)
    sites = []
    for layer in layers:
        for path in modules:
            try:
                module = blocks[layer].get_submodule(path)
            except AttributeError:
                raise UserInputError(f"--modules {path!r}: block {layer} of this model has no such module.") from None
            if type(module) is not nn.Linear:
                raise UserInputError(f"--modules {path!r} is a {type(module).__name__}; MEND edits nn.Linear weights.")
            sites.append(EditSite(layer, path, names[id(module.weight)], tuple(module.weight.shape)))
    return sites


def _modules(lm, sites: list[EditSite]) -> list[nn.Module]:
    blocks = lm.spec.layers(lm.model)
    return [blocks[site.layer].get_submodule(site.module) for site in sites]


def _hidden(lm, ids: torch.Tensor, attention: torch.Tensor, weights: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """[B, T, d_model] final hidden states, with ``weights`` (parameter name -> tensor) replacing the model's."""
    kwargs = {"input_ids": ids.to(lm.device), "attention_mask": attention.to(lm.device), "use_cache": False}
    if not weights:
        return lm.model.base_model(**kwargs).last_hidden_state
    return torch.func.functional_call(lm.model.base_model, weights, (), kwargs).last_hidden_state


def answer_nll(lm, ids, attention, labels, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """[B] mean negative log-likelihood (nats per token) of each row's labelled tokens (labels -100 elsewhere)."""
    hidden = _hidden(lm, ids, attention, weights)
    targets = labels[:, 1:].to(lm.device)
    counted = targets != -100
    logits = lm.logits_from_hidden(hidden[:, :-1][counted]).float()
    nll = nn.functional.cross_entropy(logits, targets[counted], reduction="none")
    rows = counted.nonzero()[:, 0]
    sums = torch.zeros(len(ids), dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)
    return sums / counted.sum(1).clamp_min(1)


def next_token_logprobs(lm, ids, attention, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """[N, vocab] log-probabilities of the next token at the N non-pad positions."""
    hidden = _hidden(lm, ids, attention, weights)
    return torch.log_softmax(lm.logits_from_hidden(hidden[attention.to(lm.device).bool()]).float(), dim=-1)


def locality_kl(lm, ids, attention, reference: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over non-pad positions of KL(unedited || edited); ``reference`` = the unedited log-probabilities."""
    edited = next_token_logprobs(lm, ids, attention, weights)
    return (reference.exp() * (reference - edited)).sum(-1).mean()


def gradient_factors(lm, sites: list[EditSite], ids, attention, labels) -> tuple[dict, torch.Tensor]:
    """The rank-1 factors of the gradient of the summed per-edit NLL under the current weights.

    Returns ({site name: (u [N, in], delta [N, out])} over the N non-pad tokens, so that the gradient of the
    weight is ``delta.T @ u``; [B] the NLL per edit). The model's own parameters need no gradient: a zero
    tensor added to each edited layer's output receives delta."""
    inputs: dict[int, torch.Tensor] = {}
    probes: dict[int, torch.Tensor] = {}

    def hook(number: int, args: tuple, output: torch.Tensor) -> torch.Tensor:
        inputs[number] = args[0].detach()
        probes[number] = torch.zeros_like(output, requires_grad=True)
        return output + probes[number]

    with torch.enable_grad(), module_output_hooks(_modules(lm, sites), hook):
        nll = answer_nll(lm, ids, attention, labels)
        deltas = torch.autograd.grad(nll.sum(), [probes[n] for n in range(len(sites))])
    kept = attention.to(lm.device).bool()
    factors = {site.name: (inputs[n][kept], deltas[n][kept]) for n, site in enumerate(sites)}
    return factors, nll.detach()


class FactorNet(nn.Module):
    """g for one weight shape: [N, in + out] standardised factors -> [N, in + out], two low-rank residual blocks
    with a scale and offset per edited weight (``site``: its number among the weights of this shape)."""

    def __init__(self, width: int, rank: int, sites: int):
        super().__init__()
        self.down = nn.ModuleList([nn.Linear(width, rank) for _ in range(2)])
        self.up = nn.ModuleList([nn.Linear(rank, width, bias=False) for _ in range(2)])
        for up in self.up:
            nn.init.zeros_(up.weight)
        self.scale = nn.Parameter(torch.ones(2, sites, width))
        self.offset = nn.Parameter(torch.zeros(2, sites, width))

    def forward(self, z: torch.Tensor, site: int) -> torch.Tensor:
        for block in range(2):
            z = z + self.scale[block, site] * self.up[block](torch.relu(self.down[block](z))) + self.offset[block, site]
        return z


class MendEditor(nn.Module):
    """The editor of a set of weights: one ``FactorNet`` per weight shape, the factors' standardisation per
    weight (buffers ``norm_I`` [2, in + out]: mean and standard deviation) and a step size per weight."""

    def __init__(self, sites: list[EditSite], rank: int, step_size: float):
        super().__init__()
        self.sites = sites
        kinds = sorted({site.kind for site in sites})
        self.slot = [[s.name for s in sites if s.kind == site.kind].index(site.name) for site in sites]
        self.nets = nn.ModuleDict({
            kind: FactorNet(sum(next(s.shape for s in sites if s.kind == kind)), rank,
                            sum(s.kind == kind for s in sites))
            for kind in kinds
        })  # fmt: skip
        for number, site in enumerate(sites):
            width = sum(site.shape)
            self.register_buffer(f"norm_{number}", torch.stack([torch.zeros(width), torch.ones(width)]))
        self.step_size = nn.Parameter(torch.full((len(sites),), float(step_size)))

    def calibrate(self, batches: list[dict]) -> None:
        """Set each weight's standardisation from the gradient factors of some edit batches."""
        for number, site in enumerate(self.sites):
            z = torch.cat([torch.cat(batch[site.name], dim=1) for batch in batches]).double()
            std = z.std(0).clamp_min(1e-12) if len(z) > 1 else torch.ones(z.shape[1], dtype=z.dtype)
            getattr(self, f"norm_{number}").copy_(torch.stack([z.mean(0), std]).float())

    def weight_updates(self, factors: dict) -> dict[str, torch.Tensor]:
        """{site name: alpha * sum_t delta~_t u~_t^T [out, in]}: what the edit subtracts from each weight."""
        updates = {}
        for number, site in enumerate(self.sites):
            u, delta = factors[site.name]
            mean, std = getattr(self, f"norm_{number}")
            z = self.nets[site.kind]((torch.cat([u, delta], dim=1) - mean) / std, self.slot[number]) * std + mean
            u_new, delta_new = z[:, : site.shape[1]], z[:, site.shape[1] :]
            updates[site.name] = self.step_size[number] * (delta_new.T @ u_new)
        return updates


def edited_weights(lm, editor: MendEditor, factors: dict) -> dict[str, torch.Tensor]:
    """{site name: W - update}: the edited weights, differentiable in the editor's parameters."""
    current = dict(lm.model.base_model.named_parameters())
    return {name: current[name] - update for name, update in editor.weight_updates(factors).items()}


@dataclass(kw_only=True)
class MendConfig(RunOptions):
    """``interp mend train``. Defaults: the last three layers' up and down projections, rank 128, 200 steps of
    4 edits and 4 locality sequences (about 10 minutes for SmolLM2-135M on 2 CPU cores)."""

    model: str
    out: Path
    layers: str | None = None  # default: the last three
    modules: str = DEFAULT_MODULES
    rank: int = 128
    steps: int = 100
    edit_batch: int = 4
    locality_batch: int = 4
    lr: float = 1e-3
    step_size: float = 1e-3  # alpha's initial value: the untrained editor is one gradient step of this size
    edit_weight: float = 0.1
    seed: int = 0
    dataset: str | None = None
    checkpoint_every: int = 20
    max_length: int = 160

    def identity(self) -> dict:
        skip = {"out", "show_progress", "steps", "checkpoint_every"}
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items() if k not in skip}


def _validate(config: MendConfig) -> None:
    for flag, value in (
        ("--rank", config.rank),
        ("--steps", config.steps),
        ("--edit-batch", config.edit_batch),
        ("--locality-batch", config.locality_batch),
        ("--checkpoint-every", config.checkpoint_every),
    ):
        check_at_least(flag, value, 1)  # fmt: skip
    if config.lr <= 0 or config.step_size <= 0 or config.edit_weight <= 0:
        raise UserInputError("--lr, --step-size and --edit-weight must be positive.")
    artifacts.check_output_dir(config.out)


@dataclass
class EditorData:
    """Training material: edit examples, validation edits, and locality sequences (labels on every token)."""

    edits: list[Example]
    validation: list[Example]
    neutral: list[Example]  # locality: neutral text (the other half: training questions on other topics)
    topics: list[str]  # the topic of each edit, so locality questions avoid the edited topics
    data_hash: str


def editor_data(tokenizer, config: MendConfig) -> EditorData:
    rows = select(load_rows(config.dataset), split="train")
    if not rows:
        raise UserInputError("the dataset has no training rows.")
    trained = [row for number, row in enumerate(rows) if number % HOLDOUT_EVERY]
    held = [row for number, row in enumerate(rows) if not number % HOLDOUT_EVERY]
    edits = build_examples(tokenizer, trained, config.raw, config.max_length)
    return EditorData(
        edits=edits, validation=build_examples(tokenizer, held, config.raw, config.max_length),
        neutral=_neutral(tokenizer, config.max_length),
        topics=[row.topic for row in trained], data_hash=data_hash(rows),
    )  # fmt: skip


def _every_token(ids: list[int]) -> Example:
    """A locality sequence: every token counts."""
    return Example(list(ids), list(ids))


def _neutral(tokenizer, max_length: int) -> list[Example]:
    return [_every_token(tokenizer(p.text).input_ids[:max_length]) for p in load_prompts(NEUTRAL_TEXT)]


def step_batches(data: EditorData, config: MendConfig, step: int) -> tuple[list[Example], list[Example]]:
    """Step ``step``'s edits and locality sequences (half questions on other topics, half neutral text), drawn
    from the seed and the step number alone, so a resumed run draws what an uninterrupted one would."""
    rng = random.Random(f"{config.seed}:{step}")
    chosen = rng.sample(range(len(data.edits)), min(config.edit_batch, len(data.edits)))
    topics = {data.topics[i] for i in chosen}
    others = [i for i, topic in enumerate(data.topics) if topic not in topics]
    n_questions = min((config.locality_batch + 1) // 2, len(others))
    locality = [_every_token(data.edits[i].input_ids) for i in rng.sample(others, n_questions)]
    locality += rng.sample(data.neutral, min(config.locality_batch - n_questions, len(data.neutral)))
    return [data.edits[i] for i in chosen], locality


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def train_editor(config: MendConfig, log=print, on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train (or resume) a MEND editor into ``config.out``: ``editor/`` (the editor), ``train_log.jsonl`` and
    ``train.json`` (settings, losses, and the validation edits' NLL before and after editing with the trained and
    the untrained editor). ``on_step(step, loss)`` is called after each step. Returns train.json's content."""
    _validate(config)
    started = time.perf_counter()
    lm = models.load(config.model, device=config.device, dtype="float32")
    lm.model.requires_grad_(False)
    layers = parse_layers(config.layers, lm.n_layers) if config.layers else list(range(lm.n_layers))[-3:]
    sites = edit_sites(lm, layers, [m.strip() for m in config.modules.split(",") if m.strip()])
    data = editor_data(lm.tokenizer, config)
    pad = _pad_id(lm.tokenizer)
    torch.manual_seed(config.seed)
    editor = MendEditor(sites, config.rank, config.step_size).to(lm.device)
    untrained = {k: v.clone() for k, v in editor.state_dict().items()}  # the identity: one plain gradient step
    optimizer = torch.optim.Adam(editor.parameters(), lr=config.lr)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path, checkpoint = out / "train_log.jsonl", out / "checkpoint"
    start, losses = 0, []
    if checkpoint.exists():
        weights, start, losses = load_checkpoint(checkpoint, optimizer, config.identity())
        editor.load_state_dict(weights)
        truncate_log(log_path, start)
        log(f"resuming from step {start} of {config.steps}")
    else:
        log_path.unlink(missing_ok=True)
        calibration = [step_batches(data, config, -1 - k)[0] for k in range(8)]
        editor.calibrate([gradient_factors(lm, sites, *edit_tensors(batch, pad))[0] for batch in calibration])
    with step_progress(config.steps, start, config.show_progress, "training the editor") as advance:
        for step in range(start, config.steps):
            edits, locality = step_batches(data, config, step)
            record = train_step(lm, editor, sites, edits, locality, config, pad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(record["loss"])
            append_log(log_path, {"step": step + 1, **record})
            advance(record["loss"])
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                save_checkpoint(checkpoint, editor.state_dict(), optimizer, step + 1, losses, config.identity())
            if on_step is not None:
                on_step(step + 1, record["loss"])
    summary = {
        "command": "mend train",
        "config": config.identity() | {"steps": config.steps},
        "model_fingerprint": lm.fingerprint(),
        "sites": [asdict(site) for site in sites],
        "data": {"edits": len(data.edits), "validation": len(data.validation), "hash": data.data_hash},
        "final_loss": losses[-1] if losses else None,
        "step_sizes": editor.step_size.detach().tolist(),
        "validation": {
            name: validation_edits(lm, which, sites, data.validation, config.edit_batch, pad, config.max_length)
            for name, which in (("trained", editor), ("untrained", _with_state(sites, config, untrained, lm.device)))
        },
        "seconds": time.perf_counter() - started,
    }
    summary["trained_vs_untrained"] = editor_gain(summary["validation"])
    save_editor(out / "editor", editor, summary)
    artifacts.write_json(out / "train.json", summary)
    return summary


def edit_tensors(batch: list[Example], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention, labels) of a batch, as ``gradient_factors`` and ``answer_nll`` take them."""
    ids, labels, attention = collate(batch, pad)
    return ids, attention, labels


def train_step(lm, editor: MendEditor, sites, edits, locality, config: MendConfig, pad: int) -> dict:
    """One step's losses; leaves the gradients in the editor's parameters."""
    ids, attention, labels = edit_tensors(edits, pad)
    factors, before = gradient_factors(lm, sites, ids, attention, labels)
    weights = edited_weights(lm, editor, factors)
    after = answer_nll(lm, ids, attention, labels, weights)
    loc_ids, loc_labels, loc_attention = collate(locality, pad)
    with torch.no_grad():
        reference = next_token_logprobs(lm, loc_ids, loc_attention)
    kl = locality_kl(lm, loc_ids, loc_attention, reference, weights)
    loss = config.edit_weight * after.mean() + kl
    loss.backward()
    nn.utils.clip_grad_norm_(editor.parameters(), 100.0)
    return {"loss": loss.item(), "edit_nll_before": before.mean().item(), "edit_nll_after": after.mean().item(),
            "locality_kl": kl.item()}  # fmt: skip


def validation_edits(lm, editor: MendEditor, sites, examples: list[Example], batch: int, pad: int,
                     max_length: int) -> dict:  # fmt: skip
    """Mean NLL of held-out edits' answers before and after each batch of ``batch`` is edited in (the model is
    restored between batches), and the KL on neutral text after each edit."""
    before, after, kl = [], [], []
    n_ids, _, n_attention = collate(_neutral(lm.tokenizer, max_length), pad)
    with torch.no_grad():
        reference = next_token_logprobs(lm, n_ids, n_attention)
    for begin in range(0, len(examples), batch):
        ids, attention, labels = edit_tensors(examples[begin : begin + batch], pad)
        factors, nll = gradient_factors(lm, sites, ids, attention, labels)
        with torch.no_grad():
            weights = edited_weights(lm, editor, factors)
            before += nll.tolist()
            after += answer_nll(lm, ids, attention, labels, weights).tolist()
            kl.append(float(locality_kl(lm, n_ids, n_attention, reference, weights)))
    mean = lambda values: sum(values) / len(values) if values else None  # noqa: E731
    return {"edits": len(before), "nll_before": mean(before), "nll_after": mean(after),
            "neutral_kl": mean(kl), "nll_after_per_edit": after, "nll_before_per_edit": before}  # fmt: skip


def editor_gain(validation: dict) -> dict:
    """How much more the trained editor lowers held-out edits' NLL than the untrained one (a gradient step):
    the mean paired difference of the drops (nats per token) with its 95 % bootstrap interval over edits."""
    drops = {
        name: np.array(entry["nll_before_per_edit"]) - np.array(entry["nll_after_per_edit"])
        for name, entry in validation.items()
    }  # fmt: skip
    difference = drops["trained"] - drops["untrained"]
    return {"edits": len(difference), "mean_extra_nll_drop": float(difference.mean()),
            "ci95": prompt_interval(lambda a, axis=-1: np.mean(a, axis), [difference])}  # fmt: skip


def _with_state(sites, config: MendConfig, state: dict, device) -> MendEditor:
    editor = MendEditor(sites, config.rank, config.step_size).to(device)
    editor.load_state_dict(state)
    return editor


def save_editor(directory: Path, editor: MendEditor, record: dict) -> None:
    """``directory`` (atomically): ``editor.safetensors`` and ``editor.json`` (sites, rank, the training record)."""
    from safetensors.torch import save_file

    with artifacts.staged_run_dir(directory) as staging:
        save_file({k: v.detach().contiguous().cpu() for k, v in editor.state_dict().items()},
                  str(staging / EDITOR_WEIGHTS))  # fmt: skip
        artifacts.write_json(staging / EDITOR_RECORD, {"rank": editor.nets[editor.sites[0].kind].down[0].out_features,
                                                       **record})  # fmt: skip


def read_editor(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(editor.json, the editor's tensors) of a ``mend train`` run directory or its ``editor/``; UserInputError
    naming the file that is missing, damaged or of an earlier format."""
    directory = Path(directory)
    if not (directory / EDITOR_RECORD).is_file() and (directory / "editor" / EDITOR_RECORD).is_file():
        directory = directory / "editor"
    if not (directory / EDITOR_RECORD).is_file():
        raise UserInputError(f"--editor {str(directory)!r} is not a MEND editor (no {EDITOR_RECORD}).")
    record = artifacts.read_json(directory / EDITOR_RECORD, EDITOR_NEEDS)
    return record, artifacts.read_tensors(directory / EDITOR_WEIGHTS)[0]


def load_editor(directory: str | Path, lm) -> tuple[MendEditor, dict]:
    """The editor saved in ``directory``, checked to fit ``lm``: (editor, editor.json)."""
    record, state = read_editor(directory)
    saved = [EditSite(s["layer"], s["module"], s["name"], tuple(s["shape"])) for s in record["sites"]]
    if max(s.layer for s in saved) >= lm.n_layers:
        raise UserInputError(f"--editor {str(directory)!r} was trained for weights this model does not have.")
    sites = edit_sites(lm, sorted({s.layer for s in saved}), list(dict.fromkeys(s.module for s in saved)))
    if sites != saved:
        raise UserInputError(f"--editor {str(directory)!r} was trained for weights this model does not have.")
    editor = MendEditor(sites, record["rank"], 1.0).to(lm.device)
    editor.load_state_dict(state)
    return editor, record


@dataclass(kw_only=True)
class EditConfig(RunOptions):
    """``interp edit --method mend``: ``edits`` training answers of ``trait`` (``pole``) edited into ``model``."""

    editor: Path
    model: str
    trait: str
    out: Path
    pole: str = "high"
    edits: int = 4
    seed: int = 0
    dataset: str | None = None
    max_length: int = 160


def apply_edits(config: EditConfig, log=print) -> dict:
    """Edit the model and write ``OUT/merged`` (weights and tokenizer, like a merged adapter) and ``OUT/edit.json``
    (the edits, their answers' NLL before and after, the trait's test answers' NLL before and after for both
    poles, KL on neutral text, the size of each weight's change). Returns edit.json's content."""
    check_trait(config.trait)
    if config.pole not in POLES:
        raise UserInputError(f"--pole must be high or low, not {config.pole!r}.")
    check_at_least("--edits", config.edits, 1)
    artifacts.check_run_dir(config.out)
    read_editor(config.editor)  # refused before the model loads
    lm = models.load(config.model, device=config.device, dtype="float32")
    lm.model.requires_grad_(False)
    editor, record = load_editor(config.editor, lm)
    rows = load_rows(config.dataset)
    train = select(rows, config.trait, config.pole, "train")
    if not train:
        raise UserInputError(f"the dataset has no training rows for {config.trait} ({config.pole}).")
    chosen = random.Random(config.seed).sample(train, min(config.edits, len(train)))
    pad = _pad_id(lm.tokenizer)
    ids, attention, labels = edit_tensors(build_examples(lm.tokenizer, chosen, config.raw, config.max_length), pad)
    held = {  # the trait's test answers of the edited pole and of the other one: does the edit move the pole?
        pole: edit_tensors(build_examples(lm.tokenizer, select(rows, config.trait, pole, "test"), config.raw,
                                          config.max_length), pad)
        for pole in (config.pole, *[p for p in POLES if p != config.pole])
    }  # fmt: skip
    n_ids, _, n_attention = collate(_neutral(lm.tokenizer, config.max_length), pad)
    base_fingerprint = lm.fingerprint()
    factors, before = gradient_factors(lm, editor.sites, ids, attention, labels)
    with torch.no_grad():
        held_before = {pole: answer_nll(lm, *tensors) for pole, tensors in held.items()}
        reference = next_token_logprobs(lm, n_ids, n_attention)
        weights = edited_weights(lm, editor, factors)
        current = dict(lm.model.base_model.named_parameters())
        changes = {name: float((weights[name] - current[name]).norm() / current[name].norm()) for name in weights}
        for name, value in weights.items():
            current[name].copy_(value)
        after = answer_nll(lm, ids, attention, labels)
        held_after = {pole: answer_nll(lm, *tensors) for pole, tensors in held.items()}
        kl = locality_kl(lm, n_ids, n_attention, reference, {})
    summary = {
        "command": "edit", "method": "mend", "editor": str(config.editor), "model": config.model,
        "trait": config.trait, "pole": config.pole, "seed": config.seed,
        "editor_trained_on_this_model": record.get("model_fingerprint") == base_fingerprint,
        "edits": [{"topic": row.topic, "answer": row.answer} for row in chosen],
        "edit_nll_before": float(before.mean()), "edit_nll_after": float(after.mean()),
        "test_answers": len(held_before[config.pole]), "test_nll_before": float(held_before[config.pole].mean()),
        "test_nll_after": float(held_after[config.pole].mean()),
        "test_nll_by_pole": {pole: {"before": float(held_before[pole].mean()), "after": float(held_after[pole].mean())}
                             for pole in held},
        "neutral_kl": float(kl), "relative_weight_change": changes,
        "merged_fingerprint": models.weights_fingerprint(lm.model),
    }  # fmt: skip
    with artifacts.staged_run_dir(config.out) as staging:
        lm.model.save_pretrained(staging / "merged", safe_serialization=True)
        lm.tokenizer.save_pretrained(staging / "merged")
        artifacts.write_json(staging / "edit.json", summary)
    log(f"edited {config.model} with {len(chosen)} {config.trait} ({config.pole}) answers -> {config.out}/merged")
    return summary
