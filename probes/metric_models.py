"""Trait metric models: how strongly a text shows each Big Five trait (the paper's TA metric).

Frozen sentence embeddings (``interp.encoder``, given to ``score``) with small logistic-regression heads:
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
