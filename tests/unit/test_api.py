"""The Python API: docs/api.md's walkthrough runs as written (on a tiny planted model), and importing the
package leaves the environment alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    """The python code block of docs/api.md."""
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), re.S)
    return code


def test_the_documented_walkthrough_runs(planted_tiny, tiny_llama_dir, tmp_path, capsys):
    planted_dir, planted = planted_tiny
    code = walkthrough()
    code = code.replace('BASE = "smollm2-135m"', f"BASE = {str(tiny_llama_dir)!r}")
    code = code.replace('FINETUNED = "runs/demo/finetune/merged"', f"FINETUNED = {str(planted_dir)!r}")
    for run in ("api-diff", "api-pv", "api-mend"):
        code = code.replace(f'"runs/{run}', f'"{tmp_path}/{run}')
    assert code.count(str(tmp_path)) == 8 and str(planted_dir) in code  # every placeholder was replaced
    namespace: dict = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)  # noqa: S102 (our own documentation's code)
    result, ablation = namespace["result"], namespace["ablation"]
    assert (tmp_path / "api-diff" / "summary.json").is_file() and result.out == tmp_path / "api-diff"
    assert list(namespace["table"].columns[:3]) == ["rank", "layer", "neuron"]
    assert namespace["table"]["score"].dtype.kind == "f"
    assert sorted(result.neurons.top(len(planted)).addresses) == sorted(planted)  # the planted neurons lead
    (comparison,) = ablation.comparisons.values()
    assert comparison["alternative_source"].startswith("predicted from the diff run")
    assert set(comparison["nulls"]) == {"layer", "matched"} and ablation.out is None
    assert set(namespace["by_hand"].comparisons["zero"]["nulls"]) == {"layer"}
    steered = namespace["steered"]
    assert set(steered.comparisons) == {"coeff=-8", "coeff=8"} and steered.report["command"] == "steer"
    assert len(steered.comparisons["coeff=8"]["nulls"]["direction"]["control_effects"]) == 9
    assert namespace["edited"].n_layers == 3 and namespace["edit"]["trait"] == "extraversion"
    assert (tmp_path / "api-mend-ext" / "merged" / "config.json").is_file()
    printed = capsys.readouterr().out
    assert "emoji" in printed and "significant" in printed


def test_importing_the_package_leaves_the_environment_alone():
    script = "import os; before = dict(os.environ); import interp; print(dict(os.environ) == before)"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.stdout.strip() == "True", result.stderr
