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


def command_args(command: str, model: Path, out: str) -> list[str]:
    """The fewest arguments each output-writing command takes, writing to ``out``."""
    model = str(model)
    return {
        "diff-neurons": diff_args(model, model, "persona-demo", out),
        "ablate": ablate_args(model, out, "--neurons", "0:1"),
        "attribute": ["attribute", "--model", model, "--prompts", "persona-demo", "--out", out],
        "finetune": ["finetune", "--model", model, "--trait", "extraversion", "--out", out],
        "merge": ["merge", "--base", model, "--adapter", model, "--out", out],
        "generate": ["generate", "--model", model, "--prompts", "persona-demo", "--out", f"{out}/gen.jsonl"],
        "evaluate": ["evaluate", "--models", f"base={model}", "--trait", "extraversion", "--out", out],
        "explain": ["explain", "--model", model, "--trait", "extraversion", "--out", out],
        "plant": ["plant", "--model", model, "--out", out],
        "pipeline": ["pipeline", "--model", model, "--out", out],
        "metric-models": ["metric-models", "train", "--out", out],
    }[command]


@pytest.mark.parametrize(
    "command",
    ["diff-neurons", "ablate", "attribute", "finetune", "merge", "generate", "evaluate", "explain", "plant",
     "pipeline", "metric-models"],
)  # fmt: skip
@pytest.mark.parametrize("where", ["/proc/persona-interp-test/run", "FILE/run"])
def test_unwritable_output_is_refused_before_any_model_loads(capsys, tmp_path, monkeypatch, tiny_llama_dir,
                                                              command, where):  # fmt: skip
    """/proc refuses new directories even to root (whom os.access lets through); a file cannot be a parent."""
    from interp import models

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(models, "load", no_load)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = where.replace("FILE", str(blocker))
    code, err = run_cli(capsys, *command_args(command, tiny_llama_dir, out))
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err
    assert "output" in err.splitlines()[-1]
    assert blocker.read_text() == "x"


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text(encoding="utf-8"))


def test_text_files_as_editors_save_them(capsys, tmp_path, tiny_llama_dir, prompts_file):
    """A byte-order mark and CRLF line endings change nothing; a file of only a BOM is empty."""
    plain = tmp_path / "plain"
    assert run_cli(capsys, *diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, plain))[0] == 0
    windows = tmp_path / "windows.txt"
    windows.write_bytes(b"\xef\xbb\xbf" + prompts_file.read_text(encoding="utf-8").replace("\n", "\r\n").encode())
    assert run_cli(capsys, *diff_args(tiny_llama_dir, tiny_llama_dir, windows, tmp_path / "bom-txt"))[0] == 0
    assert summary_of(tmp_path / "bom-txt")["tokens_counted"] == summary_of(plain)["tokens_counted"]
    jsonl = tmp_path / "windows.jsonl"
    lines = [json.dumps({"prompt": line}) for line in prompts_file.read_text(encoding="utf-8").splitlines()]
    jsonl.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    assert run_cli(capsys, *diff_args(tiny_llama_dir, tiny_llama_dir, jsonl, tmp_path / "bom-jsonl"))[0] == 0
    assert summary_of(tmp_path / "bom-jsonl")["tokens_counted"] == summary_of(plain)["tokens_counted"]
    only_bom = tmp_path / "only-bom.txt"
    only_bom.write_bytes(b"\xef\xbb\xbf\r\n")
    assert_refused(
        capsys, tmp_path, diff_args(tiny_llama_dir, tiny_llama_dir, only_bom, tmp_path / "run"), "no prompts"
    )


def test_foreign_planted_json_is_ignored_with_one_warning(capsys, tmp_path, tiny_llama_dir, prompts_file):
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_llama_dir, foreign)
    (foreign / "planted.json").write_text('{"tool": "another", "version": 3}', encoding="utf-8")
    code, err = run_cli(capsys, *diff_args(tiny_llama_dir, foreign, prompts_file, tmp_path / "run"))
    assert code == 0, err
    assert [line for line in err.splitlines() if "planted.json" in line] == [
        f"warning: ignoring {foreign}/planted.json: it is not a record written by `interp plant`."
    ]
    assert "planted_recovery" not in summary_of(tmp_path / "run")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_sequences_longer_than_the_context_are_cut_to_it(capsys, tmp_path, arch):
    """GPT-2's learned position table has 48 rows here (an IndexError past it); LLaMA's rotary positions were
    trained to 48: both are cut to 48 tokens, said once, also for sampled replies (the chat template's system
    message takes about 30 of them)."""
    model = save_tiny_model(tmp_path / arch, arch, max_position_embeddings=48)
    prompts = tmp_path / "long.txt"
    prompts.write_text("Tell me everything about the beach, the sea, the sand and the sun. " * 3 + "\nHi\n")
    argv = diff_args(model, model, prompts, tmp_path / "run", "--max-length", "256", "--generate", "1",
                     "--max-new-tokens", "40", "--profile-top", "0")  # fmt: skip
    code, err = run_cli(capsys, *argv)
    assert code == 2 and "leaves no room for a reply within 48 tokens" in err  # the long prompt fills the context
    prompts.write_text("Tell me about the beach.\nHi\n")
    code, err = run_cli(capsys, *argv)
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: --max-length")]
    assert notes == [
        "note: --max-length 256 is longer than the model's context (48 tokens); sequences are cut to 48 tokens."
    ]
    assert summary_of(tmp_path / "run")["tokens_counted"]["finetuned"] <= 2 * 48


def test_reversed_layer_range_says_so(capsys, tmp_path, tiny_llama_dir, prompts_file):
    argv = diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, tmp_path / "run", "--layers", "2-1")
    assert_refused(capsys, tmp_path, argv, "'2-1' is reversed: write the lower layer first (1-2)")


def test_missing_tokenizer_is_named(capsys, tmp_path, tiny_llama_dir, prompts_file):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_llama_dir, bare, ignore=shutil.ignore_patterns("tokenizer*", "*.jinja"))
    assert_refused(capsys, tmp_path, diff_args(bare, bare, prompts_file, tmp_path / "run"), "has no tokenizer (none of")


def test_adapter_of_another_shape_names_the_weights_and_stderr_stays_clean(tmp_path, tiny_llama_dir, prompts_file):
    """One sentence that names the mismatch; no bitsandbytes or transformers chatter, here or on success."""
    from tests.unit.test_models import make_adapter

    narrow = save_tiny_model(tmp_path / "narrow", "llama", hidden_size=32, num_attention_heads=2)
    interp = Path(sys.executable).parent / "interp"

    def run(finetuned, out):
        argv = diff_args(tiny_llama_dir, finetuned, prompts_file, tmp_path / out, "--profile-top", "0")
        return subprocess.run([str(interp), *argv], capture_output=True, text=True)

    refused = run(make_adapter(narrow, tmp_path / "narrow-adapter"), "refused")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "of its weights have other shapes than the base's layers, first model.layers.0.self_attn.q_proj" \
        in refused.stderr and "(adapter 4x32, base 4x64)" in refused.stderr  # fmt: skip
    fitting = run(make_adapter(tiny_llama_dir, tmp_path / "adapter"), "ok")
    assert fitting.returncode == 0, fitting.stderr
    for noise in ("Warning", "warnings.warn", "kernels-community", "bitsandbytes"):
        assert noise not in fitting.stderr


def test_explain_names_the_bad_generations_line(capsys, tmp_path, tiny_llama_dir):
    generations = tmp_path / "gen.jsonl"
    generations.write_text('{"response": "ok 😀"}\n{"response": 3}\n', encoding="utf-8")
    argv = ["explain", "--model", str(tiny_llama_dir), "--trait", "extraversion", "--generations", str(generations),
            "--out", str(tmp_path / "run"), "--device", "cpu"]  # fmt: skip
    assert_refused(capsys, tmp_path, argv, 'line 2 needs a string "response"')


@pytest.mark.parametrize("name", ["../escape", "a/b", "two words", "ünï"])
def test_evaluate_model_names_must_be_safe_file_names(capsys, tmp_path, tiny_llama_dir, name):
    argv = ["evaluate", "--models", f"{name}={tiny_llama_dir}", "--trait", "extraversion", "--out",
            str(tmp_path / "run"), "--device", "cpu"]  # fmt: skip
    assert_refused(capsys, tmp_path, argv, "use only letters, digits")


def test_a_rerun_leaves_nothing_of_the_earlier_run(capsys, tmp_path, tiny_llama_dir, prompts_file):
    out = tmp_path / "run"
    assert run_cli(capsys, *diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, out, "--profile-top", "3"))[0] == 0
    assert (out / "profiles.json").is_file()
    assert run_cli(capsys, *diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, out, "--profile-top", "0"))[0] == 0
    assert not (out / "profiles.json").exists() and (out / "summary.json").is_file()


def test_a_folder_of_the_users_own_is_never_replaced(capsys, tmp_path, tiny_llama_dir, prompts_file):
    mine = tmp_path / "run"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    code, err = run_cli(capsys, *diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, mine))
    assert code == 2 and "holds files this toolkit did not write" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("existing", [False, True])
def test_a_run_directory_is_whole_or_absent_at_every_rename(capsys, tmp_path, monkeypatch, tiny_llama_dir,
                                                             prompts_file, existing):  # fmt: skip
    """Killed at each os.replace of the final step (moving the finished run into place), the output directory
    is either absent or holds exactly one run's files, never some of a new run's files."""
    import os

    out = tmp_path / "run"
    argv = diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, out, "--profile-top", "2")
    assert run_cli(capsys, *argv)[0] == 0
    complete = sorted(p.name for p in out.iterdir())
    real_replace = os.replace
    for stop_at in range(1, 4):
        if not existing:
            __import__("shutil").rmtree(out, ignore_errors=True)
        calls = []

        def replace(src, dst, stop_at=stop_at, calls=calls):
            calls.append(dst)
            if Path(dst).parent == tmp_path and len([c for c in calls if Path(c).parent == tmp_path]) == stop_at:
                raise KeyboardInterrupt
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        code = run_cli(capsys, *argv)[0]
        monkeypatch.setattr(os, "replace", real_replace)
        assert code in (0, 130)
        assert not out.exists() or sorted(p.name for p in out.iterdir()) == complete


@pytest.mark.parametrize("command", ["diff-neurons", "ablate", "attribute", "merge-stats"])
def test_top_k_below_one_is_refused_everywhere(capsys, tmp_path, tiny_llama_dir, command):
    model, out = str(tiny_llama_dir), str(tmp_path / "run")
    argv = {
        "diff-neurons": diff_args(model, model, "persona-demo", out),
        "ablate": ablate_args(model, out, "--neurons-from", str(tmp_path / "neurons.csv")),
        "attribute": ["attribute", "--model", model, "--prompts", "persona-demo", "--out", out],
        "merge-stats": ["merge-stats", str(tmp_path / "a"), str(tmp_path / "b"), "--out", out],
    }[command]
    assert_refused(capsys, tmp_path, [*argv, "--top-k", "0"], "--top-k must be at least 1, not 0")
