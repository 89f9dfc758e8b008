"""Trait metric models: the logistic heads, trait-word masking, safetensors+JSON round trip, PersonaLLM data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from finetune.metric_training import save_metric_model
from probes.metric_models import (
    FIT_MAX_ITER,
    FIT_TOL,
    POLES,
    LinearHead,
    TraitMetricModel,
    mask_trait_words,
    personallm_stories,
)
from probes.traits import TRAITS


def test_linear_head_separates_separable_data():
    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(3, 16, generator=generator), dim=-1)
    labels = [i % 3 for i in range(90)]
    features = torch.nn.functional.normalize(centres[labels] + 0.1 * torch.randn(90, 16, generator=generator), dim=-1)
    head = LinearHead.fit(features, labels, ("a", "b", "c"))
    assert head.predict(features) == [("a", "b", "c")[i] for i in labels]
    assert torch.allclose(head.probabilities(features).sum(-1), torch.ones(90))
    weighted = LinearHead.fit(
        features, labels, ("a", "b", "c"), weights=torch.tensor([10.0 if y == 0 else 1.0 for y in labels])
    )
    assert not torch.equal(weighted.weight, head.weight)  # example weights change the fit


def _noisy_classes(classes: int, seed: int, n: int = 120, dim: int = 12) -> tuple[torch.Tensor, list[int]]:
    """Unit-norm float32 features (as the encoder gives) of overlapping classes (not separable: moderate weights)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator)
    labels = [i % classes for i in range(n)]
    noise = torch.randn(n, dim, generator=generator)
    return torch.nn.functional.normalize(0.5 * centres[labels] + noise, dim=-1), labels


@pytest.mark.parametrize("classes", [5, 2])
def test_linear_head_matches_scikit_learn(classes):
    features, labels = _noisy_classes(classes, seed=classes)
    names = TRAITS if classes == 5 else POLES
    weights = torch.rand(len(labels), generator=torch.Generator().manual_seed(7)) + 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning, no deprecation warning
        head = LinearHead.fit(features, labels, names, l2=1e-3, weights=weights)
        unweighted = LinearHead.fit(features, labels, names, l2=1e-3)
        direct = LogisticRegression(C=(1.0 if classes == 2 else 0.5) / 1e-3, tol=FIT_TOL, max_iter=FIT_MAX_ITER)
        direct.fit(features.double().numpy(), labels, sample_weight=(weights / weights.sum()).double().numpy())
    assert head.weight.shape == (classes, 12) and head.bias.shape == (classes,)
    assert head.weight.dtype == head.bias.dtype == torch.float32  # saved as before, scored in torch
    expected = direct.predict_proba(features.double().numpy())
    np.testing.assert_allclose(head.probabilities(features).numpy(), expected, rtol=0, atol=1e-6)
    assert head.predict(features) == [names[i] for i in direct.predict(features.double().numpy())]
    # example weights matter, and only relative to each other
    assert np.abs(unweighted.probabilities(features).numpy() - expected).max() > 1e-3
    rescaled = LinearHead.fit(features, labels, names, l2=1e-3, weights=weights * 37)
    torch.testing.assert_close(rescaled.probabilities(features), head.probabilities(features), rtol=0, atol=1e-6)


@pytest.mark.parametrize("classes", [5, 2])
def test_linear_head_minimises_the_documented_objective(classes):
    """sum_i (w_i / sum w) CE_i + l2 * |W|^2 over the stored rows, bias unpenalised: gradient ~ 0 at the fit."""
    features, labels = _noisy_classes(classes, seed=10 + classes)
    features, weights, l2 = features.double(), torch.linspace(0.5, 2.0, len(labels), dtype=torch.float64), 1e-3
    head = LinearHead.fit(features, labels, tuple("abcde"[:classes]), l2=l2, weights=weights)
    weight, bias = head.weight.clone().requires_grad_(), head.bias.clone().requires_grad_()
    per_example = torch.nn.functional.cross_entropy(features @ weight.T + bias, torch.tensor(labels), reduction="none")
    loss = (weights / weights.sum() * per_example).sum() + l2 * weight.pow(2).sum()
    loss.backward()
    assert weight.grad.abs().max() < 1e-5 and bias.grad.abs().max() < 1e-5
    assert head.weight.norm() > 0.5  # not a trivially small fit


def test_linear_head_needs_every_label():
    features, labels = _noisy_classes(2, seed=0)
    with pytest.raises(ValueError, match="every label"):
        LinearHead.fit(features, [0] * len(labels), POLES)


def test_trait_words_are_masked():
    text = "As an extroverted, agreeable and conscientious person, I stayed emotionally stable and open-minded."
    masked = mask_trait_words(text)
    for word in ("extroverted", "agreeable", "conscientious", "emotionally stable", "open-minded"):
        assert word not in masked.lower()
    assert masked.count("[trait]") == 5
    assert mask_trait_words("I went to the park.") == "I went to the park."


def test_save_and_load_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(1)

    def head(labels):
        return LinearHead(
            labels, torch.randn(len(labels), 8, generator=generator), torch.randn(len(labels), generator=generator)
        )

    model = TraitMetricModel("minilm-l6", head(TRAITS), {t: head(POLES) for t in TRAITS}, {"note": "x"})
    save_metric_model(model, tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"heads.safetensors", "metric_model.json"}
    loaded = TraitMetricModel.load(tmp_path / "m")
    features = torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    assert torch.equal(loaded.trait_head.probabilities(features), model.trait_head.probabilities(features))
    for trait in TRAITS:
        assert torch.equal(loaded.pole_heads[trait].weight, model.pole_heads[trait].weight)
    assert loaded.report == {"note": "x"}


def test_personallm_split_is_by_persona():
    stories = personallm_stories()
    assert len(stories) == 640
    assert sum(s.held_out for s in stories) == 128  # personas 9 and 10 of each of 32 types, both models
    for trait in TRAITS:
        assert sum(s.poles[trait] for s in stories) == 320
