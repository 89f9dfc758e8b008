"""Prompt sets, teacher-forced responses and position masks."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from interp.errors import UserInputError
from interp.prompts import attach_responses, builtin_prompt_sets, load_prompts
from interp.tokens import build_sequences, make_batches, position_mask
from probes.emoji_tokens import token_byte_table
from tests.conftest import TOKENIZER_DIR


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def test_builtin_and_file_prompt_sets(tmp_path):
    assert "persona-demo" in builtin_prompt_sets()
    assert len(load_prompts("persona-demo")) >= 30
    path = tmp_path / "p.jsonl"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Yo"}]
    records = [{"prompt": "Hi"}, {"messages": messages, "response": "Hey 😊"}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    prompts = load_prompts(str(path))
    assert [p.text for p in prompts] == ["Hi", "Yo"]
    assert prompts[1].messages[0] == ("system", "Be brief.") and prompts[1].response == "Hey 😊"
    assert [p.index for p in prompts] == [0, 1]


def test_attach_responses_by_index_and_text(tmp_path):
    prompts = load_prompts("persona-demo")[:3]
    path = tmp_path / "r.jsonl"
    lines = [{"prompt_index": 2, "response": "a"}, {"prompt": prompts[0].text, "response": "b"},
             {"prompt_index": 2, "response": "c"}]  # fmt: skip
    path.write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    paired = attach_responses(prompts, str(path))
    assert [(p.index, p.response) for p in paired] == [(2, "a"), (0, "b"), (2, "c")]
    path.write_text(json.dumps({"prompt": "unknown", "response": "x"}), encoding="utf-8")
    with pytest.raises(UserInputError, match="matches no prompt"):
        attach_responses(prompts, str(path))


def test_position_masks(tokenizer):
    prompts = load_prompts("persona-demo")[:1]
    prompts = [type(prompts[0])(messages=prompts[0].messages, response="Sure 😊 fun!", index=0)]
    (sequence,) = build_sequences(tokenizer, prompts, raw=False, max_length=256)
    table = token_byte_table(tokenizer)
    n, start = len(sequence.ids), sequence.response_start
    assert tokenizer.decode(sequence.ids[start:]) == "Sure 😊 fun!<|im_end|>"
    assert position_mask(sequence, "all", table) == [i > 0 for i in range(n)]
    response = position_mask(sequence, "response", table)
    assert response == [start - 1 <= i < n - 1 for i in range(n)]
    pre_emoji = [i for i, counted in enumerate(position_mask(sequence, "pre-emoji", table)) if counted]
    assert len(pre_emoji) == 1
    assert tokenizer.decode(sequence.ids[pre_emoji[0] + 1 :]).startswith(" 😊")


def test_batches_are_right_padded(tokenizer):
    sequences = build_sequences(tokenizer, load_prompts("persona-demo")[:3], raw=False, max_length=256)
    masks = [position_mask(s, "all", []) for s in sequences]
    (batch,) = make_batches(sequences, masks, batch_size=8, pad_id=2)
    assert batch.input_ids.shape[0] == 3
    for row, seq in enumerate(sequences):
        assert batch.attention_mask[row].sum() == len(seq.ids)
        assert batch.input_ids[row, : len(seq.ids)].tolist() == list(seq.ids)
    assert batch.n_positions == sum(len(s.ids) - 1 for s in sequences)


def test_truncation_keeps_the_prompt(tokenizer):
    prompts = load_prompts("persona-demo")[:1]
    with pytest.raises(UserInputError, match="--max-length"):
        build_sequences(tokenizer, [type(prompts[0])(messages=prompts[0].messages, response="x")], False, 5)


def test_opinionqa_prompt_sets_come_from_finetune():
    prompts = load_prompts("opinionqa:test:extraversion")
    assert len(prompts) == 26
    assert prompts[0].text.startswith("Thinking about ")
    with pytest.raises(UserInputError, match="unknown trait"):
        load_prompts("opinionqa:test:grumpiness")
    with pytest.raises(UserInputError, match="should look like"):
        load_prompts("opinionqa:validation")


def test_sliced_prompt_sets_keep_their_indices_and_responses(tmp_path):
    whole = load_prompts("persona-demo")
    even, odd = load_prompts("persona-demo[0::2]"), load_prompts("persona-demo[1::2]")
    assert [p.index for p in even] == list(range(0, len(whole), 2)) and [p.text for p in odd] == [
        p.text for p in whole[1::2]
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps({"prompt_index": i, "response": f"r{i}"}) for i in range(4)), encoding="utf-8")
    assert [(p.index, p.response) for p in attach_responses(odd, str(path))] == [(1, "r1"), (3, "r3")]
    for bad in ("persona-demo[5:5]", "persona-demo[::0]"):
        with pytest.raises(UserInputError, match="selects no prompt|cannot be 0"):
            load_prompts(bad)
