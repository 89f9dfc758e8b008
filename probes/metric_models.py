"""Trait metric models: how strongly a text shows each Big Five trait (the paper's TA metric).

Frozen sentence embeddings (``interp.encoder``, given to ``score``) with small logistic-regression heads
(fitted with scikit-learn, scored in torch):
- one 5-way head: which trait does a text express (trained on Opinion QA answers);
- per trait, a high-vs-low head (trained on Opinion QA answers of that trait and PersonaLLM stories).
PersonaLLM stories name their traits outright ("As an extroverted ..."), so trait words are masked in every
text before encoding; it is split by persona (persona_index 9-10 held out, both source models together).
Weights are saved as safetensors, everything else as JSON; ``interp metric-models train`` rebuilds them
(``finetune.metric_training``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import regex
import torch

from probes.traits import TRAITS

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


FIT_TOL = 1e-6  # LinearHead.fit's lbfgs gradient tolerance, tighter than scikit-learn's default 1e-4
FIT_MAX_ITER = 5000


@dataclass
class LinearHead:
    """Multinomial logistic regression on unit-norm embeddings: ``weight`` [classes, dim], ``bias`` [classes].

    Fitted with scikit-learn; scoring is plain torch (softmax over ``features @ weight.T + bias``), so loading
    and scoring need no scikit-learn objects."""

    labels: tuple[str, ...]
    weight: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def fit(
        cls, features: torch.Tensor, targets: list[int], labels: tuple[str, ...], l2: float = 1e-4,
        weights: torch.Tensor | None = None,
    ) -> LinearHead:  # fmt: skip
        """Minimise the (example-weighted) mean cross-entropy + l2 * |W|^2, bias unpenalised, with
        scikit-learn's ``LogisticRegression`` (lbfgs, deterministic). ``targets`` index ``labels``; every label
        must occur.

        scikit-learn minimises C * sum_i s_i CE_i + |w|^2 / 2; the example weights are normalised to sum 1.
        With 3+ classes it fits one row per class, as here, so C = 1 / (2 * l2). With 2 classes it fits one
        row w (P(labels[1]) = sigmoid(w.x + b)); it is stored as the two rows [-w/2, w/2] with biases
        [-b/2, b/2], whose softmax equals scikit-learn's ``predict_proba``. That is also the minimiser of the
        two-row objective above, whose penalty l2 * (|w/2|^2 + |w/2|^2) = l2/2 * |w|^2 gives C = 1 / l2."""
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        if sorted(set(targets)) != list(range(len(labels))):
            raise ValueError(f"LinearHead.fit needs examples of every label {labels}, got targets {set(targets)}")
        x = features.detach().cpu().double().numpy()
        sample_weight = np.ones(len(targets)) if weights is None else weights.detach().cpu().double().numpy()
        binary = len(labels) == 2
        regression = LogisticRegression(
            C=(1.0 if binary else 0.5) / l2, l1_ratio=0.0, solver="lbfgs", tol=FIT_TOL, max_iter=FIT_MAX_ITER
        )
        regression.fit(x, np.asarray(targets), sample_weight=sample_weight / sample_weight.sum())
        weight, bias = torch.from_numpy(regression.coef_), torch.from_numpy(regression.intercept_)
        if binary:
            weight, bias = torch.cat([-weight / 2, weight / 2]), torch.cat([-bias / 2, bias / 2])
        dtype = features.dtype if features.is_floating_point() else torch.get_default_dtype()
        return cls(labels, weight.to(dtype).contiguous(), bias.to(dtype).contiguous())

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

    def features(self, texts: list[str], encoder) -> torch.Tensor:
        """[N, dim] embeddings of the masked texts by ``encoder`` (``.encode(texts) -> [N, dim]``, e.g.
        ``interp.encoder.SentenceEncoder(self.encoder)``)."""
        return encoder.encode([mask_trait_words(t) for t in texts])

    def score(self, texts: list[str], encoder) -> list[dict]:
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

    def tensors(self) -> dict[str, torch.Tensor]:
        """The heads' weights under the names heads.safetensors uses."""
        tensors = {"trait.weight": self.trait_head.weight, "trait.bias": self.trait_head.bias}
        for trait, head in self.pole_heads.items():
            tensors[f"pole.{trait}.weight"], tensors[f"pole.{trait}.bias"] = head.weight, head.bias
        return {name: tensor.contiguous() for name, tensor in tensors.items()}

    def metadata(self) -> dict:
        """Everything but the weights, as metric_model.json holds it."""
        return {"encoder": self.encoder, "trait_labels": list(self.trait_head.labels), "pole_labels": list(POLES),
                "report": self.report}  # fmt: skip

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
