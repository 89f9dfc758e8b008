"""What the causal tests read from the next-token distribution of many edited copies of one batch: the probability
mass on emoji-onset tokens and the KL divergence from the unedited model, at the measured positions.

Every copy needs its logits over the whole vocabulary (log Z, the log-partition function, sums over all of it);
the rest is kept small. For a linear float32 unembedding (logits = W h + b, ``h`` its input) the KL from the
reference distribution p to an edited q at one position is

    KL(p || q) = sum_v p_v (logit_p,v - logit_q,v) + log Z_q - log Z_p = m_p . (h_p - h_q) + log Z_q - log Z_p,

with m_p = sum_v p_v W_v computed once per reference position. Each copy then costs its logits' product and one
log-sum-exp instead of a log-softmax and a pass over three vocabulary-sized arrays (about a quarter less time on
the CPU; ``make bench``). The difference of the inputs is taken before the product, so the cancellation happens in
``h`` as it did per token before. A soft-capped (Gemma 2) or reduced-precision unembedding takes the direct sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.models import LoadedModel
from probes.metrics import kl_from_log_probs


@dataclass
class Reference:
    """The unedited model at a batch's measured positions (P of them): its onset mass and what every copy's KL
    needs (``mean_row`` or ``direct``; neither when no KL is taken)."""

    hidden: torch.Tensor  # [P, d_model] the unembedding's input
    log_z: torch.Tensor  # [P] float32
    mass: torch.Tensor  # [P] float64 on the CPU, the emoji-onset mass
    mean_row: torch.Tensor | None = None  # [P, d_model] float64, sum_v p_v W_v (linear float32 unembeddings)
    direct: tuple[torch.Tensor, torch.Tensor] | None = None  # [P, vocab] log-probabilities, probabilities (otherwise)


class NextTokenReader:
    """Reads the onset mass and the KL from unembedding inputs ``hidden`` [P, d_model] of ``lm``."""

    def __init__(self, lm: LoadedModel, onset_ids: list[int]) -> None:
        self.lm = lm
        self.onset_ids = torch.tensor(onset_ids, dtype=torch.long, device=lm.device)
        self.weight = lm.model.get_output_embeddings().weight  # [vocab, d_model]
        self.linear = lm.logit_soft_cap is None and self.weight.dtype == torch.float32

    def reference(self, hidden: torch.Tensor, for_kl: bool = True) -> Reference:
        """The unedited model's reading, one unembedding product; ``for_kl`` also keeps what later copies' KL
        needs (one more product with the unembedding for linear ones)."""
        logits, log_z, mass = self._read_logits(hidden)
        reference = Reference(hidden, log_z, mass)
        if for_kl and self.linear:
            probs = logits.sub_(log_z[:, None]).exp_()  # in place: the logits are not needed again
            reference.mean_row = (probs @ self.weight).double()
        elif for_kl:
            logp = logits.sub_(log_z[:, None])
            reference.direct = (logp, logp.exp())
        return reference

    def read(self, hidden: torch.Tensor, reference: Reference) -> tuple[torch.Tensor, torch.Tensor]:
        """(onset mass [P], KL(reference || this) [P]), float64 on the CPU; ``reference`` kept ``for_kl``."""
        logits, log_z, mass = self._read_logits(hidden)
        if reference.direct is not None:
            return mass, kl_from_log_probs(*reference.direct, logits.sub_(log_z[:, None])).double().cpu()
        change = (reference.hidden.double() - hidden.double()).mul_(reference.mean_row).sum(-1)
        return mass, (change + log_z.double() - reference.log_z.double()).cpu()

    def _read_logits(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(float32 logits [P, vocab], log Z [P], onset mass [P] float64 on the CPU)."""
        logits = self.lm.logits_from_hidden(hidden).float()
        log_z = torch.logsumexp(logits, -1)
        return logits, log_z, (logits[:, self.onset_ids] - log_z[:, None]).exp().sum(-1).double().cpu()
