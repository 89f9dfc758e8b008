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


# Logits per unembedding product (128 MB of float32): several copies' rows go through one product, since on a CPU a
# product with a few dozen rows runs at about half the speed of one with a few hundred (BENCHMARKS.md, causal stages).
LOGITS_PER_PRODUCT = 1 << 25


class NextTokenReader:
    """Reads the onset mass and the KL from unembedding inputs ``hidden`` [..., P, d_model] of ``lm``."""

    def __init__(self, lm: LoadedModel, onset_ids: list[int], logits_per_product: int = LOGITS_PER_PRODUCT) -> None:
        self.lm = lm
        self.onset_ids = torch.tensor(onset_ids, dtype=torch.long, device=lm.device)
        self.weight = lm.model.get_output_embeddings().weight  # [vocab, d_model]
        self.linear = lm.logit_soft_cap is None and self.weight.dtype == torch.float32
        self.rows_per_product = max(1, logits_per_product // self.weight.shape[0])
        self._logits: torch.Tensor | None = None  # the reused [rows_per_product, vocab] buffer, made on first use

    def reference(self, hidden: torch.Tensor, for_kl: bool = True) -> Reference:
        """The unedited model's reading of ``hidden`` [P, d_model], one unembedding product; ``for_kl`` also keeps
        what later copies' KL needs (one more product with the unembedding for linear ones)."""
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
        """(onset mass [C, P], KL(reference || copy) [C, P]), float64 on the CPU, of C copies' inputs ``hidden``
        [C, P, d_model] at the reference's P positions; ``reference`` kept ``for_kl``."""
        copies, positions = hidden.shape[:2]
        flat = hidden.reshape(copies * positions, -1)
        log_z = torch.empty(len(flat), device=flat.device)
        mass = torch.empty(len(flat), dtype=torch.float64)
        kl = torch.empty(len(flat), dtype=torch.float64) if reference.direct is not None else None
        for begin in range(0, len(flat), self.rows_per_product):
            rows = slice(begin, begin + self.rows_per_product)
            if reference.direct is None:
                log_z[rows], mass[rows], _ = self._read_in_place(flat[rows])
                continue
            logits, log_z[rows], mass[rows] = self._read_logits(flat[rows])
            at = torch.arange(len(flat))[rows].remainder_(positions).to(flat.device)  # each row's position
            logp, probs = (values[at] for values in reference.direct)
            kl[rows] = kl_from_log_probs(logp, probs, logits.sub_(log_z[rows, None])).double().cpu()
        if reference.direct is None:
            change = (reference.hidden.double() - hidden.double()).mul_(reference.mean_row).sum(-1).view(-1)
            kl = (change + log_z.double() - reference.log_z.double().repeat(copies)).cpu()
        return mass.view(copies, positions), kl.view(copies, positions)

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """[C] summed negative log-likelihood of the next tokens ``targets`` [P] under each of C copies' inputs
        ``hidden`` [C, P, d_model], float64 on the CPU."""
        copies, positions = hidden.shape[:2]
        flat = hidden.reshape(copies * positions, -1)
        wanted = targets.to(flat.device).repeat(copies)
        losses = torch.empty(len(flat), dtype=torch.float64)
        for begin in range(0, len(flat), self.rows_per_product):
            rows = slice(begin, begin + self.rows_per_product)
            if self.linear:
                log_z, _, picked = self._read_in_place(flat[rows], wanted[rows])
            else:
                logits, log_z, _ = self._read_logits(flat[rows])
                picked = logits.gather(1, wanted[rows, None]).squeeze(1)
            losses[rows] = (log_z.double() - picked.double()).cpu()
        return losses.view(copies, positions).sum(-1)

    def _read_in_place(self, hidden: torch.Tensor, picked: torch.Tensor | None = None):
        """(log Z [P], onset mass [P] float64 on the CPU, the logits of the tokens ``picked`` [P] or None) through a
        linear float32 unembedding, its logits written into one reused buffer and exponentiated there (a fresh
        100 MB tensor per product costs page faults)."""
        if self._logits is None:
            self._logits = hidden.new_empty((self.rows_per_product, self.weight.shape[0]))
        logits = self._logits[: len(hidden)]
        bias = self.lm.model.get_output_embeddings().bias
        if bias is None:
            torch.mm(hidden, self.weight.T, out=logits)
        else:
            torch.addmm(bias, hidden, self.weight.T, out=logits)
        chosen = logits.gather(1, picked[:, None]).squeeze(1) if picked is not None else None
        return (*log_z_and_mass_in_place(logits, self.onset_ids), chosen)

    def _read_logits(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(float32 logits [P, vocab], log Z [P], onset mass [P] float64 on the CPU)."""
        logits = self.lm.logits_from_hidden(hidden).float()
        log_z = torch.logsumexp(logits, -1)
        return logits, log_z, _mass(logits[:, self.onset_ids], log_z)


def log_z_and_mass_in_place(logits: torch.Tensor, onset_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log Z [P], probability mass on the tokens ``onset_ids`` [K] [P] float64 on the CPU) of float32 ``logits``
    [P, vocab], which it uses up (left holding exp(logit - max): no second vocabulary-sized array, unlike a
    softmax)."""
    onset = logits[:, onset_ids]
    top = logits.amax(-1, keepdim=True)
    log_z = logits.sub_(top).exp_().sum(-1).log_().add_(top.squeeze(-1))
    return log_z, _mass(onset, log_z)


def _mass(onset_logits: torch.Tensor, log_z: torch.Tensor) -> torch.Tensor:
    """[P] probability mass of the onset tokens, float64 on the CPU, from their logits [P, K] and log Z [P]."""
    return (onset_logits - log_z[:, None]).exp().sum(-1).double().cpu()
