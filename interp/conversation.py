"""Conversation formats for base models, whose tokenizers have no chat template.

A chat-tuned model brings its own template (``tokenizer.chat_template``, e.g. SmolLM2's ChatML) and every
command uses it as is. A base model has none. An embedded alias then names one of ``FORMATS``, and
``interp models fetch`` writes it into the converted model directory: the template as
``chat_template.jinja`` and the format's end-of-turn token as the tokenizer's ``eos_token`` (so a
fine-tuned answer ends with it and generation stops at it). Everything downstream (finetune, generate,
evaluate, diff-neurons, ablate, the adapters and merged models they save) then formats conversations the
same way, chosen by the model reference and never per command. For another base model directory,
``install`` does the same (or pass ``--raw`` to feed plain text).

``gemma-turns``: Gemma's turn markers, as Google's instruction-tuned Gemma 3 models use them::

    <bos><start_of_turn>user
    {system}

    {user}<end_of_turn>
    <start_of_turn>model
    {assistant}<end_of_turn>

(a system message is folded into the first user turn: Gemma has no system role).
"""

from __future__ import annotations

from dataclasses import dataclass

from interp.errors import UserInputError


@dataclass(frozen=True)
class ConversationFormat:
    name: str
    template: str  # Jinja chat template (transformers' apply_chat_template)
    end_of_turn: str  # token that closes a turn; becomes the tokenizer's eos_token


GEMMA_TURNS = ConversationFormat(
    name="gemma-turns",
    template=(
        "{{ bos_token }}"
        "{%- set ns = namespace(system='') -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}"
        "{%- set ns.system = message['content'] | trim + '\n\n' -%}"
        "{%- else -%}"
        "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
        "{{ '<start_of_turn>' + role + '\n' + (ns.system if role == 'user' else '') + message['content'] | trim"
        " + '<end_of_turn>\n' }}"
        "{%- if role == 'user' -%}{%- set ns.system = '' -%}{%- endif -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
    ),
    end_of_turn="<end_of_turn>",
)

FORMATS: dict[str, ConversationFormat] = {GEMMA_TURNS.name: GEMMA_TURNS}


def install(tokenizer, name: str) -> None:
    """Give ``tokenizer`` the conversation format ``name`` (in place; ``save_pretrained`` keeps it)."""
    if name not in FORMATS:
        raise UserInputError(f"unknown conversation format {name!r}; known: {', '.join(FORMATS)}.")
    fmt = FORMATS[name]
    end_id = tokenizer.convert_tokens_to_ids(fmt.end_of_turn)
    if end_id is None or end_id == tokenizer.unk_token_id:
        raise UserInputError(f"this tokenizer has no {fmt.end_of_turn} token, which the {name} format needs.")
    tokenizer.chat_template = fmt.template
    tokenizer.eos_token = fmt.end_of_turn
