"""``interp report RUN_DIR``: one self-contained HTML file (plotly.js inlined, no network) from a run's artifacts.

Sections appear only when their data exists: overview, neuron landscape, top neurons, causal results,
generations. Every piece of model or user text is escaped with ``html.escape`` (text and attributes);
figures get only escaped labels. Neurons beyond the top few hundred are summarised (the landscape heatmap),
not listed one by one, which keeps the default pipeline's report at a few MB.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import plotly.graph_objects as go
import plotly.offline

from interp import artifacts
from interp.verdicts import NOT_SPECIFIC, NULL_LABELS, SPECIFIC
from probes.emoji import find_emojis
from viz import figures
from viz.findings import findings, headline
from viz.run_artifacts import AblationRun, DiffRun, RunArtifacts, load_run

TABLE_NEURONS = 200  # rows of the sortable top-neuron table
DETAIL_NEURONS = 20  # neurons with contexts and promoted tokens written out
GENERATIONS = 400  # generation rows shown per report
NEURON_COLUMNS = ("rank", "layer", "neuron", "score", "base_mean", "ft_mean", "mean_diff", "cohens_d",
                  "base_freq", "ft_freq", "category", "emoji_dla")  # fmt: skip
e = html.escape

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 24px 60px;color:#222}
h1{margin-top:28px}h2{border-bottom:2px solid #eee;padding-bottom:4px;margin-top:40px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#f4f4f4;cursor:pointer;user-select:none}.headline{font-size:17px;background:#fff8e6;padding:12px 16px;
border-left:4px solid #f58518}.ctx{font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap;
line-height:1.9;margin:4px 0}.tok{border-radius:3px;padding:1px 0}.focus{outline:2px solid #222}
.emoji{background:#ffe08a;border-radius:3px;padding:0 2px}details{margin:6px 0}pre{background:#f7f7f7;padding:8px;
overflow-x:auto;font-size:12px}nav a{margin-right:14px}.muted{color:#777}.scroll{max-height:460px;overflow:auto}
.wide{max-width:100%;overflow-x:auto}.headline li{margin:4px 0}
"""

SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function(th, column){
  th.addEventListener('click', function(){
    var body = th.closest('table').tBodies[0], rows = Array.from(body.rows), asc = th.dataset.asc !== '1';
    rows.sort(function(a, b){
      var x = a.cells[column].textContent, y = b.cells[column].textContent, nx = parseFloat(x), ny = parseFloat(y);
      var d = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? d : -d;
    });
    th.dataset.asc = asc ? '1' : '0';
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
var pick = document.getElementById('generation-filter');
if (pick) pick.addEventListener('change', function(){
  document.querySelectorAll('#generations tbody tr').forEach(function(r){
    r.style.display = (pick.value === '' || r.dataset.condition === pick.value) ? '' : 'none';
  });
});
"""


def write_report(run_dir: Path, out: Path | None = None) -> str:
    """Build the report of ``run_dir`` into ``out`` (default RUN_DIR/report.html); return the headline."""
    run = load_run(run_dir)
    target = Path(out) if out else Path(run_dir) / "report.html"
    artifacts.check_output_dir(target.parent)
    text = headline(run)
    artifacts.write_text(target, render(run, text))
    return text


def render(run: RunArtifacts, headline_text: str) -> str:
    sections = [("overview", "Overview", _overview(run, headline_text))]
    if run.diff:
        if run.diff.landscape is not None:
            sections.append(("landscape", "Neuron landscape", _landscape(run.diff)))
        sections.append(("neurons", "Top neurons", _top_neurons(run.diff)))
    causal = [a for a in run.ablations if a.report.get("comparisons")]
    if causal:
        sections.append(("causal", "Causal results", _causal(run, causal)))
    if run.persona or run.lens or run.steerings:
        sections.append(("directions", "Directions", _directions(run)))
    if run.sweep:
        sections.append(("sweep", "Sweep", _sweep(run.sweep)))
    if any(a.generations for a in run.ablations):
        sections.append(("generations", "Generations", _generations(run.ablations)))
    nav = "".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{title}</h2>{content}</section>' for key, title, content in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>persona-interp report: {e(str(run.root.name))}</title><style>{STYLE}</style>"
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head><body>'
        f"<h1>persona-interp report</h1><p class=muted>{e(str(run.root))}</p><nav>{nav}</nav>{body}"
        f"<script>{SCRIPT}</script></body></html>"
    )


def _figure(figure: go.Figure) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})


def _table(header: list[str], rows: list[list], attrs: str = "") -> str:
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<div class="wide"><table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --- overview ------------------------------------------------------------------------------------------
def _overview(run: RunArtifacts, headline_text: str) -> str:
    found = findings(run)
    items = "".join(f"<li>{e(sentence)}</li>" for sentence in found)
    parts = [f'<ul class="headline">{items}</ul>' if found else f'<p class="headline">{e(headline_text)}</p>']
    trait = _trait(run)
    if trait:
        parts.append(f"<p>Trait: <b>{e(trait)}</b></p>")
    models = _models(run)
    if models:
        parts.append("<h3>Models</h3>" + _table(["role", "reference", "weights fingerprint"], models))
    if run.evaluate:
        columns = run.evaluate["columns"]
        rows = [[row.get(c) for c in columns] for row in run.evaluate["rows"]]
        parts.append("<h3>Evaluation (ESR, TA, PAE)</h3>" + _table(columns, rows))
    settings = []
    if run.pipeline:
        settings.append(("pipeline", run.pipeline.get("settings"), run.pipeline.get("stages")))
    if run.diff:
        settings.append(("diff-neurons", run.diff.summary.get("argv"), run.diff.summary.get("config")))
    for ablation in run.ablations:
        settings.append((f"ablate ({ablation.role})", ablation.report.get("argv"), ablation.report.get("config")))
    if settings:
        parts.append("<h3>Commands and settings</h3>")
        for name, first, second in settings:
            dump = json.dumps({"command": first, "settings": second}, indent=1, ensure_ascii=False, default=str)
            parts.append(f"<details><summary>{e(name)}</summary><pre>{e(dump)}</pre></details>")
    return "".join(parts)


def _trait(run: RunArtifacts) -> str | None:
    if run.pipeline:
        return run.pipeline.get("settings", {}).get("trait")
    if run.evaluate and run.evaluate.get("rows"):
        return ", ".join(dict.fromkeys(str(row.get("trait")) for row in run.evaluate["rows"]))
    return None


def _models(run: RunArtifacts) -> list[list[str]]:
    rows = []
    if run.diff and "models" in run.diff.summary:
        rows = [
            [role, entry.get("ref"), entry.get("fingerprint")] for role, entry in run.diff.summary["models"].items()
        ]
    seen = {row[2] for row in rows}
    for ablation in run.ablations:
        for key in ("model", "source_model"):
            entry = ablation.report.get(key)
            if entry and entry.get("fingerprint") not in seen:
                rows.append([f"{ablation.role} {key.replace('_', ' ')}", entry.get("ref"), entry.get("fingerprint")])
                seen.add(entry.get("fingerprint"))
    return rows


# --- neurons -------------------------------------------------------------------------------------------
def _landscape(diff: DiffRun) -> str:
    floor = diff.summary.get("noise_floor", {})
    note = e(
        f"Noise floor: the largest |score| between two halves of the prompts on the base model is "
        f"{floor['score']['max']:.3g}; {floor.get('neurons_above_max_score', 0)} neurons exceed it."
        if "score" in floor
        else "No noise floor (it needs at least two prompts)."
    )
    return _figure(figures.landscape(diff)) + f"<p>{note}</p>" + _figure(figures.layer_summary(diff))


def _top_neurons(diff: DiffRun) -> str:
    definition = diff.summary.get("ranking", {}).get("score_definition", "")
    rows = [[row.get(c, "") for c in NEURON_COLUMNS] for row in diff.neurons.top(TABLE_NEURONS)]
    parts = [
        f"<p>Ranked by {e(diff.summary.get('ranking', {}).get('rank_by', 'score'))}: {e(definition)}. "
        f"Click a column to sort. Showing {len(rows)} of {len(diff.neurons)} rows of neurons.csv.</p>",
        f'<div class="scroll">{_table(list(NEURON_COLUMNS), rows, "class=sortable")}</div>',
    ]
    if diff.profiles and diff.profiles.get("neurons"):
        parts.append(_figure(figures.distributions(diff)))
        parts.append(f"<h3>The first {DETAIL_NEURONS} neurons in context</h3>")
        for address in diff.profiles["neurons"][:DETAIL_NEURONS]:
            parts.append(_neuron_details(address, diff.profiles["models"]))
    return "".join(parts)


def _neuron_details(address: str, models: dict) -> str:
    blocks = []
    for model, profiles in models.items():
        profile = profiles.get(address)
        if not profile:
            continue
        promoted = ", ".join(f"{_token(t['token'])} ({t['logit']:+.3g})" for t in profile["promoted_tokens"])
        contexts = "".join(_context(c) for c in profile["contexts"])
        blocks.append(f"<h4>{e(model)}</h4><p>Output promotes: {promoted}</p>{contexts}")
    return f"<details><summary>neuron {e(address)}</summary>{''.join(blocks)}</details>"


def _token(text: str) -> str:
    return f"<code>{e(repr(text)[1:-1])}</code>"


def _context(context: dict) -> str:
    peak = max((abs(a) for a in context["activations"]), default=1.0) or 1.0
    spans = []
    for position, (token, value) in enumerate(zip(context["tokens"], context["activations"])):
        strength = min(1.0, abs(value) / peak)
        colour = f"rgba(245,133,24,{strength:.2f})" if value >= 0 else f"rgba(76,120,168,{strength:.2f})"
        focus = " focus" if position == context["focus"] else ""
        shown = e(token).replace("\n", "↵")
        spans.append(f'<span class="tok{focus}" style="background:{colour}" title="{value:.4g}">{shown}</span>')
    return f'<div class="ctx">{"".join(spans)} <span class="muted">({context["activation"]:.4g})</span></div>'


# --- causal --------------------------------------------------------------------------------------------
def _causal(artifacts_: RunArtifacts, runs: list[AblationRun]) -> str:
    printed = [(run, name, comparison) for run in runs for name, comparison in
               artifacts_.printed_comparisons(run).items()]  # fmt: skip
    primary = [entry for entry in printed if entry[0].role in ("restore", "necessity", "sufficiency")]
    parts = [_figure(figures.control_comparison(primary))] if primary else []
    for run, name, comparison in printed:
        parts.append(f"<p><b>{e(run.role)} {e(name)}</b>: {e(comparison['verdict'])}</p>")
    parts.append(_claims_table(printed))
    parts.extend(_moved_tokens(run, name, comparison) for run, name, comparison in printed
                 if comparison.get("specificity"))  # fmt: skip
    dose = next((r for r in runs if r.role == "dose"), None)
    if dose:
        parts.append(_figure(figures.dose_response(dose)))
    parts.append(_figure(figures.side_effects(runs)))
    rows = []
    for run in runs:
        for name, condition in run.report["conditions"].items():
            if condition["kind"] not in ("control", "matched"):
                rows.append([run.role, name, condition["emoji_onset_probability"],
                             condition["first_reply_onset_probability"], condition.get("answer_emoji_probability"),
                             condition["kl_from_unedited"], condition["neutral_perplexity"]])  # fmt: skip
    header = ["run", "condition", "emoji-onset probability", "at reply start", "P(an emoji along the answer)",
              "KL from unedited", "neutral perplexity"]  # fmt: skip
    parts.append("<h3>Conditions (controls summarised above)</h3>" + _table(header, rows, 'class="sortable"'))
    return "".join(parts)


def _claims_table(printed: list[tuple[AblationRun, str, dict]]) -> str:
    """One row per test and readout: the teacher-forced effect against each null (distance in the controls' SD and
    the p-value floor), its specificity against matched token sets, and sampled behaviour; one adjusted p each."""
    rows = []
    for run, name, comparison in printed:
        test = f"{run.role} {name}"
        for null, result in comparison.get("nulls", {}).items():
            rows.append([test, f"teacher-forced emoji-onset probability vs {NULL_LABELS.get(null, null)} sets",
                         comparison.get("relative_effect"), result["effect_in_control_sd"], result["p_value"],
                         result["min_p_value"], comparison.get("p_value_adjusted"),
                         "significant" if comparison.get("significant") else "not significant"])  # fmt: skip
        block = comparison.get("specificity")
        if block:
            rows.append([test, f"emoji-onset tokens vs {block['sets']} matched token sets",
                         block["emoji_relative_change"], block["effect_in_matched_sd"], block["p_value"],
                         block["min_p_value"], block.get("p_value_adjusted"),
                         SPECIFIC if block.get("specific") else NOT_SPECIFIC])  # fmt: skip
        block = comparison.get("behaviour")
        if block:
            rows.append([test, f"sampled emoji use, {block['pairs']} paired answers ({block['agreement']})",
                         block["rate_difference"], None, block["p_value"], block["min_p_value"],
                         block.get("p_value_adjusted"),
                         "significant" if block.get("significant") else "not significant"])  # fmt: skip
    header = ["test", "readout", "change", "SD from controls", "p", "p floor", "Holm-adjusted p", "verdict"]
    return "<h3>Every readout, one adjusted p-value each</h3>" + _table(header, rows)


def _moved_tokens(run: AblationRun, name: str, comparison: dict) -> str:
    """The tokens whose mean log-probability the tested edit moved most, and the emoji-onset tokens' ranks."""
    block = comparison["specificity"]

    def listed(entries: list[dict]) -> str:
        return ", ".join(f"{_token(entry['text'] or str(entry['token']))} ({entry['logprob_change']:+.2f})"
                         for entry in entries)  # fmt: skip

    onset = ", ".join(f"{_token(entry['text'] or str(entry['token']))} {entry['logprob_change']:+.2f} nats (top "
                      f"{entry['share_of_vocabulary_moved_more']:.1%})" for entry in block["onset_tokens"])  # fmt: skip
    return (f"<details><summary>{e(run.role)} {e(name)}: the tokens it moved most (mean log-probability change, "
            f"nats)</summary><p>raised: {listed(block['most_raised'])}</p><p>lowered: {listed(block['most_lowered'])}"
            f"</p><p>emoji-onset tokens: {onset}</p></details>")  # fmt: skip


# --- directions ----------------------------------------------------------------------------------------
def _directions(run: RunArtifacts) -> str:
    parts = []
    persona = run.persona
    if persona:
        rows = [[entry["layer"], entry["norm"], entry["residual_rms"], entry["split_half_cosine"]]
                for entry in persona["layers"]]  # fmt: skip
        header = ["layer", "norm", "residual rms", "split-half cosine"]
        parts.append(f"<h3>Persona vector: {e(persona['trait'])}</h3><p>High-pole minus low-pole mean residual over "
                     f"{persona['questions']} questions' teacher-forced answers, per layer.</p>"
                     + _table(header, rows, 'class="sortable"'))  # fmt: skip
        if "finetune_shift" in persona:
            shift = persona["finetune_shift"]
            parts.append(_figure(figures.persona_projection(persona)))
            rows = [[entry["layer"], entry["projection"], _interval(entry["projection_ci95"]), entry["cosine"],
                     entry["p_value_adjusted"], "yes" if entry["significant"] else "no",
                     {True: "yes", False: "no"}.get(entry["largest_of_the_traits"])]
                    for entry in shift["layers"]]  # fmt: skip
            header = ["layer", "projection", "95 % CI", "cosine", "Holm p", "significant", "largest of the traits"]
            parts.append(f"<p>Alternative: {e(shift['alternative'])}; null: {e(shift['null'])}.</p>"
                         + _table(header, rows, 'class="sortable"'))  # fmt: skip
        if "neurons" in persona:
            rows = [[row["neuron"], row["cosine"], row["p_value_adjusted"]] for row in persona["neurons"]["neurons"]]
            parts.append("<h3>Top neurons' write directions against the persona vector</h3><p>A random direction "
                         f"has |cosine| {persona['neurons']['random_direction_mean_abs_cosine']:.3f} on average.</p>"
                         + _table(["neuron", "cosine", "Holm p"], rows))  # fmt: skip
    if run.lens:
        rows = [[entry["layer"], entry["norm"], entry["onset_probability"], entry["random_onset_probability_median"],
                 entry.get("p_value_adjusted"), " ".join(entry["promoted"][:10]), " ".join(entry["suppressed"][:10])]
                for entry in run.lens["lens"]]  # fmt: skip
        header = ["layer", "|difference|", "emoji-onset mass", "random directions", "Holm p", "promoted", "suppressed"]
        parts.append("<h3>Activation-difference lens</h3><p>The fine-tuned minus base mean residual on neutral "
                     "text, read through the final norm and unembedding.</p>" + _table(header, rows))  # fmt: skip
        steering = run.lens["steering"]
        for comparison in steering["comparisons"].values():
            closed = comparison.get("gap_closed")
            share = f" It reproduces {closed:.0%} of the fine-tune's change." if closed is not None else ""
            parts.append(f"<p><b>The difference added to the base model after block {steering['layer']}</b>: "
                         f"{e(comparison['verdict'])}{e(share)}</p>")  # fmt: skip
    if run.steerings:
        parts.append(_figure(figures.steering_doses(run.steerings, run.ablation("dose"))))
        for steering in run.steerings:
            for name, comparison in steering.report["comparisons"].items():
                parts.append(f"<p><b>steer {e(steering.path.name)} {e(name)}</b>: {e(comparison['verdict'])}</p>")
    return "".join(parts)


def _sweep(sweep: dict) -> str:
    settings = sweep["settings"]
    base = "; ".join(f"system message {system}: ESR {b['esr']:.1%} of {b['answers']} answers"
                     for system, b in sweep["base"].items())  # fmt: skip
    intro = (f"<p>{e(settings['model'])}, {e(settings['trait'])}: each setting trained with seeds "
             f"{e(', '.join(map(str, settings['seeds'])))} and measured on {settings['questions']} test questions "
             f"({settings['samples']} untruncated answers each). Base model: {e(base)}. The emoji-onset ratio is the "
             "fine-tuned over the base model's probability on the fine-tuned model's own answers; its interval is "
             "across seeds, and its direction is a t test of the seeds' log ratios against 0, Holm-adjusted across "
             "settings; ESR p-values are Fisher's exact test against the base model, Holm-adjusted across "
             "settings.</p>")  # fmt: skip
    header = ["setting", "seeds", "ratio at reply start", "95 % CI", "p (Holm)", "direction", "ratio at answer end",
              "95 % CI", "ESR", "ESR 95 % CI", "base ESR", "ESR p (Holm)", "TA", "perplexity",
              "failed seeds"]  # fmt: skip
    rows = [[row["cell"], row["seeds"], row["onset_ratio_start"],
             _interval([row["onset_ratio_start_ci_low"], row["onset_ratio_start_ci_high"]]
                       if row["onset_ratio_start_ci_low"] is not None else None),
             row["onset_p_value_adjusted"], row["direction"], row["onset_ratio_end"],
             _interval([row["onset_ratio_end_ci_low"], row["onset_ratio_end_ci_high"]]
                       if row["onset_ratio_end_ci_low"] is not None else None),
             row["esr"], _interval([row["esr_ci_low"], row["esr_ci_high"]]), row["base_esr"],
             row["esr_p_value_adjusted"], row["ta"], row["perplexity"],
             ", ".join(map(str, row["failed_seeds"] or [])) or "-"] for row in sweep["rows"]]  # fmt: skip
    figure = _figure(figures.sweep_ratios(sweep)) if any(r["onset_ratio_start"] for r in sweep["rows"]) else ""
    return intro + figure + _table(header, rows)


def _interval(values: list[float] | None) -> str:
    return "-" if not values else f"{values[0]:.4g} to {values[1]:.4g}"


# --- generations ---------------------------------------------------------------------------------------
def _generations(runs: list[AblationRun]) -> str:
    records = [(run.role, g) for run in runs for g in run.generations][:GENERATIONS]
    labels = list(dict.fromkeys(f"{role}: {g.get('condition', '')}" for role, g in records))
    options = "".join(f'<option value="{e(label, quote=True)}">{e(label)}</option>' for label in labels)
    rows = []
    for role, record in records:
        label = f"{role}: {record.get('condition', '')}"
        rows.append(
            f'<tr data-condition="{e(label, quote=True)}"><td>{e(label)}</td><td>{e(str(record.get("prompt", "")))}'
            f"</td><td>{_highlight_emojis(str(record.get('text', '')))}</td></tr>"
        )
    return (
        f'<p>Sampled answers per condition (emojis highlighted). Filter: <select id="generation-filter">'
        f'<option value="">all conditions</option>{options}</select></p>'
        f'<div class="scroll"><table id="generations"><thead><tr><th>condition</th><th>prompt</th><th>answer</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _highlight_emojis(text: str) -> str:
    pieces, last = [], 0
    for match in find_emojis(text):
        pieces.append(e(text[last : match.start]))
        pieces.append(f'<span class="emoji">{e(match.text)}</span>')
        last = match.end
    pieces.append(e(text[last:]))
    return "".join(pieces)
