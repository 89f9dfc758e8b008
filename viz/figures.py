"""Plotly figures of a run's artifacts. Every label drawn from model or user text is HTML-escaped first
(Plotly renders a subset of HTML in text, links included)."""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.run_artifacts import AblationRun, DiffRun

BASE_COLOUR, FT_COLOUR, CONTROL_COLOUR, TESTED_COLOUR = "#4c78a8", "#f58518", "#9d9d9d", "#d62728"
HOVER_NEURONS = 100  # neurons of the landscape marked, with full hover details (the rest: the heatmap only)


def _layout(figure: go.Figure, title: str, height: int = 420) -> go.Figure:
    figure.update_layout(title=html.escape(title), height=height, template="plotly_white",
                         margin={"l": 60, "r": 20, "t": 60, "b": 50})  # fmt: skip
    return figure


def landscape(diff: DiffRun) -> go.Figure:
    """Every neuron by layer and index, coloured by the signed diff score; the top neurons hoverable in detail."""
    land = diff.landscape
    limit = float(np.quantile(np.abs(land.score), 0.999)) or 1.0
    figure = go.Figure(
        go.Heatmap(
            z=np.round(land.score, 5),
            x=np.arange(land.score.shape[1]),
            y=land.layers,
            zmid=0,
            zmin=-limit,
            zmax=limit,
            colorscale="RdBu_r",
            colorbar={"title": "score"},
            hovertemplate="layer %{y}, neuron %{x}<br>score %{z:.3g}<extra></extra>",
        )  # fmt: skip
    )
    top = diff.neurons.top(HOVER_NEURONS)
    if top:
        details = [
            [html.escape(row.get(key, "")) for key in ("base_mean", "ft_mean", "base_freq", "ft_freq", "category",
                                                       "emoji_dla", "score", "rank")]
            for row in top
        ]  # fmt: skip
        figure.add_trace(
            go.Scatter(
                x=[int(row["neuron"]) for row in top],
                y=[int(row["layer"]) for row in top],
                mode="markers",
                marker={"size": 7, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 1}},
                customdata=details,
                name=f"top {len(top)}",
                hovertemplate=(
                    "<b>%{y}:%{x}</b> (rank %{customdata[7]})<br>score %{customdata[6]}<br>"
                    "mean base %{customdata[0]} / fine-tuned %{customdata[1]}<br>"
                    "active base %{customdata[2]} / fine-tuned %{customdata[3]}<br>"
                    "category %{customdata[4]}<br>emoji_dla %{customdata[5]}<extra></extra>"
                ),
            )  # fmt: skip
        )
    figure.update_xaxes(title="neuron index")
    figure.update_yaxes(title="layer")
    return _layout(figure, "Neuron landscape: change in direct emoji push (red raises emojis, blue lowers)", 520)


def layer_summary(diff: DiffRun) -> go.Figure:
    """Per layer: the largest |score| against the noise floor, and how many neurons fall in each category."""
    land = diff.landscape
    figure = make_subplots(rows=1, cols=2, subplot_titles=("max |score| per layer", "neurons per category"))
    figure.add_trace(go.Bar(x=land.layers, y=np.abs(land.score).max(axis=1), name="max |score|",
                            marker_color=FT_COLOUR), row=1, col=1)  # fmt: skip
    floor = diff.summary.get("noise_floor", {}).get("score", {}).get("max")
    if floor is not None:
        figure.add_hline(y=floor, line_dash="dash", line_color="black", row=1, col=1,
                         annotation_text="noise floor (max between prompt halves)")  # fmt: skip
    for index, name in enumerate(land.categories):
        if name == "unchanged":
            continue
        figure.add_trace(go.Bar(x=land.layers, y=(land.category == index).sum(axis=1), name=name), row=1, col=2)
    figure.update_layout(barmode="stack")
    figure.update_xaxes(title="layer")
    return _layout(figure, "Per-layer summary", 380)


def distributions(diff: DiffRun, limit: int = 50) -> go.Figure:
    """Activation distributions of the profiled neurons in both models; a menu picks the neuron."""
    profiles = diff.profiles
    neurons = profiles["neurons"][:limit]
    figure = go.Figure()
    for number, address in enumerate(neurons):
        for model, colour in (("base", BASE_COLOUR), ("finetuned", FT_COLOUR)):
            values = profiles["models"].get(model, {}).get(address, {}).get("values", [])
            figure.add_trace(
                go.Histogram(
                    x=values,
                    name=f"{model}",
                    marker_color=colour,
                    opacity=0.6,
                    histnorm="probability",
                    nbinsx=60,
                    visible=number == 0,
                    legendgroup=model,
                )  # fmt: skip
            )
    buttons = [
        {
            "label": html.escape(address),
            "method": "update",
            "args": [{"visible": [i // 2 == number for i in range(2 * len(neurons))]}],
        }
        for number, address in enumerate(neurons)
    ]
    figure.update_layout(barmode="overlay", updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.18, "xanchor": "right"}])
    figure.update_xaxes(title="activation at counted positions")
    figure.update_yaxes(title="share of positions")
    return _layout(figure, "Activation distributions, base vs fine-tuned (pick a neuron)")


NULL_COLOURS = {"layer": CONTROL_COLOUR, "matched": "#54a24b"}
NULL_NAMES = {"layer": "layer-matched random sets", "matched": "selection-matched sets"}


def control_comparison(printed: list[tuple[AblationRun, str, dict]]) -> go.Figure:
    """For each causal test side by side (``printed``: run, comparison name, the comparison as the report prints
    it): both nulls' control statistics and the tested set's."""
    titles = [f"{run.role}: {name}" for run, name, _ in printed]
    figure = make_subplots(rows=1, cols=max(1, len(titles)), subplot_titles=[html.escape(t) for t in titles])
    shown = set()
    for column, (_, _, comparison) in enumerate(printed, start=1):
        for null, test in comparison.get("nulls", {}).items():
            figure.add_trace(
                go.Histogram(x=test["control_effects"], name=NULL_NAMES.get(null, null), opacity=0.65,
                             marker_color=NULL_COLOURS.get(null), showlegend=null not in shown, nbinsx=20,
                             legendgroup=null), row=1, col=column,
            )  # fmt: skip
            shown.add(null)
        if "p_value" in comparison:
            verdict = "significant" if comparison["significant"] else "not significant"
            label = f"tested, adj. p={comparison['p_value_adjusted']:.3g} ({verdict})"
        else:
            label = "tested (no controls)"
        statistic = comparison.get("log_ratio", comparison["effect"])  # artifacts before the log ratio: effect
        figure.add_vline(x=statistic, line_color=TESTED_COLOUR, line_width=3, row=1, col=column,
                         annotation_text=label)  # fmt: skip
        title = "mean log ratio of emoji-onset probability" if "log_ratio" in comparison else "change"
        figure.update_xaxes(title=title, row=1, col=column)
    figure.update_layout(barmode="overlay")
    return _layout(figure, "Tested neurons vs both nulls (layer-matched and selection-matched control sets)", 400)


def dose_response(run: AblationRun) -> go.Figure:
    """Emoji-onset probability as the tested neurons are scaled by alpha; control sets' mean and spread."""
    figure = go.Figure()
    _dose_traces(figure, run.dose_points(), "random sets (mean +- sd)", "tested neurons")
    figure.update_xaxes(title="alpha (activation scale; 1 = unedited)")
    figure.update_yaxes(title="emoji-onset probability")
    return _layout(figure, "Dose-response: scaling the tested neurons in the fine-tuned model")


def steering_doses(steerings: list[AblationRun], neuron_dose: AblationRun | None) -> go.Figure:
    """Steering dose curves (coefficient -> emoji-onset probability, random directions' mean and sd), next to the
    neurons' dose curve when the run has one."""
    titles = [f"steering after block {run.report['vector']['layer']} ({run.path.name})" for run in steerings]
    titles += ["scaling the tested neurons"] if neuron_dose else []
    figure = make_subplots(rows=1, cols=len(titles), subplot_titles=[html.escape(t) for t in titles])
    for column, run in enumerate(steerings, start=1):
        _dose_traces(figure, run.dose_points(identity=0.0), "random directions (mean +- sd)", "along the vector",
                     column=column, legend=column == 1)  # fmt: skip
        figure.update_xaxes(title="coefficient (0 = unedited)", row=1, col=column)
    if neuron_dose:
        _dose_traces(figure, neuron_dose.dose_points(), "random neuron sets (mean +- sd)", "tested neurons",
                     column=len(titles))  # fmt: skip
        figure.update_xaxes(title="alpha (1 = unedited)", row=1, col=len(titles))
    figure.update_yaxes(title="emoji-onset probability", row=1, col=1)
    return _layout(figure, "Dose curves: steering along a direction, and scaling neurons", 420)


def _dose_traces(figure: go.Figure, points, control_name: str, tested_name: str, column: int | None = None,
                 legend: bool = True) -> None:  # fmt: skip
    doses, tested, controls, spread = (list(values) for values in zip(*points))
    where = {"row": 1, "col": column} if column else {}
    figure.add_trace(go.Scatter(x=doses, y=controls, error_y={"type": "data", "array": spread}, mode="lines+markers",
                                name=control_name, line={"color": CONTROL_COLOUR}, showlegend=legend),
                     **where)  # fmt: skip
    figure.add_trace(go.Scatter(x=doses, y=tested, mode="lines+markers", name=tested_name, showlegend=legend,
                                line={"color": TESTED_COLOUR, "width": 3}), **where)  # fmt: skip


def sweep_ratios(sweep: dict) -> go.Figure:
    """Per sweep cell (sorted as the table): the fine-tune's emoji-onset ratio to the base model at the reply start
    and at the answer's end, pooled over seeds, with the 95 % interval across seeds; 1 = the base model's level."""
    rows = [row for row in sweep["rows"] if row.get("onset_ratio_start") is not None]
    figure = go.Figure()
    for where, colour in (("start", TESTED_COLOUR), ("end", CONTROL_COLOUR)):
        ratios = [row[f"onset_ratio_{where}"] for row in rows]
        low = [r - (row[f"onset_ratio_{where}_ci_low"] or r) for r, row in zip(ratios, rows)]
        high = [(row[f"onset_ratio_{where}_ci_high"] or r) - r for r, row in zip(ratios, rows)]
        figure.add_trace(go.Scatter(
            x=ratios, y=[html.escape(row["cell"]) for row in rows], mode="markers",
            marker={"color": colour, "size": 10},
            error_x={"type": "data", "symmetric": False, "array": high, "arrayminus": low},
            name="at the reply start" if where == "start" else "at the answer's end",
        ))  # fmt: skip
    figure.add_vline(x=1.0, line_dash="dash", annotation_text="base model")
    figure.update_xaxes(type="log", title="emoji-onset probability, fine-tuned / base (log scale)")
    figure.update_yaxes(autorange="reversed")
    return _layout(figure, "Where emoji use rises or falls: each setting over its seeds", 160 + 40 * len(rows))


def persona_projection(persona: dict) -> go.Figure:
    """Per layer: the fine-tune's shift projected on the persona vector (95 % interval over questions) with the
    band random directions would give (+-1.96 x |shift| / sqrt(d)); and its cosine with every trait's vector."""
    layers = persona["finetune_shift"]["layers"]
    d_model = persona.get("d_model") or 0
    x = [entry["layer"] for entry in layers]
    figure = make_subplots(rows=1, cols=2, subplot_titles=(
        "shift along the persona vector (residual units)", "cosine of the shift with each trait's vector"))  # fmt: skip
    projection = [entry["projection"] for entry in layers]
    low = [p - (entry["projection_ci95"] or [p, p])[0] for p, entry in zip(projection, layers)]
    high = [(entry["projection_ci95"] or [p, p])[1] - p for p, entry in zip(projection, layers)]
    if d_model:
        band = [1.96 * entry["shift_norm"] / math.sqrt(d_model) for entry in layers]
        figure.add_trace(go.Scatter(x=x + x[::-1], y=band + [-b for b in band[::-1]], fill="toself", name="random "
                                    "directions (95 %)", line={"width": 0}, fillcolor="rgba(157,157,157,0.35)"),
                         row=1, col=1)  # fmt: skip
    figure.add_trace(go.Scatter(x=x, y=projection, mode="lines+markers", name="fine-tune shift (95 % CI)",
                                error_y={"type": "data", "symmetric": False, "array": high, "arrayminus": low},
                                line={"color": TESTED_COLOUR, "width": 3}), row=1, col=1)  # fmt: skip
    figure.add_trace(go.Scatter(x=x, y=[entry["cosine"] for entry in layers], mode="lines+markers",
                                name=html.escape(persona["trait"]), line={"color": TESTED_COLOUR, "width": 3}),
                     row=1, col=2)  # fmt: skip
    for trait in layers[0]["other_traits_cosine"]:
        cosines = [entry["other_traits_cosine"][trait] for entry in layers]
        figure.add_trace(go.Scatter(x=x, y=cosines, mode="lines", name=html.escape(trait), line={"width": 1}),
                         row=1, col=2)  # fmt: skip
    figure.update_xaxes(title="layer")
    return _layout(figure, "Did the fine-tune move the model along its trait? (persona vectors)", 420)


def side_effects(runs: list[AblationRun]) -> go.Figure:
    """KL from the unedited model and neutral-text perplexity: tested set vs the controls' mean, per run."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("KL(unedited || edited)", "neutral-text perplexity"))
    for column, metric in enumerate(("kl_from_unedited", "neutral_perplexity"), start=1):
        labels, tested, controls = [], [], []
        for run in runs:
            conditions = run.report["conditions"]
            for name, condition in conditions.items():
                if condition["kind"] != "tested":
                    continue
                labels.append(html.escape(f"{run.role} {name}"))
                tested.append(condition[metric])
                values = [
                    c[metric]
                    for c in conditions.values()
                    if c["kind"] in ("control", "matched")
                    and c["group"] == condition["group"]
                    and c[metric] is not None
                ]
                controls.append(float(np.mean(values)) if values else math.nan)
        figure.add_trace(go.Bar(x=labels, y=tested, name="tested", marker_color=TESTED_COLOUR,
                                showlegend=column == 1), row=1, col=column)  # fmt: skip
        figure.add_trace(go.Bar(x=labels, y=controls, name="control sets (mean)", marker_color=CONTROL_COLOUR,
                                showlegend=column == 1), row=1, col=column)  # fmt: skip
    return _layout(figure, "Side effects of the edits", 380)
