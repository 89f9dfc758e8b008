"""Bad input: one clear sentence on stderr, exit code 2, no traceback, no run directory."""

from __future__ import annotations

import json
import os
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


def assert_refused(capsys, tmp_path, argv, fragment) -> str:
    """The run is refused with exit code 2 and one ``error:`` line holding ``fragment`` (returned), no run left."""
    out = tmp_path / "run"
    code, err = run_cli(capsys, *argv)
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and fragment in lines[-1], err
    assert "Traceback" not in err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".run")]  # no staging leftovers
    return lines[-1]


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


# --- issue 36: every reader and writer, every command's inputs --------------------------------------------------
@pytest.fixture(scope="module")
def other_shapes(tmp_path_factory) -> dict[str, Path]:
    """Tiny LLaMAs that differ from ``tiny_llama_dir`` (3 layers, residual 64, MLP 128) in one dimension each."""
    root = tmp_path_factory.mktemp("other-shapes")
    return {
        "residual width": save_tiny_model(root / "narrow", "llama", layers=3, hidden_size=32, num_attention_heads=2),
        "MLP width": save_tiny_model(root / "thin-mlp", "llama", layers=3, intermediate_size=64),
        "layer count": save_tiny_model(root / "shallow", "llama", layers=2),
    }


def two_model_args(command: str, model: Path, other: Path, out: Path) -> list[str]:
    """Every command that takes two models, ``model`` first and ``other`` second."""
    model, other, out = str(model), str(other), str(out)
    return {
        "diff-neurons": diff_args(model, other, "persona-demo", out),
        "ablate": ablate_args(model, out, "--neurons", "0:1", "--mode", "patch", "--source-model", other),
        "attribute": ["attribute", "--model", model, "--mode", "patch", "--source-model", other, "--prompts",
                      "persona-demo", "--out", out, "--device", "cpu"],
        "persona-vector": ["persona-vector", "--model", model, "--finetuned", other, "--trait", "extraversion",
                           "--out", out, "--device", "cpu"],
        "lens": ["lens", "--base", model, "--finetuned", other, "--out", out, "--device", "cpu"],
    }[command]  # fmt: skip


@pytest.mark.parametrize("command", ["diff-neurons", "ablate", "attribute", "persona-vector", "lens"])
@pytest.mark.parametrize("differs_in", ["residual width", "MLP width", "layer count"])
def test_two_models_of_different_shapes_are_refused_before_any_work(capsys, tmp_path, monkeypatch, tiny_llama_dir,
                                                                     other_shapes, command, differs_in):  # fmt: skip
    """One compatibility check (``models.check_compatible_configs``: family, layers, residual width, MLP width,
    vocabulary) for every command taking two models, before any activation is read."""
    from interp import directions

    def no_work(*args, **kwargs):
        raise AssertionError("activations were read before the models were compared")

    monkeypatch.setattr(directions, "residual_sums", no_work)
    monkeypatch.setattr("finetune.persona_vector.residual_sums", no_work)
    monkeypatch.setattr("interp.lens.residual_sums", no_work)
    argv = two_model_args(command, tiny_llama_dir, other_shapes[differs_in], tmp_path / "run")
    assert_refused(capsys, tmp_path, argv, "(layers, residual width, MLP width) (3, 64, 128) but")


@pytest.mark.parametrize("address", ["3:1", "0:128", "-1:5"])
@pytest.mark.parametrize("command", ["ablate --neurons", "ablate --neurons-from", "persona-vector --neurons-from",
                                     "plant --neurons"])  # fmt: skip
def test_neurons_outside_the_model_are_refused_by_every_command_that_takes_neurons(capsys, tmp_path, tiny_llama_dir,
                                                                                   command, address):  # fmt: skip
    """One neuron-address check (``layers.check_neurons``) for neurons given as text or read from a neurons.csv of
    another model (the tiny LLaMA has layers 0-2 and neurons 0-127)."""
    from interp.neuron_set import NeuronSet

    layer, index = (int(part) for part in address.split(":"))
    table = tmp_path / "neurons.csv"
    NeuronSet.from_records(("rank", "layer", "neuron", "score"),
                           [{"rank": 1, "layer": 0, "neuron": 1, "score": 0.5},
                            {"rank": 2, "layer": layer, "neuron": index, "score": 0.4}]).write(table)  # fmt: skip
    model, out = str(tiny_llama_dir), str(tmp_path / "run")
    argv = {
        "ablate --neurons": ablate_args(model, out, "--neurons", f"0:1,{address}"),
        "ablate --neurons-from": ablate_args(model, out, "--neurons-from", str(table), "--nulls", "layer"),
        "persona-vector --neurons-from": ["persona-vector", "--model", model, "--trait", "extraversion",
                                          "--neurons-from", str(table), "--out", out, "--device", "cpu"],
        "plant --neurons": ["plant", "--model", model, "--neurons", f"0:1,{address}", "--out", out],
    }[command]  # fmt: skip
    line = assert_refused(capsys, tmp_path, argv, f"neuron '{address}'")
    assert "out of range: the model has layers 0-2 and neurons 0-127" in line


@pytest.fixture(scope="module")
def ablate_run(tmp_path_factory, tiny_llama_dir) -> Path:
    """A finished tiny ``interp ablate`` run with sampled generations (copy it before changing it)."""
    out = tmp_path_factory.mktemp("ablate-run") / "run"
    argv = ablate_args(tiny_llama_dir, out, "--neurons", "0:1", "--prompts", "persona-demo[0:3]", "--controls", "2",
                       "--samples", "1", "--max-new-tokens", "4")  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_line_separators_inside_jsonl_strings_are_text_not_line_ends(capsys, tmp_path, tiny_llama_dir, ablate_run,
                                                                      separator):  # fmt: skip
    """U+2028, U+2029 and U+0085 are valid unescaped inside JSON strings (the tool writes them itself with
    ensure_ascii=False): every JSONL reader (prompts, responses, generations for the report) splits at line
    endings only (``textfiles.lines``), and so does the .txt prompt reader."""
    from interp.prompts import load_prompts

    record = {"prompt": f"Tell me{separator}about the beach.", "response": f"Sun{separator}and sand 🏖"}
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(2 * (json.dumps(record, ensure_ascii=False) + "\n"), encoding="utf-8")
    responses = tmp_path / "responses.jsonl"
    answers = [json.dumps({"prompt_index": i, "response": f"Yes{separator}indeed"}, ensure_ascii=False) for i in (0, 1)]
    responses.write_text("\r\n".join(answers) + "\r\n", encoding="utf-8")
    text = tmp_path / "prompts.txt"
    text.write_text(f"Tell me{separator}about the beach.\nHow was your day?\n", encoding="utf-8")
    assert [p.text for p in load_prompts(str(text))] == [f"Tell me{separator}about the beach.", "How was your day?"]
    for name, extra in (("own", []), ("given", ["--responses", str(responses)])):
        argv = diff_args(tiny_llama_dir, tiny_llama_dir, prompts, tmp_path / name, "--positions", "response",
                         "--profile-top", "0", *extra)  # fmt: skip
        code, err = run_cli(capsys, *argv)
        assert code == 0, err
        assert summary_of(tmp_path / name)["prompts"] == 2
    run = tmp_path / "ablate"
    shutil.copytree(ablate_run, run)
    generations = [json.loads(line) for line in (run / "generations.jsonl").read_text(encoding="utf-8").split("\n")
                   if line]  # fmt: skip
    for record in generations:
        record["text"] = f"Party{separator}time 🎉"
    (run / "generations.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in generations),
                                           encoding="utf-8")  # fmt: skip
    code, err = run_cli(capsys, "report", str(run))
    assert code == 0, err
    assert f"Party{separator}time" in (run / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "command, text, fragment",
    [
        ("sweep", "[sweep]\nseeds = 3\n[grid]\nrank = [4]\n", "[sweep] seeds should be a list of whole numbers, not 3"),
        ("sweep", "[sweep]\nquestions = 'ten'\n[grid]\nrank = [4]\n", "questions should be a whole number, not 'ten'"),
        ("sweep", "[sweep]\nmodel = 7\n[grid]\nrank = [4]\n", "[sweep] model should be text, not 7"),
        ("sweep", "[grid]\nrank = [8, 'big']\n", "[grid] rank should be a whole number, not 'big'"),
        ("sweep", "[fixed]\nlr = 'fast'\n[grid]\nrank = [4]\n", "[fixed] lr should be a number, not 'fast'"),
        ("sweep", "[fixed]\nqlora = 1\n[grid]\nrank = [4]\n", "qlora should be true or false, not 1"),
        ("sweep", "cells = [1, 2]\n", "cells must be [[cells]] tables"),
        ("sweep", "[cells]\nrank = 4\n", "cells must be [[cells]] tables"),
        ("sweep", "[[cells]]\nname = 3\nrank = 4\n", "[[cells]] number 1 name should be text, not 3"),
        ("sweep", "[[cells]]\nrank = 4\ntargets = ['q_proj']\n", "targets should be text, not ['q_proj']"),
        ("sweep", "sweep = 3\n", "sweep must be a [sweep] table"),
        ("pipeline", "[diff]\ntop_k = 'ten'\n", "[diff] top_k should be a whole number, not 'ten'"),
        ("pipeline", "[necessity]\ncontrols = [100]\n", "controls should be a whole number, not [100]"),
        ("pipeline", "[finetune]\nmax_steps = 1.5\n", "max_steps should be a whole number, not 1.5"),
        ("pipeline", "[dose]\nalpha = [0, 2]\n", "alpha should be text, not [0, 2]"),
        ("pipeline", "[diff]\ndevice = 'cuda'\n", "has no option 'device'"),
        ("pipeline", "diff = 3\n", "[diff] is not a stage table"),
        ("sweep", "DIR", "is a directory; pass a TOML file"),
        ("pipeline", "DIR", "is a directory; pass a TOML file"),
    ],
)
def test_config_files_are_checked_against_the_declared_types(capsys, tmp_path, command, text, fragment):
    """One validation by declared types (``interp.options.check_options``) for the sweep and the pipeline TOML;
    a directory as --config is one sentence."""
    config = tmp_path / "config.toml"
    if text == "DIR":
        config.mkdir()
    else:
        config.write_text(text, encoding="utf-8")
    assert_refused(capsys, tmp_path, [command, "--config", str(config), "--out", str(tmp_path / "run")], fragment)


def test_the_python_api_takes_paths_for_files_and_models(tmp_path, tiny_llama_dir, prompts_file):
    """A pathlib.Path works wherever a model, prompt file or run directory is named (it used to run the whole diff
    and fail while saving)."""
    import interp

    result = interp.diff(tiny_llama_dir, tiny_llama_dir, prompts_file, out=tmp_path / "diff", device="cpu",
                         profile_top=0)  # fmt: skip
    assert result.summary["prompts"] == 2 and result.summary["config"]["base"] == str(tiny_llama_dir)
    assert interp.load(tiny_llama_dir, device="cpu").n_layers == 3
    ablation = interp.ablate(tiny_llama_dir, [(0, 1)], prompts_file, controls=2, device="cpu")
    assert ablation.report["config"]["prompts"] == str(prompts_file)


@pytest.mark.parametrize(
    "function, arguments, fragment",
    [
        ("diff", {"prompts": ["Hi", "Hello"]}, "interp.diff() takes prompts as a prompt set"),
        ("diff", {"top_k": "5"}, "interp.diff() top_k should be a whole number, not '5'"),
        ("diff", {"topk": 5}, "interp.diff() has no option 'topk' (did you mean 'top_k'?)"),
        ("diff", {"base": 3}, "interp.diff() base should be text, not 3"),
        ("diff", {"out": 3}, "out should be a path, not 3"),
        ("ablate", {"neurons": ["0:1"]}, "takes a NeuronSet or (layer, index) pairs"),
        ("ablate", {"neurons": [(0, 1, 2)]}, "takes a NeuronSet or (layer, index) pairs"),
        ("ablate", {"prompts": ("Hi",)}, "interp.ablate() takes prompts as a prompt set"),
        ("ablate", {"controls": 2.5}, "controls should be a whole number, not 2.5"),
        ("steer", {"coeffs": "4"}, "interp.steer() takes a list of numbers as coeffs"),
        ("steer", {"layer": "1"}, "interp.steer() layer should be a whole number, not '1'"),
        ("load", {"ref": 3}, "interp.load() takes a model reference"),
    ],
)
def test_the_python_api_refuses_bad_arguments_before_any_work(monkeypatch, tmp_path, tiny_llama_dir, prompts_file,
                                                               function, arguments, fragment):  # fmt: skip
    """Every argument is checked against its command's declared types first: one UserInputError sentence, never a
    TypeError after the work."""
    import interp
    from interp import models
    from interp.errors import UserInputError

    def no_model(*args, **kwargs):
        raise AssertionError("a model was resolved before the arguments were checked")

    monkeypatch.setattr(models, "resolve", no_model)
    model, prompts = str(tiny_llama_dir), str(prompts_file)
    defaults = {
        "diff": {"base": model, "finetuned": model, "prompts": prompts},
        "ablate": {"model": model, "neurons": [(0, 1)], "prompts": prompts},
        "steer": {"model": model, "vector": str(tmp_path), "layer": 1, "coeffs": [4.0], "prompts": prompts},
        "load": {"ref": model},
    }[function]  # fmt: skip
    with pytest.raises(UserInputError) as refused:
        getattr(interp, function)(**{**defaults, **arguments})
    assert fragment in str(refused.value)


def cut_short(path: Path) -> None:
    """Keep the first half of ``path`` (a write interrupted by a crash or a full disk, or a copy cut off)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def fake_pipeline_run(root: Path) -> Path:
    """A pipeline run directory with the files ``interp replicate`` reads (numbers made up, shapes real)."""
    from interp.neuron_set import NeuronSet

    settings = {"model": "smollm2-135m", "trait": "extraversion", "quick": True, "stages": {"finetune": {}}}
    (root / "diff").mkdir(parents=True)
    (root / "pipeline.json").write_text(json.dumps({"command": "pipeline", "settings": settings, "stages": {}}))
    NeuronSet.from_records(
        ("rank", "layer", "neuron", "score"), [{"rank": 1, "layer": 0, "neuron": 1, "score": -0.5}]
    ).write(root / "diff" / "neurons.csv")
    summary = {"command": "diff-neurons", "emoji": {"direction": "falls"}}
    (root / "diff" / "summary.json").write_text(json.dumps(summary))
    for stage in ("restore", "necessity", "sufficiency"):
        (root / stage).mkdir()
        ablation = {"command": "ablate", "neurons": ["0:1"], "comparisons": {"zero": {"effect": -0.1, "p_value": 0.5}}}
        (root / stage / "ablation.json").write_text(json.dumps(ablation))
    return root


def fake_editor(root: Path) -> Path:
    """A MEND editor directory's two files (``interp edit`` reads them before any model loads)."""
    import torch
    from safetensors.torch import save_file

    root.mkdir()
    (root / "editor.json").write_text(json.dumps({"command": "mend train", "rank": 4, "sites": []}))
    save_file({"nets.w": torch.zeros(64, 4)}, str(root / "editor.safetensors"))
    return root


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("replicate: pipeline.json cut short", "pipeline.json' is damaged: it is not valid JSON"),
        ("replicate: pipeline.json of another tool", "is not a pipeline.json written by `interp pipeline`"),
        ("replicate: pipeline.json is a list", "pipeline.json' is not a pipeline.json this tool wrote"),
        ("replicate: pipeline.json of an earlier format", "pipeline.json' predates a format change: it has no "
                                                         "'settings.stages'"),
        ("replicate: ablation.json cut short", "necessity/ablation.json' is damaged"),
        ("replicate: summary.json of an earlier format", "diff/summary.json' predates a format change"),
        ("edit: editor.safetensors cut short", "editor.safetensors' is damaged: it is not a readable safetensors file"),
        ("edit: editor.json cut short", "editor.json' is damaged: it is not valid JSON"),
        ("edit: editor.json of an earlier format", "editor.json' predates a format change: it has no 'sites'"),
        ("report: ablation.json of an earlier release", "ablation.json' predates a format change: it has no "
                                                        "'comparisons.*.nulls' (written by an earlier release"),
        ("report: ablation.json cut short", "ablation.json' is damaged: it is not valid JSON"),
        ("report: landscape.safetensors cut short", "landscape.safetensors' is damaged"),
        ("report: lens.json is a list", "lens.json' is not a lens.json this tool wrote"),
    ],
)  # fmt: skip
def test_damaged_foreign_or_older_artifacts_are_named(capsys, tmp_path, tiny_llama_dir, ablate_run, case, fragment):
    """One artifact reader (``artifacts.read_json`` / ``read_tensors``) for every file of the tool's own formats:
    it names the file and says whether it is damaged, foreign, or from an earlier release (report: the format
    change it predates), instead of a SafetensorError, JSONDecodeError or KeyError."""
    command, damage = case.split(": ")
    run = tmp_path / "work"
    if command == "replicate":
        fake_pipeline_run(run)
        record = run / "pipeline.json"
        if damage == "pipeline.json cut short":
            cut_short(record)
        elif damage == "pipeline.json of another tool":
            record.write_text(json.dumps({"name": "a pipeline of another tool", "settings": {}}))
        elif damage == "pipeline.json is a list":
            record.write_text("[1, 2]")
        elif damage == "pipeline.json of an earlier format":
            record.write_text(json.dumps({"command": "pipeline", "settings": {"model": "m", "trait": "t",
                                                                              "quick": False}}))  # fmt: skip
        elif damage == "ablation.json cut short":
            cut_short(run / "necessity" / "ablation.json")
        else:
            (run / "diff" / "summary.json").write_text(json.dumps({"command": "diff-neurons", "emoji": {}}))
        argv = ["replicate", str(run), "--seed", "7", "--device", "cpu"]
    elif command == "edit":
        editor = fake_editor(run)
        if damage == "editor.json of an earlier format":
            (editor / "editor.json").write_text(json.dumps({"command": "mend train", "rank": 4}))
        else:
            cut_short(editor / damage.split()[0])
        argv = ["edit", "--editor", str(editor), "--model", str(tiny_llama_dir), "--trait", "extraversion", "--out",
                str(tmp_path / "run"), "--device", "cpu"]  # fmt: skip
    else:
        shutil.copytree(ablate_run, run / "ablate")
        if damage == "ablation.json of an earlier release":
            shutil.copy(Path(__file__).parents[1] / "fixtures" / "ablation_before_two_nulls" / "ablation.json",
                        run / "ablate")  # fmt: skip
        elif damage == "ablation.json cut short":
            cut_short(run / "ablate" / "ablation.json")
        elif damage == "landscape.safetensors cut short":
            assert main(diff_args(tiny_llama_dir, tiny_llama_dir, "persona-demo[0:2]", run / "diff", "--profile-top",
                                  "0")) == 0  # fmt: skip
            cut_short(run / "diff" / "landscape.safetensors")
        else:
            (run / "lens").mkdir()
            (run / "lens" / "lens.json").write_text("[]")
        argv = ["report", str(run), "--out", str(tmp_path / "report.html")]
    assert_refused(capsys, tmp_path, argv, fragment)
    assert not (tmp_path / "report.html").exists() and not (run / "replication.json").exists()


class Killed(BaseException):
    """The process died (kill -9): no ``finally`` block gets to touch the disk any more."""


class FaultyDisk:
    """The OS calls the run writer uses, on paths under ``root`` (and descriptors opened there), with one fault:
    call number ``at`` of the counted ones (creating, writing, syncing, renaming) raises ``OSError(error)``, or
    with ``error=None`` the ``at``-th rename happens and the process is killed right after it (``at=0``: before
    the first). A killed process's descriptors are closed (its locks released), and every later call does
    nothing but raise ``Killed``."""

    COUNTED = ("mkdir", "open", "write", "fsync", "replace", "rename")
    OTHERS = ("close", "unlink", "rmdir", "chmod")

    def __init__(self, root: Path, at: int | None = None, error: int | None = None):
        self.root, self.at, self.error = root, at, error
        self.calls = self.renames = 0
        self.fds: set[int] = set()
        self.dead = False
        self.real = {name: getattr(os, name) for name in (*self.COUNTED, *self.OTHERS)}
        self.real_rmtree = shutil.rmtree

    def __enter__(self) -> FaultyDisk:
        for name in self.real:
            setattr(os, name, self._wrapped(name))
        shutil.rmtree = self._after_death(self.real_rmtree)
        return self

    def __exit__(self, *exc) -> None:
        for name, function in self.real.items():
            setattr(os, name, function)
        shutil.rmtree = self.real_rmtree

    def _ours(self, name: str, args: tuple, kwargs: dict) -> bool:
        if name in ("write", "fsync", "close"):
            return args[0] in self.fds
        if kwargs.get("dir_fd") is not None or not args or not isinstance(args[0], str | os.PathLike):
            return False
        return str(os.path.abspath(args[0])).startswith(str(self.root))

    def _after_death(self, function):
        def call(*args, **kwargs):
            if self.dead:
                raise Killed
            return function(*args, **kwargs)

        return call

    def _wrapped(self, name: str):
        real = self.real[name]

        def call(*args, **kwargs):
            if self.dead:
                raise Killed
            ours = self._ours(name, args, kwargs)
            creates = name != "open" or bool(args[1] & os.O_CREAT)
            if ours and name in self.COUNTED and creates and self.error is not None:
                self.calls += 1
                if self.calls == self.at:
                    path = [] if name in ("write", "fsync") else [args[0]]  # a descriptor's error names no path
                    raise OSError(self.error, os.strerror(self.error), *path)
            renames = ours and name in ("replace", "rename") and self.error is None
            if renames and self.at == 0:
                self._die()
            result = real(*args, **kwargs)
            if renames:
                self.renames += 1
                if self.renames == self.at:
                    self._die()
            if ours and name == "open":
                self.fds.add(result)
            if name == "close":
                self.fds.discard(args[0])
            return result

        return call

    def _die(self) -> None:
        for fd in self.fds:
            self.real["close"](fd)
        self.dead = True
        raise Killed


def run_state(out: Path, old: dict[str, bytes]) -> str:
    """The state of ``out``: absent, old (byte for byte), new (a whole run with --top-k 7), or mixed."""
    if not out.exists():
        return "absent"
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    if files == old:
        return "old"
    whole = set(files) == set(old) and json.loads(files["summary.json"])["config"]["top_k"] == 7
    return "new" if whole and len(files["neurons.csv"].decode().strip().split("\n")) == 8 else "mixed"


@pytest.mark.parametrize("fault", ["ENOSPC", "EIO", "kill"])
def test_a_run_directory_survives_a_failure_at_every_step_of_writing_it(capsys, tmp_path, tiny_llama_dir, fault):
    """Fault injection on the run writer (``artifacts.staged_run_dir``): a full disk or an I/O error at every
    call it makes to create, write, fsync or rename, or a kill after any rename, while a tiny diff run replaces
    an earlier one. ``--out`` is always the old run, the new run or (killed between the two renames of the swap)
    absent; an OS error is one sentence naming the path and the cause (exit 2) and keeps the old run; and the
    next run succeeds, putting back what a killed run left aside and removing its leftovers."""
    import errno

    out = tmp_path / "run"

    def argv(top_k: int) -> list[str]:
        return diff_args(tiny_llama_dir, tiny_llama_dir, "persona-demo[0:2]", out, "--profile-top", "0", "--top-k",
                         str(top_k))  # fmt: skip

    assert run_cli(capsys, *argv(5))[0] == 0
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    with FaultyDisk(tmp_path, error=None if fault == "kill" else 0) as counter:
        assert run_cli(capsys, *argv(7))[0] == 0
    steps = counter.renames + 1 if fault == "kill" else counter.calls
    assert steps >= (5 if fault == "kill" else 15)  # the four files and the swap's renames; probes, writes, fsyncs
    error = getattr(errno, fault, None)
    for at in range(steps):
        shutil.rmtree(out)
        out.mkdir()
        for name, data in old.items():
            (out / name).write_bytes(data)
        with FaultyDisk(tmp_path, at if error is None else at + 1, error):
            if error is None:
                with pytest.raises(Killed):
                    run_cli(capsys, *argv(7))
                code, err = None, capsys.readouterr().err
            else:
                code, err = run_cli(capsys, *argv(7))
        state = run_state(out, old)
        if code is None:
            assert state in ("old", "new", "absent"), (at, state)
            if state == "absent":  # killed between the swap's two renames: any next run puts the old run back first
                assert run_cli(capsys, *argv(7), "--layers", "9")[0] == 2
                assert run_state(out, old) == "old", at
        elif code == 0:  # a failed fsync of the folder after the swap: the new run is in place
            assert state == "new", (at, err)
        else:
            line = err.strip().splitlines()[-1]
            assert code == 2 and "Traceback" not in err, err
            assert line.startswith("error: ") and os.strerror(error) in line and str(tmp_path) in line, (at, line)
            assert state == "old", (at, state, line)
            assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".run")], at
        assert run_cli(capsys, *argv(7))[0] == 0, at
        assert run_state(out, old) == "new", at
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".run")], at  # nothing left over


def test_report_out_into_a_folder_that_does_not_exist_creates_it(capsys, tmp_path, ablate_run):
    target = tmp_path / "new" / "deeper" / "report.html"
    code, err = run_cli(capsys, "report", str(ablate_run), "--out", str(target))
    assert code == 0, err
    assert target.is_file() and "<html" in target.read_text(encoding="utf-8")


@pytest.mark.parametrize("link_to", ["a run", "nothing yet", "itself", "a file"])
def test_an_out_that_is_a_symbolic_link_is_written_through(capsys, tmp_path, tiny_llama_dir, prompts_file, link_to):
    """A run writes through a symbolic-link --out (the link stays, its target changes) and every later run does
    too; a link that resolves to nothing usable is one sentence."""
    target, link = tmp_path / "elsewhere" / "target", tmp_path / "run"
    argv = diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, link, "--profile-top", "0")
    if link_to == "itself":
        link.symlink_to(link)
        assert_refused(capsys, tmp_path, argv, "is a symbolic link that never reaches a file or folder")
        return
    target.parent.mkdir()
    if link_to == "a file":
        target.write_text("mine")
        link.symlink_to(target)
        code, err = run_cli(capsys, *argv)
        assert code == 2 and "exists and is not a directory" in err
        assert target.read_text() == "mine" and link.is_symlink()
        return
    if link_to == "a run":
        assert run_cli(capsys, *diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, target, "--top-k", "3"))[0] == 0
    link.symlink_to(target, target_is_directory=True)
    for top_k in ("5", "6"):
        code, err = run_cli(capsys, *argv, "--top-k", top_k)
        assert code == 0, err
        assert link.is_symlink() and link.resolve() == target.resolve()
        assert summary_of(target)["config"]["top_k"] == int(top_k)
    leftovers = [p.name for folder in (tmp_path, target.parent) for p in folder.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    report = tmp_path / "report-link.html"
    report.symlink_to(target.parent / "report.html")
    assert run_cli(capsys, "report", str(link), "--out", str(report))[0] == 0
    assert report.is_symlink() and (target.parent / "report.html").is_file()


def test_two_runs_into_the_same_out_at_once_both_finish(capsys, tmp_path, monkeypatch, tiny_llama_dir, prompts_file):
    """A second run that starts and finishes while the first is still staging its files leaves the first run's
    staging directory alone (it is locked by its live process; only a killed run's leftovers are removed): both
    finish, and --out holds one whole run, the last to finish."""
    import subprocess

    from interp import artifacts

    out = tmp_path / "run"
    argv = diff_args(tiny_llama_dir, tiny_llama_dir, prompts_file, out, "--profile-top", "0")
    second = {}
    real_swap = artifacts.swap_in_dir

    def swap_after_another_run(staging: Path, final: Path) -> None:
        interp = Path(sys.executable).parent / "interp"
        second["run"] = subprocess.run([str(interp), *argv, "--top-k", "4"], capture_output=True, text=True)
        real_swap(staging, final)

    monkeypatch.setattr(artifacts, "swap_in_dir", swap_after_another_run)
    code, err = run_cli(capsys, *argv, "--top-k", "9")
    assert code == 0, err
    assert second["run"].returncode == 0, second["run"].stderr
    assert summary_of(out)["config"]["top_k"] == 9
    assert len((out / "neurons.csv").read_text(encoding="utf-8").strip().split("\n")) == 1 + 9
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".run")]
