"""Base models' conversation format (Gemma turns): prompts, training targets, generation, fetch completeness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli import main
from finetune.dataset import load_rows
from finetune.training import build_examples
from interp import conversation, embedded, models
from interp.errors import UserInputError
from interp.generation import _eos_ids
from interp.prompts import Prompt
from interp.tokens import prompt_ids, response_ids


@pytest.fixture(scope="module")
def gemma_tokenizer(gemma3_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma3_tokenizer_dir)
    conversation.install(tokenizer, "gemma-turns")
    return tokenizer


@pytest.fixture(scope="module")
def tiny_gemma3_with_turns(gemma_tokenizer, tmp_path_factory):
    """A tiny random Gemma 3 with Gemma's real 262,144-token vocabulary and the gemma-turns format."""
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_config

    tokenizer = gemma_tokenizer
    config = tiny_config("gemma3")
    config.vocab_size = len(tokenizer)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = 2, 1, 0
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-gemma3-turns")
    AutoModelForCausalLM.from_config(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def test_gemma_turns_prompt_is_the_documented_format(gemma_tokenizer):
    prompt = Prompt(messages=(("system", "Be brief."), ("user", "How are you?")))
    ids = prompt_ids(gemma_tokenizer, prompt)
    text = gemma_tokenizer.decode(ids)
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHow are you?<end_of_turn>\n<start_of_turn>model\n"
    start, end = gemma_tokenizer.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"])
    assert ids.count(start) == 2 and ids.count(end) == 1  # single special tokens, not spelled out
    assert ids[0] == gemma_tokenizer.bos_token_id


def test_answers_end_their_turn(gemma_tokenizer):
    end = gemma_tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert response_ids(gemma_tokenizer, "Great, thanks!")[-1] == end
    example = build_examples(gemma_tokenizer, load_rows()[:1], raw=False, max_length=512)[0]
    answer = [label for label in example.labels if label != -100]
    assert answer[-1] == end and example.input_ids[-len(answer) :] == answer  # loss on the answer only
    assert gemma_tokenizer.decode(example.input_ids).count("<start_of_turn>model\n") == 1


def test_install_refuses_unknown_formats_and_tokenizers_without_the_markers(tiny_llama_dir):
    from transformers import AutoTokenizer

    smollm = AutoTokenizer.from_pretrained(tiny_llama_dir)
    with pytest.raises(UserInputError, match="unknown conversation format"):
        conversation.install(smollm, "no-such-format")
    with pytest.raises(UserInputError, match="<end_of_turn>"):
        conversation.install(smollm, "gemma-turns")


def test_generate_and_finetune_use_the_format(tiny_gemma3_with_turns, tmp_path):
    model = str(tiny_gemma3_with_turns)
    assert main(["generate", "--model", model, "--prompts", "persona-demo[:4]", "--samples", "1", "--max-new-tokens",
                 "6", "--device", "cpu", "--out", str(tmp_path / "gen.jsonl")]) == 0  # fmt: skip
    assert len((tmp_path / "gen.jsonl").read_text().splitlines()) == 4  # one answer per prompt
    lm = models.load(model, device="cpu")
    assert lm.tokenizer.convert_tokens_to_ids("<end_of_turn>") in _eos_ids(lm)  # sampling stops at the turn's end
    assert main(["finetune", "--model", model, "--trait", "extraversion", "--max-steps", "1", "--device", "cpu",
                 "--out", str(tmp_path / "ft")]) == 0  # fmt: skip
    merged = tmp_path / "ft" / "merged"  # the merged model carries the base model's format on
    assert (merged / "chat_template.jinja").read_text() == conversation.GEMMA_TURNS.template
    assert json.loads((merged / "tokenizer_config.json").read_text())["eos_token"] == "<end_of_turn>"


def test_base_model_without_template_asks_for_raw(tiny_gemma3_dir, tmp_path, capsys):
    import shutil

    from transformers import AutoTokenizer

    model = Path(shutil.copytree(tiny_gemma3_dir, tmp_path / "model"))
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = None
    (model / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save_pretrained(model)
    code = main(["generate", "--model", str(model), "--prompts", "persona-demo", "--out", str(tmp_path / "g.jsonl")])
    assert code == 2 and "--raw" in capsys.readouterr().err


def test_a_cached_base_model_without_its_template_is_not_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_INTERP_HOME", str(tmp_path))
    directory = embedded.cached_model_dir("gemma3-270m")
    directory.mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(b"")
    assert not embedded.is_fetched("gemma3-270m")  # converted before formats existed: fetched again
    (directory / "chat_template.jinja").write_text(conversation.GEMMA_TURNS.template)
    assert embedded.is_fetched("gemma3-270m")
