"""Bad input: one clear sentence on stderr, exit code 2, no traceback, no run directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from cli import main
from tests.conftest import TOKENIZER_DIR, save_tiny_model


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def diff_args(base, finetuned, prompts, out, *extra):
    return ["diff-neurons", "--base", str(base), "--finetuned", str(finetuned), "--prompts", str(prompts),
            "--out", str(out), "--device", "cpu", *extra]  # fmt: skip


def assert_refused(capsys, tmp_path, argv, fragment):
    out = tmp_path / "run"
    code, err = run_cli(capsys, *argv)
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and fragment in lines[-1], err
    assert "Traceback" not in err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".run")]  # no staging leftovers


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("Write a fun tweet about the beach.\nHow was your day?\n", encoding="utf-8")
    return path


def test_missing_model(capsys, tmp_path, tiny_llama_dir, prompts_file):
    argv = diff_args(tmp_path / "nope", tiny_llama_dir, prompts_file, tmp_path / "run")
    assert_refused(capsys, tmp_path, argv, "neither a known alias")


def test_malformed_model(capsys, tmp_path, tiny_llama_dir, prompts_file):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    assert_refused(
        capsys, tmp_path, diff_args(tiny_llama_dir, broken, prompts_file, tmp_path / "run"), "cannot load model"
    )


def test_pickle_only_model_is_refused(capsys, tmp_path, tiny_llama_dir, prompts_file):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny_llama_dir / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    assert_refused(capsys, tmp_path, diff_args(tiny_llama_dir, pickled, prompts_file, tmp_path / "run"), "safetensors")


def test_empty_prompts(capsys, tmp_path, tiny_llama_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    assert_refused(capsys, tmp_path, diff_args(tiny_llama_dir, tiny_llama_dir, empty, tmp_path / "run"), "no prompts")


def test_non_utf8_prompts(capsys, tmp_path, tiny_llama_dir):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert_refused(
        capsys, tmp_path, diff_args(tiny_llama_dir, tiny_llama_dir, latin, tmp_path / "run"), "not valid UTF-8"
    )


def test_malformed_jsonl_prompts(capsys, tmp_path, tiny_llama_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{not json\n', encoding="utf-8")
    assert_refused(capsys, tmp_path, diff_args(tiny_llama_dir, tiny_llama_dir, bad, tmp_path / "run"), "line 2")


def test_different_architectures(capsys, tmp_path, tiny_llama_dir, tiny_mistral_dir, prompts_file):
    argv = diff_args(tiny_llama_dir, tiny_mistral_dir, prompts_file, tmp_path / "run")
    assert_refused(capsys, tmp_path, argv, "mistral")


def test_different_vocabularies(capsys, tmp_path, tiny_llama_dir, prompts_file):
    other = save_tiny_model(tmp_path / "other-vocab", "llama", layers=3)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tokenizer.add_tokens(["<persona>"])
    tokenizer.save_pretrained(other)
    argv = diff_args(tiny_llama_dir, other, prompts_file, tmp_path / "run")
    assert_refused(capsys, tmp_path, argv, "different vocabularies")


@pytest.mark.parametrize("layers", ["0-3", "7", "a-b", "2-1"])
def test_layers_out_of_range(capsys, tmp_path, tiny_llama_dir, prompts_file, layers):
    argv = diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, tmp_path / "run", "--layers", layers)
    assert_refused(capsys, tmp_path, argv, "--layers")


def test_unwritable_output(capsys, tmp_path, tiny_llama_dir, prompts_file):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, err = run_cli(capsys, *diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, blocker / "run"))
    assert code == 2 and "error: " in err and "Traceback" not in err
    assert blocker.read_text() == "x"


def test_pre_emoji_without_emojis(capsys, tmp_path, tiny_llama_dir):
    responses = tmp_path / "prompts.jsonl"
    responses.write_text(json.dumps({"prompt": "Hi", "response": "Hello there, no emoji."}) + "\n", encoding="utf-8")
    argv = diff_args(tiny_llama_dir, tiny_llama_dir, responses, tmp_path / "run", "--positions", "pre-emoji")
    assert_refused(capsys, tmp_path, argv, "emoji")


def test_response_positions_need_responses(capsys, tmp_path, tiny_llama_dir, prompts_file):
    argv = diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, tmp_path / "run", "--positions", "response")
    assert_refused(capsys, tmp_path, argv, "needs responses")


def test_unknown_rank_column(capsys, tmp_path, tiny_llama_dir, prompts_file):
    argv = diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, tmp_path / "run", "--rank-by", "vibes")
    assert_refused(capsys, tmp_path, argv, "--rank-by")


def test_console_script_prints_no_traceback(tmp_path, prompts_file):
    interp = Path(sys.executable).parent / "interp"
    result = subprocess.run(
        [str(interp), "diff-neurons", "--base", str(tmp_path / "missing"), "--finetuned", "x", "--prompts",
         str(prompts_file), "--out", str(tmp_path / "run")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def ablate_args(model, out, *extra):
    return ["ablate", "--model", str(model), "--prompts", "persona-demo", "--out", str(out), "--device", "cpu", *extra]


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--neurons", "0:999"], "out of range"),
        (["--neurons", "7:1"], "out of range"),
        (["--neurons", "1-2"], "LAYER:INDEX"),
        (["--neurons", "0:1", "--mode", "scale", "--alpha", "half"], "--alpha"),
        (["--neurons", "0:1", "--mode", "nuke"], "--mode"),
        (["--neurons", "0:1", "--mode", "mean"], "--stats"),
        (["--neurons", "0:1", "--mode", "patch"], "--source-model"),
        (["--neurons-from", "missing.csv"], "--neurons-from"),
        ([], "exactly one of --neurons and --neurons-from"),
    ],
)
def test_ablate_refuses_bad_input(capsys, tmp_path, tiny_llama_dir, extra, fragment):
    assert_refused(capsys, tmp_path, ablate_args(tiny_llama_dir, tmp_path / "run", *extra), fragment)


def test_ablate_refuses_source_with_other_vocabulary(capsys, tmp_path, tiny_llama_dir):
    other = save_tiny_model(tmp_path / "other-vocab", "llama", layers=3)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tokenizer.add_tokens(["<persona>"])
    tokenizer.save_pretrained(other)
    argv = ablate_args(
        tiny_llama_dir, tmp_path / "run", "--neurons", "0:1", "--mode", "patch", "--source-model", str(other)
    )
    assert_refused(capsys, tmp_path, argv, "different vocabularies")
