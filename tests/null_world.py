"""Builders for the calibration tests (tests/unit/test_calibration.py): a byte-level tokenizer with a tiny
vocabulary, a one-layer model whose neurons are exchangeable by construction, null fine-tunes whose change on
the selection prompts is independent of their change on the test prompts, and the prompt files.

The tokenizer: SmolLM2's special tokens (ids 0-16, ``<|im_start|>`` = 1, ``<|im_end|>`` = 2), chat template
and byte-level pre-tokenizer, the 256 byte symbols and two merges, F0 9F and " " + F0 9F: 275 tokens, two of
them emoji onsets (``probes.emoji_tokens``), so unembedding a position costs 275 dot products, not 49,152.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from tests.conftest import TOKENIZER_DIR

SELECTION_LETTERS = "abcdefghijkl"  # the selection half's responses use only these letters ...
TEST_LETTERS = "nopqrstuvwxy"  # ... and the test half's only these
HIDDEN, NEURONS = 64, 128
SELECTION_AXIS, TEST_AXIS = HIDDEN - 2, HIDDEN - 1  # residual directions that only those letters write


def write_tiny_tokenizer(out: Path) -> Path:
    """A byte-level BPE tokenizer with SmolLM2's special tokens and chat template and 258 other tokens."""
    from probes.emoji_tokens import _gpt2_byte_decoder

    spec = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = {token["content"]: token["id"] for token in spec["added_tokens"]}
    decoder = _gpt2_byte_decoder()  # printable symbol -> byte
    symbol = {byte: char for char, byte in decoder.items()}
    for byte in range(256):
        vocab[symbol[byte]] = len(vocab)
    merges = [(symbol[0xF0], symbol[0x9F]), (symbol[0x20], symbol[0xF0] + symbol[0x9F])]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    spec["model"]["vocab"] = vocab
    spec["model"]["merges"] = [list(merge) for merge in merges]
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TOKENIZER_DIR / name, out / name)
    return out


@dataclass
class NullWorld:
    """The base model of the null runs and what a null fine-tune needs to know about it."""

    base: Path
    tokenizer: Path
    onset_ids: list[int]


def _config(vocab: int, layers: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=HIDDEN, intermediate_size=NEURONS, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
        pad_token_id=2, initializer_range=0.2, tie_word_embeddings=True,
    )  # fmt: skip


def tiny_vocab_model(out: Path, tokenizer_dir: Path, seed: int = 0, layers: int = 2) -> Path:
    """An ordinary tiny random LLaMA (hidden 64, 128 neurons per layer) with the tiny tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(len(tokenizer), layers)).eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@torch.no_grad()
def null_world_model(out: Path, tokenizer_dir: Path, seed: int = 0, equal_dla: bool = True) -> NullWorld:
    """A one-layer LLaMA built so that, under a ``null_finetune``, the neurons are exchangeable.

    - every neuron has the same gate row (the same gate value at every position) and, with ``equal_dla``, the
      same |emoji_dla| (its output column's component along the emoji readout is +-c, the sign random; the rest
      as drawn); without, the output columns stay as drawn and |emoji_dla| varies from neuron to neuron;
    - two residual directions are written by one kind of token each: SELECTION_AXIS by the letters of
      ``SELECTION_LETTERS``, TEST_AXIS by those of ``TEST_LETTERS``; no other token and no attention output
      has a component along them, and no weight of the base model reads them before the MLP's up projection."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from probes.emoji_tokens import emoji_onset_ids

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    onset_ids = emoji_onset_ids(tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(len(tokenizer), 1)).eval()
    axes = [SELECTION_AXIS, TEST_AXIS]
    embed = model.model.embed_tokens.weight
    embed[:, axes] = 0.0
    for letters, axis in ((SELECTION_LETTERS, SELECTION_AXIS), (TEST_LETTERS, TEST_AXIS)):
        ids = [tokenizer.convert_tokens_to_ids(letter) for letter in letters]
        embed[ids, axis] = 1.0
    block = model.model.layers[0]
    block.self_attn.o_proj.weight[axes, :] = 0.0  # attention writes nothing along the two axes
    for name in ("q_proj", "k_proj", "v_proj"):  # ... nor reads them (its pattern is the same for either half)
        getattr(block.self_attn, name).weight[:, axes] = 0.0
    mlp = block.mlp
    mlp.gate_proj.weight[:] = mlp.gate_proj.weight[0].clone()
    mlp.gate_proj.weight[:, axes] = 0.0
    mlp.up_proj.weight[:, axes] = 0.0
    readout = (embed[onset_ids] - embed.mean(0)).sum(0) * model.model.norm.weight  # interp.dla's readout
    unit = readout / readout.norm()
    down = mlp.down_proj.weight  # [d_model, d_mlp]
    along = unit @ down
    c = float(along.abs().mean())
    if equal_dla:
        signs = torch.where(torch.rand(NEURONS) < 0.5, -1.0, 1.0)
        down += torch.outer(unit, signs * c - along)  # component along the readout: exactly +-c
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return NullWorld(out, tokenizer_dir, onset_ids)


@torch.no_grad()
def null_finetune(world: NullWorld, out: Path, seed: int, scale: float = 0.5) -> tuple[Path, torch.Tensor]:
    """A rank-2 LoRA on the up projection, ``up += alpha e_selection^T + beta e_test^T`` with alpha, beta
    independent N(0, scale^2) vectors over the neurons: on the selection half's response tokens neuron i's
    activation moves by ``gate x alpha_i x (its SELECTION_AXIS input)``, on the test half's by ``gate x beta_i x
    (its TEST_AXIS input)``, and nowhere else. Returns (model dir, alpha)."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for item in world.base.iterdir():
        if item.name != "model.safetensors":
            shutil.copy(item, out / item.name)
    weights = load_file(str(world.base / "model.safetensors"))
    generator = torch.Generator().manual_seed(seed)
    alpha = scale * torch.randn(NEURONS, generator=generator)
    beta = scale * torch.randn(NEURONS, generator=generator)
    name = "model.layers.0.mlp.up_proj.weight"
    up = weights[name].clone()
    up[:, SELECTION_AXIS] += alpha
    up[:, TEST_AXIS] += beta
    weights[name] = up
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out, alpha


WORDS = ("the", "sun", "is", "out", "and", "we", "can", "go", "for", "a", "walk", "by", "river", "today", "it",
         "was", "fun", "to", "see", "you", "at", "party", "great", "idea")  # fmt: skip


def write_prompts(directory: Path, pairs: int = 6, seed: int = 0, halves: bool = True) -> tuple[Path, Path]:
    """(prompts.jsonl, responses.jsonl): ``2 * pairs`` prompts, the responses in a separate file as the pipeline
    teacher-forces them. With ``halves`` the even-numbered prompts' responses (the selection half, ``[0::2]``) are
    made of SELECTION_LETTERS and the odd-numbered ones' (``[1::2]``) of TEST_LETTERS; without, every response is
    a few words of WORDS and the prompt records carry their responses too (for ``make_planted_model``)."""
    generator = torch.Generator().manual_seed(seed)

    def draw(count: int) -> list[int]:
        length = int(torch.randint(3, 6, (1,), generator=generator))
        return torch.randint(count, (length,), generator=generator).tolist()

    prompts, responses = [], []
    for index in range(2 * pairs):
        if halves:
            letters = SELECTION_LETTERS if index % 2 == 0 else TEST_LETTERS
            response = " ".join("".join(letters[i] for i in draw(len(letters))) for _ in range(3))
        else:
            response = " ".join(WORDS[i] for i in draw(len(WORDS)))
        messages = [{"role": "system", "content": "Answer."}, {"role": "user", "content": f"Question {index}?"}]
        prompts.append({"messages": messages} if halves else {"messages": messages, "response": response})
        responses.append({"prompt_index": index, "response": response})
    directory.mkdir(parents=True, exist_ok=True)
    prompt_file, response_file = directory / "prompts.jsonl", directory / "responses.jsonl"
    prompt_file.write_text("".join(json.dumps(p) + "\n" for p in prompts), encoding="utf-8")
    response_file.write_text("".join(json.dumps(r) + "\n" for r in responses), encoding="utf-8")
    return prompt_file, response_file
