"""Are every command's outputs unchanged by a refactor? Runs one battery of commands on tiny models under two code
trees and compares what they wrote.

    python -m tests.output_parity --before /tmp/old-tree --after . --work /tmp/parity

``--before`` and ``--after`` are checkouts of the project (e.g. ``git worktree add /tmp/old-tree COMMIT``). Each
tree runs the same commands (the CLI, in a subprocess with that tree first on ``PYTHONPATH``) on the same tiny
random LLaMA and the same metric-model heads. Files are compared byte for byte, except safetensors (metadata and
each tensor's dtype, shape and bytes: the writer orders metadata keys at random) and JSON and JSONL, which are
compared as parsed values with wall-clock fields left out (their key order and timings are not results), and
the HTML reports, which embed those timings, are left out. Both trees write to the same path (outputs record
their paths), one after the other. Exit status 0: identical; 1: the differences printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

WALL_CLOCK_KEYS = {"timings", "seconds", "elapsed_s", "wall_s"}


def battery(model: Path, metric_models: Path, out: Path) -> list[list[str]]:
    """The commands each tree runs, writing under ``out``; every output-writing command once."""
    m, o, cpu = str(model), str(out), ["--device", "cpu"]
    short = ["--max-new-tokens", "6"]
    return [
        ["plant", "--model", m, "--out", f"{o}/planted", "--layers", "1,2"],
        ["diff-neurons", "--base", m, "--finetuned", f"{o}/planted", "--prompts", "persona-demo", "--generate", "1",
         *short, "--positions", "response", "--profile-top", "5", "--out", f"{o}/diff", *cpu],
        ["ablate", "--model", f"{o}/planted", "--neurons-from", f"{o}/diff/neurons.csv", "--top-k", "3",
         "--prompts", "persona-demo", "--samples", "1", *short, "--controls", "5", "--out", f"{o}/ablate", *cpu],
        ["ablate", "--model", f"{o}/planted", "--neurons-from", f"{o}/diff/neurons.csv", "--top-k", "3",
         "--mode", "patch", "--source-model", m, "--prompts", "persona-demo", "--controls", "5",
         "--out", f"{o}/patch", *cpu],
        ["attribute", "--model", f"{o}/planted", "--prompts", "persona-demo", "--top-k", "10",
         "--out", f"{o}/attribute", *cpu],
        ["generate", "--model", m, "--prompts", "persona-demo", "--samples", "2", *short, "--out", f"{o}/gen.jsonl",
         *cpu],
        ["finetune", "--model", m, "--trait", "extraversion", "--max-steps", "2", "--out", f"{o}/ft", *cpu],
        ["merge", "--base", m, "--adapter", f"{o}/ft/adapter", "--out", f"{o}/merged"],
        ["evaluate", "--models", f"base={m},peft={o}/ft/adapter,ike={m}:2", "--trait", "extraversion",
         "--samples", "1", *short, "--ike-variants", "2", "--questions", "2", "--metric-models", str(metric_models),
         "--out", f"{o}/eval", *cpu],
        ["explain", "--model", f"{o}/merged", "--base", m, "--trait", "extraversion", "--samples", "2", *short,
         "--metric-models", str(metric_models), "--out", f"{o}/explain", *cpu],
        ["report", f"{o}/diff"],
    ]  # fmt: skip


def run_tree(tree: Path, model: Path, metric_models: Path, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    for argv in battery(model, metric_models, out):
        code = [sys.executable, "-c", "import sys, cli; sys.exit(cli.main(sys.argv[1:]))", *argv]
        result = subprocess.run(code, cwd=tree, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{tree}: `interp {' '.join(argv)}` failed:\n{result.stderr[-3000:]}")


def _without_wall_clock(value):
    if isinstance(value, dict):
        return {k: _without_wall_clock(v) for k, v in value.items() if k not in WALL_CLOCK_KEYS}
    if isinstance(value, list):
        return [_without_wall_clock(v) for v in value]
    return value


def _parsed(path: Path):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [_without_wall_clock(json.loads(line)) for line in text.splitlines() if line.strip()]
    return _without_wall_clock(json.loads(text))


def _tensors(path: Path) -> tuple[dict, dict[str, bytes]]:
    """(metadata, name -> dtype, shape and raw bytes): the safetensors writer orders metadata keys at random."""
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    body = data[8 + size :]
    metadata = header.pop("__metadata__", {})
    tensors = {
        name: (entry["dtype"], tuple(entry["shape"]), body[entry["data_offsets"][0] : entry["data_offsets"][1]])
        for name, entry in header.items()
    }
    return metadata, tensors


def compare(before: Path, after: Path) -> list[str]:
    """One line per file that is missing on one side or differs."""
    problems = []
    names = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    names |= {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    for name in sorted(names):
        a, b = before / name, after / name
        if not (a.is_file() and b.is_file()):
            problems.append(f"{name}: only in {'before' if a.is_file() else 'after'}")
        elif name.suffix in (".json", ".jsonl"):
            if _parsed(a) != _parsed(b):
                problems.append(f"{name}: parsed values differ")
        elif name.suffix == ".safetensors":
            if _tensors(a) != _tensors(b):
                problems.append(f"{name}: tensors or metadata differ")
        elif name.suffix == ".html":
            continue  # embeds timings; its inputs (the JSON and CSV above) are compared
        elif a.read_bytes() != b.read_bytes():
            problems.append(f"{name}: bytes differ")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="A scratch directory (created).")
    parser.add_argument("--metric-models", type=Path, default=None,
                        help="Metric-model heads both trees use [default: train once into WORK].")  # fmt: skip
    args = parser.parse_args()
    sys.path.insert(0, str(args.after))
    from tests.conftest import save_tiny_model

    args.work.mkdir(parents=True, exist_ok=True)
    model = save_tiny_model(args.work / "tiny-llama", "llama", layers=3)
    metric_models = args.metric_models
    if metric_models is None:
        metric_models = args.work / "metric-models"
        run_args = ["metric-models", "train", "--out", str(metric_models)]
        env = {**os.environ, "PYTHONPATH": str(args.before), "HF_HUB_OFFLINE": "1"}
        code = [sys.executable, "-c", "import sys, cli; sys.exit(cli.main(sys.argv[1:]))", *run_args]
        subprocess.run(code, cwd=args.before, env=env, check=True, capture_output=True)
    for side, tree in (("before", args.before), ("after", args.after)):
        print(f"running the battery under {tree} ...", flush=True)
        shutil.rmtree(args.work / side, ignore_errors=True)
        run_tree(tree.resolve(), model, metric_models, args.work / "run")  # one path: outputs record their paths
        (args.work / "run").rename(args.work / side)
    problems = compare(args.work / "before", args.work / "after")
    print("\n".join(problems) if problems else "identical: every output file matches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
