"""Trait metric models: the logistic heads, trait-word masking, safetensors+JSON round trip, PersonaLLM data."""

from __future__ import annotations

import torch

from finetune.metric_training import save_metric_model
from probes.metric_models import POLES, LinearHead, TraitMetricModel, mask_trait_words, personallm_stories
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
