"""A sentence encoder for the trait metric models: all-MiniLM-L6-v2 (embedded alias ``minilm-l6``).

Mean pooling over non-pad tokens, then L2 normalisation (the model's own sentence-transformers recipe),
computed with plain transformers: no sentence-transformers install, no hub access.
"""

from __future__ import annotations

import torch

from interp import embedded
from interp.progress import track

ENCODER = "minilm-l6"


class SentenceEncoder:
    def __init__(self, alias: str = ENCODER, max_length: int = 256, log=print):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = embedded.fetch(alias, log=log)
        self.alias = alias
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, use_safetensors=True).eval().requires_grad_(False)
        self.max_length = max_length

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 32, show_progress: bool = False) -> torch.Tensor:
        """[len(texts), dim] float32 unit vectors."""
        chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
        out = []
        for chunk in track(chunks, "encoding texts", enabled=show_progress):
            batch = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.dim)
