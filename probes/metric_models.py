"""Trait metric models: how strongly a text shows each Big Five trait (the paper's TA metric).

Frozen sentence embeddings (``probes.encoder``) with small logistic-regression heads:
- one 5-way head: which trait does a text express (trained on Opinion QA answers);
- per trait, a high-vs-low head (trained on Opinion QA answers of that trait and PersonaLLM stories).
PersonaLLM stories name their traits outright ("As an extroverted ..."), so trait words are masked in every
text before encoding; it is split by persona (persona_index 9-10 held out, both source models together).
Weights are saved as safetensors, everything else as JSON; ``interp metric-models train`` rebuilds them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import regex
import torch

from finetune.dataset import TRAITS, load_rows, select
from interp import artifacts

POLES = ("low", "high")
TRAIT_WORDS = regex.compile(
    r"\b(extra|extro|intro)vert(ed|s)?\b|\boutgoing\b|\b(dis)?agreeable(ness)?\b|\bantagonistic\b"
    r"|\b(un)?conscientious(ness)?\b|\bneurotic(ism)?\b|\bemotionally stable\b|\bemotional stability\b"
    r"|\bopen[- ]minded(ness)?\b|\bclosed[- ]minded(ness)?\b|\bopen to (new )?experiences?\b|\bpersonality\b",
    regex.IGNORECASE,
)


def mask_trait_words(text: str) -> str:
    """Replace explicit trait vocabulary by a neutral placeholder, so classifiers learn style, not keywords."""
    return TRAIT_WORDS.sub("[trait]", text)


@dataclass
class LinearHead:
    """Multinomial logistic regression on unit-norm embeddings: ``weight`` [classes, dim], ``bias`` [classes]."""

    labels: tuple[str, ...]
    weight: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def fit(
        cls, features: torch.Tensor, targets: list[int], labels: tuple[str, ...], l2: float = 1e-4,
        weights: torch.Tensor | None = None,
    ) -> LinearHead:  # fmt: skip
        """Full-batch L-BFGS on the (example-weighted) mean cross-entropy + l2 * |W|^2 (deterministic)."""
        y = torch.tensor(targets)
        weights = torch.ones(len(targets)) if weights is None else weights
        weights = weights / weights.sum()
        weight = torch.zeros(len(labels), features.shape[1], requires_grad=True)
        bias = torch.zeros(len(labels), requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            per_example = torch.nn.functional.cross_entropy(features @ weight.T + bias, y, reduction="none")
            loss = (weights * per_example).sum() + l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return cls(labels, weight.detach(), bias.detach())

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(features @ self.weight.T + self.bias, dim=-1)

    def predict(self, features: torch.Tensor) -> list[str]:
        return [self.labels[i] for i in self.probabilities(features).argmax(-1).tolist()]


@dataclass
class TraitMetricModel:
    encoder: str
    trait_head: LinearHead
    pole_heads: dict[str, LinearHead]
    report: dict = field(default_factory=dict)

    def features(self, texts: list[str], encoder=None) -> torch.Tensor:
        """[N, dim] embeddings of the masked texts; the encoder is loaded once per model object."""
        from probes.encoder import SentenceEncoder

        if encoder is None:
            if self.__dict__.get("_encoder") is None:
                self.__dict__["_encoder"] = SentenceEncoder(self.encoder)
            encoder = self.__dict__["_encoder"]
        return encoder.encode([mask_trait_words(t) for t in texts])

    def score(self, texts: list[str], encoder=None) -> list[dict]:
        """Per text: the 5-way trait probabilities and each trait's probability of the high pole."""
        x = self.features(texts, encoder)
        traits = self.trait_head.probabilities(x)
        highs = {t: head.probabilities(x)[:, head.labels.index("high")] for t, head in self.pole_heads.items()}
        return [
            {
                "trait_probabilities": dict(zip(self.trait_head.labels, traits[i].tolist())),
                "high_pole_probability": {t: float(p[i]) for t, p in highs.items()},
            }
            for i in range(len(texts))
        ]

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"trait.weight": self.trait_head.weight, "trait.bias": self.trait_head.bias}
        for trait, head in self.pole_heads.items():
            tensors[f"pole.{trait}.weight"], tensors[f"pole.{trait}.bias"] = head.weight, head.bias
        with artifacts.atomic_path(directory / "heads.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        meta = {"encoder": self.encoder, "trait_labels": list(self.trait_head.labels), "pole_labels": list(POLES),
                "report": self.report}  # fmt: skip
        artifacts.write_json(directory / "metric_model.json", meta)

    @classmethod
    def load(cls, directory: Path) -> TraitMetricModel:
        from safetensors.torch import load_file

        meta = json.loads((Path(directory) / "metric_model.json").read_text(encoding="utf-8"))
        tensors = load_file(str(Path(directory) / "heads.safetensors"))
        trait_head = LinearHead(tuple(meta["trait_labels"]), tensors["trait.weight"], tensors["trait.bias"])
        poles = {
            t: LinearHead(tuple(meta["pole_labels"]), tensors[f"pole.{t}.weight"], tensors[f"pole.{t}.bias"])
            for t in TRAITS
        }
        return cls(meta["encoder"], trait_head, poles, meta.get("report", {}))


@dataclass(frozen=True)
class Story:
    text: str
    poles: dict[str, int]  # trait -> 1 high, 0 low
    held_out: bool


def personallm_stories() -> list[Story]:
    """The 640 PersonaLLM stories (MIT); personas 9-10 of each type held out (both source models)."""
    path = resources.files("probes").joinpath("data/personallm/stories.csv")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [Story(row["text"], {t: int(row[t]) for t in TRAITS}, int(row["persona_index"]) >= 9) for row in rows]


def _accuracy(predicted: list[str], truth: list[str]) -> float:
    return sum(p == t for p, t in zip(predicted, truth)) / len(truth) if truth else float("nan")


def _confusion(predicted: list[str], truth: list[str], labels: tuple[str, ...]) -> list[list[int]]:
    matrix = [[0] * len(labels) for _ in labels]
    for p, t in zip(predicted, truth):
        matrix[labels.index(t)][labels.index(p)] += 1
    return matrix


STORIES_SHARE = 0.02  # share of the high/low heads' training weight given to PersonaLLM stories


def default_location() -> Path:
    from interp.embedded import home_dir

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
    from probes.encoder import SentenceEncoder

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
            "accuracy": _accuracy(predicted, truth),
            "labels": list(TRAITS),
            "confusion": _confusion(predicted, truth, TRAITS),
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
        mix = torch.cat([torch.full((len(oq_y),), (1 - stories_share) / len(oq_y)),
                         torch.full((len(st_y),), stories_share / len(st_y))])  # fmt: skip
        both = LinearHead.fit(torch.cat([oq_x, st_x]), oq_y + st_y, POLES, weights=mix)
        only_oq = LinearHead.fit(oq_x, oq_y, POLES)
        only_st = LinearHead.fit(st_x, st_y, POLES)
        pole_heads[trait] = both
        report["high_low"][trait] = {
            "opinionqa_heldout_topics": _accuracy(both.predict(test_x), test_y),
            "personallm_heldout_personas": _accuracy(both.predict(held_x), held_y),
            "cross_domain_opinionqa_to_personallm": _accuracy(
                only_oq.predict(x_story), [POLES[s.poles[trait]] for s in stories]
            ),
            "cross_domain_personallm_to_opinionqa": _accuracy(only_st.predict(test_x), test_y),
        }  # fmt: skip
    report["stories_share"] = stories_share
    model = TraitMetricModel(encoder.alias, trait_head, pole_heads, report)
    model.save(out)
    return model
