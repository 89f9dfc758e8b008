"""Training, saving and finding the trait metric models (``probes.metric_models`` holds the heads and scoring).

Trained on the Opinion QA answers (this package's dataset) and the PersonaLLM stories, on MiniLM sentence
embeddings; ``interp metric-models train`` rebuilds them, ``interp evaluate`` trains them once on first use.
"""

from __future__ import annotations

from pathlib import Path

import torch
from sklearn.metrics import accuracy_score, confusion_matrix

from finetune.dataset import load_rows, select
from interp import artifacts
from interp.embedded import home_dir
from interp.encoder import SentenceEncoder
from probes.metric_models import POLES, LinearHead, TraitMetricModel, mask_trait_words, personallm_stories
from probes.traits import TRAITS


def save_metric_model(model: TraitMetricModel, directory: Path) -> None:
    """heads.safetensors and metric_model.json, each written atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_path(directory / "heads.safetensors") as tmp:
        save_file(model.tensors(), str(tmp))
    artifacts.write_json(directory / "metric_model.json", model.metadata())


def load_metric_model(directory: Path | None = None) -> tuple[TraitMetricModel, SentenceEncoder] | None:
    """The metric model saved in ``directory`` (default: the cache's) with its encoder, or None if none is there."""
    directory = Path(directory) if directory else default_location()
    if not (directory / "metric_model.json").is_file():
        return None
    model = TraitMetricModel.load(directory)
    return model, SentenceEncoder(model.encoder)


def ensure_metric_model(directory: str | Path | None, log=print, show_progress: bool = True):
    """(model, encoder) from ``directory`` (default: the cache's), trained there first if it holds none."""
    directory = Path(directory) if directory else default_location()
    if not (directory / "metric_model.json").is_file():
        log(f"training the metric models once into {directory} ...")
        train_metric_models(directory, show_progress=show_progress)
    return load_metric_model(directory)


STORIES_SHARE = 0.02  # share of the high/low heads' training weight given to PersonaLLM stories


def default_location() -> Path:
    return home_dir() / "metric-models" / "default"


def train_metric_models(
    out: Path,
    encoder=None,
    dataset: str | None = None,
    show_progress: bool = True,
    stories_share: float = STORIES_SHARE,
) -> TraitMetricModel:
    """Train every head, evaluate in-domain (held-out topics / personas) and cross-domain, save to ``out``.

    The high/low heads see Opinion QA answers of their trait and the PersonaLLM training personas, the
    stories weighted to ``stories_share`` of the loss: more story weight helps on stories and hurts on
    Opinion QA's held-out topics (measured; see RESULTS.md)."""
    artifacts.check_output_dir(out)
    encoder = encoder or SentenceEncoder()
    rows = load_rows(dataset)
    train_rows, test_rows = select(rows, split="train"), select(rows, split="test")
    stories = personallm_stories()

    def embed(texts):
        return encoder.encode([mask_trait_words(t) for t in texts], show_progress=show_progress)

    x_train, x_test = embed([r.answer for r in train_rows]), embed([r.answer for r in test_rows])
    x_story = embed([s.text for s in stories])
    story_train = torch.tensor([not s.held_out for s in stories])

    trait_head = LinearHead.fit(x_train, [TRAITS.index(r.trait) for r in train_rows], TRAITS)
    predicted = trait_head.predict(x_test)
    truth = [r.trait for r in test_rows]
    report: dict = {
        "trait_5way": {
            "train_rows": len(train_rows),
            "test": "Opinion QA, 26 held-out topics",
            "accuracy": float(accuracy_score(truth, predicted)),
            "labels": list(TRAITS),
            "confusion": confusion_matrix(truth, predicted, labels=list(TRAITS)).tolist(),  # rows truth, cols predicted
        },
        "high_low": {},
    }
    pole_heads = {}
    for trait in TRAITS:
        tr = [i for i, r in enumerate(train_rows) if r.trait == trait]
        te = [i for i, r in enumerate(test_rows) if r.trait == trait]
        oq_x, oq_y = x_train[tr], [POLES.index(train_rows[i].pole) for i in tr]
        st_x, st_y = x_story[story_train], [s.poles[trait] for s, keep in zip(stories, story_train) if keep]
        held_x = x_story[~story_train]
        held_y = [POLES[s.poles[trait]] for s, keep in zip(stories, story_train) if not keep]
        test_x, test_y = x_test[te], [test_rows[i].pole for i in te]
        story_y = [POLES[s.poles[trait]] for s in stories]
        mix = torch.cat([torch.full((len(oq_y),), (1 - stories_share) / len(oq_y)),
                         torch.full((len(st_y),), stories_share / len(st_y))])  # fmt: skip
        both = LinearHead.fit(torch.cat([oq_x, st_x]), oq_y + st_y, POLES, weights=mix)
        only_oq = LinearHead.fit(oq_x, oq_y, POLES)
        only_st = LinearHead.fit(st_x, st_y, POLES)
        pole_heads[trait] = both
        report["high_low"][trait] = {
            "opinionqa_heldout_topics": float(accuracy_score(test_y, both.predict(test_x))),
            "personallm_heldout_personas": float(accuracy_score(held_y, both.predict(held_x))),
            "cross_domain_opinionqa_to_personallm": float(accuracy_score(story_y, only_oq.predict(x_story))),
            "cross_domain_personallm_to_opinionqa": float(accuracy_score(test_y, only_st.predict(test_x))),
        }  # fmt: skip
    report["stories_share"] = stories_share
    model = TraitMetricModel(encoder.alias, trait_head, pole_heads, report)
    save_metric_model(model, out)
    return model
