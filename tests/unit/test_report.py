"""``interp report`` on run directories made by real tiny-model runs: every section, missing sections,
escaping of hostile model/user text, size, bad input, and a real headless browser."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cli import main
from tests.browser import chromium_path, open_report
from viz.run_artifacts import load_run

HOSTILE = '</td></tr><script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2"> "quoted" \'single\''


def run_cli(*argv) -> None:
    assert main([str(a) for a in argv]) == 0


@pytest.fixture(scope="module")
def run_dir(tiny_llama_dir, planted_tiny, tmp_path_factory) -> Path:
    """diff-neurons + necessity (zero) + sufficiency (patch) + dose (scale) on the planted tiny model."""
    planted_dir, _ = planted_tiny
    root = tmp_path_factory.mktemp("report-run")
    prompts = root / "prompts.txt"
    prompts.write_text(
        "Describe your perfect weekend 🎉 in an excited way.\nWrite a fun tweet about the beach.\n"
        f"Say hello to {HOSTILE}\nWhat do you think about parties?\n",
        encoding="utf-8",
    )
    common = ["--prompts", prompts, "--device", "cpu"]
    run_cli("diff-neurons", "--base", tiny_llama_dir, "--finetuned", planted_dir, "--out", root / "diff",
            "--profile-top", 8, *common)  # fmt: skip
    top = ["--neurons-from", root / "diff" / "neurons.csv", "--top-k", 4, "--controls", 4]
    run_cli("ablate", "--model", planted_dir, *top, "--samples", 1, "--max-new-tokens", 8, "--out",
            root / "necessity", *common)  # fmt: skip
    run_cli("ablate", "--model", tiny_llama_dir, "--source-model", planted_dir, "--mode", "patch", *top,
            "--samples", 1, "--max-new-tokens", 8, "--out", root / "sufficiency", *common)  # fmt: skip
    run_cli("ablate", "--model", planted_dir, "--mode", "scale", "--alpha", "0,0.5,2", *top, "--out", root / "dose",
            *common)  # fmt: skip
    # directions (issue 16): the persona vector with the planted model's shift along it, steering, the lens
    run_cli("persona-vector", "--model", tiny_llama_dir, "--finetuned", planted_dir, "--trait", "extraversion",
            "--split", "test", "--neurons-from", root / "diff" / "neurons.csv", "--top-k", 4, "--out",
            root / "persona-vector", "--device", "cpu")  # fmt: skip
    run_cli("steer", "--model", tiny_llama_dir, "--vector", root / "persona-vector", "--layer", 1, "--coeff=-4,4",
            "--controls", 4, "--out", root / "steer", *common)  # fmt: skip
    run_cli("lens", "--base", tiny_llama_dir, "--finetuned", planted_dir, "--controls", 4, "--out", root / "lens",
            *common)  # fmt: skip
    lens = json.loads((root / "lens" / "lens.json").read_text(encoding="utf-8"))
    lens["lens"][0]["promoted"][0] = HOSTILE  # a token as hostile as a tokenizer could hold
    (root / "lens" / "lens.json").write_text(json.dumps(lens, ensure_ascii=False), encoding="utf-8")
    # A generation as hostile as a model could write, beside the real ones.
    generations = root / "necessity" / "generations.jsonl"
    hostile = {"prompt_index": 2, "prompt": HOSTILE, "condition": HOSTILE, "text": f"{HOSTILE} 😀", "emojis": ["😀"]}
    with open(generations, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(hostile, ensure_ascii=False) + "\n")
    run_cli("report", root)
    return root


class Elements(HTMLParser):
    """Counts tags and records event-handler attributes and script bodies."""

    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.handlers: list[tuple[str, str]] = []
        self.sources: list[str] = []  # src / href attributes that load something
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.handlers += [(tag, name) for name, _ in attrs if name.startswith("on")]
        self.sources += [value for name, value in attrs if name == "src" or (name == "href" and tag == "link")]
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def parsed(path: Path) -> tuple[str, Elements]:
    text = path.read_text(encoding="utf-8")
    elements = Elements()
    elements.feed(text)
    return text, elements


def test_report_has_every_section_from_real_artifacts(run_dir):
    text, elements = parsed(run_dir / "report.html")
    for section in ("overview", "landscape", "neurons", "causal", "directions", "generations"):
        assert f'<section id="{section}">' in text
    assert elements.sources == []  # offline: nothing is loaded from anywhere (plotly.js is inlined)
    assert elements.tags["script"] >= 2 + 8  # plotly.js, our script, and one per figure
    run = load_run(run_dir)
    assert {a.role for a in run.ablations} == {"necessity", "sufficiency", "dose"}
    first = run.diff.neurons.rows[0]
    assert f"neuron {first['layer']}:{first['neuron']}" in text  # per-neuron details of the top neuron
    # the headline's findings, with both nulls, the adjusted p-value and whether the prompts were held out
    assert "emoji use" in text and "layer-matched and 4 selection-matched control sets" in text
    assert "adjusted p = " in text and "tested on the prompts they were selected on: 100% overlap" in text
    assert "4 control sets per scale the curve is descriptive (p cannot fall below 0.4)" in text  # 2/5, two-sided


def test_hostile_text_is_escaped_everywhere(run_dir):
    text, elements = parsed(run_dir / "report.html")
    assert "window.__pwned" not in "".join(elements.scripts)  # no script element carries it
    assert elements.handlers == []  # no on* attribute anywhere: the injected <img onerror> stayed text
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text  # shown, as text
    assert re.search(r'data-condition="necessity: &lt;/td&gt;.*?&quot;quoted&quot;', text)  # attribute intact
    assert '<span class="emoji">😀</span>' in text  # emojis highlighted


def test_missing_sections_are_left_out(run_dir, tmp_path):
    only_ablation = tmp_path / "only"
    shutil.copytree(run_dir / "dose", only_ablation / "dose")
    run_cli("report", only_ablation, "--out", tmp_path / "only.html")
    text = (tmp_path / "only.html").read_text(encoding="utf-8")
    assert '<section id="causal">' in text
    assert '<section id="landscape">' not in text and '<section id="neurons">' not in text
    assert '<section id="generations">' not in text  # scaling runs sample nothing by default

    directions_only = tmp_path / "directions"
    shutil.copytree(run_dir / "steer", directions_only / "steer")
    run_cli("report", directions_only)
    text = (directions_only / "report.html").read_text(encoding="utf-8")
    assert '<section id="directions">' in text and '<section id="causal">' not in text
    assert "steer steer coeff=4" in text and "Dose curves" in text

    bare_diff = tmp_path / "bare"
    shutil.copytree(run_dir / "diff", bare_diff)
    (bare_diff / "profiles.json").unlink()
    (bare_diff / "landscape.safetensors").unlink()
    run_cli("report", bare_diff)
    text = (bare_diff / "report.html").read_text(encoding="utf-8")
    assert '<section id="neurons">' in text and '<section id="landscape">' not in text
    assert "in context" not in text


def test_report_size_is_bounded(run_dir):
    size = (run_dir / "report.html").stat().st_size
    assert size < 15e6
    plotly_js = 4.9e6  # the inlined library is most of it
    assert size < plotly_js + 2e6


@pytest.mark.parametrize("make", ["empty", "corrupt", "missing"])
def test_bad_run_directories_exit_2(tmp_path, capsys, make):
    target = tmp_path / "run"
    if make != "missing":
        target.mkdir()
    if make == "corrupt":
        (target / "ablation.json").write_text("{not json", encoding="utf-8")
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not (target / "report.html").exists()


@pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed (make browser)")
def test_report_renders_in_a_real_browser(run_dir, tmp_path):
    result = open_report(run_dir / "report.html", tmp_path / "report.png")
    assert result.errors == []
    assert result.plots >= 8 and result.rendered == result.plots  # every figure drew its SVG
    assert result.pwned is None  # the hostile text never ran
    assert result.generation_rows > 1 and result.filtered_rows < result.generation_rows  # the filter works
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_headline_gives_the_zeroed_neurons_direct_push(run_dir):
    from viz.findings import headline

    run = load_run(run_dir)
    rows = {f"{r['layer']}:{r['neuron']}": r for r in run.diff.neurons}
    neurons = run.ablation("necessity").report["neurons"]
    push = sum(float(rows[a]["ft_mean"]) * float(rows[a]["emoji_dla"]) for a in neurons)
    assert (
        f"(ft_mean x emoji_dla) is {push:+.3g} logits: zeroing removes a net push {'up' if push > 0 else 'down'}"
        in (headline(run))
    )


def test_report_of_runs_without_controls(run_dir, planted_tiny, tmp_path):
    """--controls 0 (no nulls, no p-value): the report says "significance unknown" instead of failing."""
    planted_dir, _ = planted_tiny
    root = tmp_path / "no-controls"
    top = ["--neurons-from", run_dir / "diff" / "neurons.csv", "--top-k", 4, "--controls", 0, "--device", "cpu"]
    run_cli("ablate", "--model", planted_dir, *top, "--prompts", "persona-demo", "--out", root / "zero")
    run_cli("ablate", "--model", planted_dir, "--mode", "scale", "--alpha", "0,2", *top, "--prompts", "persona-demo",
            "--out", root / "dose")  # fmt: skip
    run_cli("report", root)
    text = (root / "report.html").read_text(encoding="utf-8")
    assert "no controls were run: significance unknown" in text
    assert "no controls were run: the curve is descriptive" in text


def test_emoji_rates_are_compared_with_fishers_exact_test(tmp_path):
    from viz.findings import findings

    rows = [{"model": "base", "trait": "extraversion", "responses": 26, "esr": 0.0},
            {"model": "peft", "trait": "extraversion", "responses": 26, "esr": 8 / 26}]  # fmt: skip
    (tmp_path / "table.json").write_text(json.dumps({"columns": ["model"], "rows": rows}), encoding="utf-8")
    first = findings(load_run(tmp_path))[0]
    assert "8/26 vs 0/26, Fisher's exact p = 0.00" in first and ": significant)" in first
    rows[1]["esr"] = 1 / 26  # one emoji answer: not enough
    (tmp_path / "table.json").write_text(json.dumps({"columns": ["model"], "rows": rows}), encoding="utf-8")
    assert "1/26 vs 0/26, Fisher's exact p = 1: not significant" in findings(load_run(tmp_path))[0]


def test_a_pipeline_prints_one_adjusted_p_per_test_and_claim_everywhere(run_dir, tiny_llama_dir, planted_tiny,
                                                                         tmp_path):  # fmt: skip
    """In a pipeline run the primary tests are one family per claim: the headline, the verdicts of the causal
    section and the readout table all print the family's adjusted p-values (Holm over the two tests here), never
    the run's own; specificity and behaviour are shown beside the teacher-forced readout; the moved tokens (model
    text) are escaped; the dose curve is descriptive, without a Holm p."""
    planted_dir, _ = planted_tiny
    root = tmp_path / "pipeline"
    for stage in ("diff", "dose"):
        shutil.copytree(run_dir / stage, root / stage)
    (root / "pipeline.json").write_text(json.dumps({"command": "pipeline"}), encoding="utf-8")
    common = ["--neurons-from", root / "diff" / "neurons.csv", "--top-k", 4, "--controls", 20, "--alternative",
              "from-diff", "--samples", 1, "--max-new-tokens", 8, "--prompts", "persona-demo[1::2]",
              "--device", "cpu"]  # fmt: skip
    run_cli("ablate", "--model", planted_dir, "--out", root / "necessity", *common)
    run_cli("ablate", "--model", tiny_llama_dir, "--source-model", planted_dir, "--mode", "patch", "--out",
            root / "sufficiency", *common)  # fmt: skip
    path = root / "necessity" / "ablation.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    comparison = next(iter(report["comparisons"].values()))
    comparison["specificity"]["most_raised"][0]["text"] = HOSTILE
    path.write_text(json.dumps(report, ensure_ascii=False), encoding="utf-8")
    run_cli("report", root)
    text, elements = parsed(root / "report.html")
    assert elements.handlers == [] and "window.__pwned" not in "".join(elements.scripts)
    causal = text[text.index('<section id="causal">') :]
    assert causal.count("over 2 tests") == 2 and "over 1 test," not in causal  # the family, in both verdicts
    assert "Every readout, one adjusted p-value each" in causal
    assert "matched token sets" in causal and "paired answers" in causal
    assert "emoji-onset tokens:" in causal  # the onset tokens' ranks among the moved tokens
    headline = text[: text.index('<section id="causal">')]
    assert headline.count("over 2 tests") == 2 and "Specificity: " in headline and "Sampled behaviour: " in headline
    dose = causal[causal.index("<b>dose") :]
    assert "descriptive only" in dose[: dose.index("</p>")] and "Holm-adjusted p" not in dose[: dose.index("</p>")]
