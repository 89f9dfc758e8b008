"""The onset mass and KL read from unembedding inputs equal the direct log-softmax computation."""

from __future__ import annotations

import pytest
import torch

from interp import models
from interp.next_token import NextTokenReader
from probes.emoji_tokens import emoji_onset_ids
from probes.metrics import kl_from_log_probs


def _direct(lm, hidden: torch.Tensor, reference: torch.Tensor, onset_ids: list[int]):
    """(onset mass, KL(reference || hidden)) in float64 from full log-softmaxes, the definition."""
    logp = torch.log_softmax(lm.logits_from_hidden(hidden).double(), -1)
    ref_logp = torch.log_softmax(lm.logits_from_hidden(reference).double(), -1)
    return logp[:, onset_ids].exp().sum(-1), kl_from_log_probs(ref_logp, ref_logp.exp(), logp)


@pytest.mark.parametrize("case", ["linear", "soft-capped", "bfloat16"])
def test_reader_equals_the_log_softmax_definition(tiny_gemma3_dir, case):
    """Edits of several sizes (KL from 1e-6 to about 1), read together in products of 5 rows (so products straddle
    copies): the identity through the unembedding's input (linear float32 unembeddings) and the direct sum
    (otherwise) agree with float64 log-softmaxes to float32 rounding; so do the copies' summed next-token NLLs."""
    lm = models.load(str(tiny_gemma3_dir), device="cpu", dtype="bfloat16" if case == "bfloat16" else "float32")
    if case == "soft-capped":
        lm.model.config.final_logit_softcapping = 3.0
    reader = NextTokenReader(lm, emoji_onset_ids(lm.tokenizer), logits_per_product=5 * lm.vocab_size)
    assert reader.linear == (case == "linear") and reader.rows_per_product == 5
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(12, lm.d_model, generator=generator).to(lm.model.dtype)
    kept = reader.reference(reference)
    onset = reader.onset_ids.tolist()
    scales = (1e-3, 1e-1, 1.0)
    copies = torch.stack([
        (reference.float() + scale * torch.randn(12, lm.d_model, generator=generator)).to(lm.model.dtype)
        for scale in scales
    ])  # fmt: skip
    masses, kls = reader.read(copies, kept)
    assert masses.shape == kls.shape == (3, 12) and masses.dtype == kls.dtype == torch.float64
    for scale, hidden, mass, kl in zip(scales, copies, masses, kls):
        expected_mass, expected_kl = _direct(lm, hidden, reference, onset)  # bfloat16: logits rounded in both
        torch.testing.assert_close(mass, expected_mass, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(kl, expected_kl, rtol=1e-3, atol=2e-6)
        assert float(expected_kl.max()) > scale**2 * 1e-3  # the edit moved the distribution
    targets = torch.randint(lm.vocab_size, (12,), generator=generator)
    expected_nll = [
        torch.nn.functional.cross_entropy(lm.logits_from_hidden(hidden).double(), targets, reduction="sum")
        for hidden in copies
    ]
    torch.testing.assert_close(reader.nll(copies, targets), torch.stack(expected_nll), rtol=1e-6, atol=0)
    same_mass, same_kl = reader.read(reference[None], kept)
    torch.testing.assert_close(same_mass[0], kept.mass, rtol=1e-5, atol=0)  # products of 5 rows, not of 12
    assert torch.equal(reader.reference(reference, for_kl=False).mass, kept.mass)
    assert float(same_kl.abs().max()) < 1e-5  # exactly 0 through the input; the direct sum rounds log Z apart
