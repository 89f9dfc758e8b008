"""Capture on NDIF-hosted models through nnsight's remote execution: only reduced statistics come back.

With ``diff-neurons --backend nnsight --remote``, a side given as a Hub repo id (``owner/name``, neither a
local path nor an alias) runs on NDIF; every other side runs here. Here the hosted model is only its config
and tokenizer, read from the local Hugging Face cache (nothing contacts a hub), and the weightless
meta-device module tree nnsight builds from them to trace against.

Every request runs one batch. On the server, for each layer, it computes what ``NeuronStats.moments``
returns over the batch's counted positions (a count and four [d_mlp] float64 tensors: mean, M2, active
count, max), with that very function, and the batch's summed emoji-onset probability; only those are
saved. The [B, T, d_mlp] activations and the [B, T, vocab] logits stay on the server. The client folds the
moments with ``NeuronStats.add_moments`` in batch order, as ``interp.capture`` does for local backends, so
the statistics equal the local nnsight backend's on the same weights and hardware. One more request per
hosted side reads its emoji DLA ([layers, d_mlp], ``interp.dla.emoji_dla``) from the server's weights; it
runs first, so a missing key, an unreachable host or an undeployed model fails before any local work.

Requests are submitted over plain HTTP and polled (nnsight's non-blocking mode: ``POST /request``,
``GET /response/{id}``), so no websocket is needed. Our functions that run on the server (``interp`` is not
installed there) travel by value: nnsight ships their source with the request.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from interp import embedded
from interp.architectures import check_model_shape, spec_for_config
from interp.backends import NNsightBackend
from interp.capture import CaptureResult
from interp.dla import emoji_dla
from interp.endpoints import check_endpoint
from interp.errors import UserInputError
from interp.models import LoadedModel, ModelSource, load_tokenizer
from interp.stats import NeuronStats
from interp.tokens import TokenBatch

HOSTED = "hosted"  # ModelSource.kind of a side that runs on NDIF
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
DEADLINE_S = 1800.0  # default --remote-timeout: one request, from submission to result

KEY_HELP = (
    "set NDIF_API_KEY (a key comes with an account at https://login.ndif.us) or save it once with "
    "python -c \"from nnsight import CONFIG; CONFIG.set_default_api_key('KEY')\""
)
# The undecorated functions (torch.no_grad's wrapper does not survive nnsight's source-based serialization;
# the request body runs them under no_grad itself).
BATCH_MOMENTS = NeuronStats.moments.__wrapped__
EMOJI_DLA = emoji_dla.__wrapped__


def is_hosted_ref(ref: str) -> bool:
    """Whether ``ref`` names a Hub repo (``owner/name``) rather than an embedded alias or a local path."""
    if ref in embedded.EMBEDDED_MODELS or Path(ref).expanduser().exists():
        return False
    return HUB_ID.fullmatch(ref) is not None and ".." not in ref


def resolve(ref: str) -> ModelSource:
    """A hosted side: kind ``hosted``, path = its snapshot in the local Hugging Face cache (config, tokenizer)."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(ref, "config.json")
    snapshot = Path(config).parent if isinstance(config, str) else None
    if snapshot is None or not any((snapshot / name).is_file() for name in TOKENIZER_FILES):
        raise UserInputError(
            f"{ref!r} is no local path, so --remote runs it on NDIF as a Hub repo id, but its config and tokenizer "
            "are not in the local Hugging Face cache (interp never downloads at run time): fetch them once with "
            f"`hf download {ref} --include '*.json' --include 'tokenizer*'` or set HF_HUB_CACHE to a cache with them."
        )
    return ModelSource(ref, HOSTED, snapshot)


def check_sides(base: ModelSource, finetuned: ModelSource, generate: int) -> None:
    """What ``--remote`` can run: at least one hosted side; local adapters and sampling need local weights."""
    if HOSTED not in (base.kind, finetuned.kind):
        raise UserInputError(
            "--remote runs the sides given as Hugging Face repo ids (owner/name) on NDIF, but neither --base nor "
            "--finetuned is one (local paths and aliases run here)."
        )
    if finetuned.kind == "adapter" and is_hosted_ref(finetuned.base_ref or ""):
        raise UserInputError(
            f"adapter {finetuned.ref!r} sits on {finetuned.base_ref!r}, whose weights are on NDIF and not here "
            "(NDIF cannot apply a local adapter): merge it onto a local copy of the base (interp merge) and pass "
            "the merged directory, or capture the two sides in separate runs."
        )
    if generate and finetuned.kind == HOSTED:
        raise UserInputError("--generate samples from the fine-tuned model here, so it needs a local --finetuned.")


def credentials() -> tuple[str, str]:
    """(host, API key) from NDIF_HOST / NDIF_API_KEY or nnsight's config; UserInputError without a key."""
    from nnsight import CONFIG

    host = os.environ.get("NDIF_HOST") or CONFIG.API.HOST
    key = os.environ.get("NDIF_API_KEY") or CONFIG.API.APIKEY
    if not key:
        raise UserInputError(f"--remote needs an NDIF API key: {KEY_HELP}.")
    check_endpoint(host, "the NDIF host (NDIF_HOST)", carries_key=True)
    return host.rstrip("/"), key


@dataclass
class RemoteModel(LoadedModel):
    """A hosted model as seen from here: config, tokenizer, meta-device modules; weights and compute on NDIF.

    ``fingerprint()`` is ``ndif:<repo id>`` (the weights cannot be hashed here)."""

    wrapped: object = None  # nnsight.TransformersModel built on the meta device, keyed by the repo id
    dla: torch.Tensor | None = None  # [n_layers, d_mlp] float64 emoji DLA read on the server (``open_hosted``)


def open_hosted(
    source: ModelSource, onset_ids: list[int], trust_remote_code: bool = False, deadline_s: float = DEADLINE_S
) -> RemoteModel:
    """``load`` and the hosted side's emoji DLA of every layer, read from NDIF (its first request: fails fast)."""
    lm = load(source, trust_remote_code)
    lm.dla = RemoteNNsightBackend(lm, deadline_s=deadline_s).emoji_dla(list(range(lm.n_layers)), onset_ids)
    return lm


def load(source: ModelSource, trust_remote_code: bool = False) -> RemoteModel:
    """The stand-in of a hosted side, built from its cached config and tokenizer; contacts nobody."""
    import nnsight
    from nnsight.modeling import huggingface

    tokenizer = load_tokenizer(source)
    try:
        wrapped = nnsight.TransformersModel(
            str(source.path), task="text-generation", tokenizer=tokenizer, trust_remote_code=trust_remote_code
        )
    except Exception as exc:  # transformers fails in many ways on a config it cannot build
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserInputError(f"cannot build {source.ref!r} from its cached config: {reason}") from None
    # The request names the Hub id, not the cache directory; nnsight would canonicalise the id's spelling by
    # asking the Hub, which is a network call we never make, so the id is taken as given.
    wrapped.repo_id = source.ref
    huggingface._ID_CACHE.setdefault(source.ref, source.ref)
    model = wrapped._module
    spec = spec_for_config(model.config)
    n_layers, d_mlp = check_model_shape(model, spec)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return RemoteModel(source, model, tokenizer, spec, n_layers, d_mlp, f"ndif:{source.ref}", wrapped=wrapped)


class RemoteNNsightBackend:
    """Runs batches of a ``RemoteModel`` on NDIF; returns per-layer batch moments, never activations."""

    def __init__(
        self, lm: RemoteModel, host: str | None = None, api_key: str | None = None, deadline_s: float = DEADLINE_S
    ):
        """``deadline_s``: how long one request may take from submission to result, queueing included."""
        self.lm, self.deadline_s = lm, deadline_s
        self.host, self.api_key = (host, api_key) if host and api_key else credentials()
        self.sites = NNsightBackend(lm, wrapped=lm.wrapped)  # the trace target and its neuron sites
        self.model_key = lm.wrapped.to_model_key()

    def batch_moments(
        self, batch: TokenBatch, layers: list[int], threshold: float, onset_ids: list[int]
    ) -> tuple[dict[int, tuple], float]:
        """({layer: (n, mean, M2, active, max)}, summed emoji-onset probability) of one batch's counted
        positions, computed on NDIF; ({}, 0.0) without a request when the batch counts no position."""
        if not batch.n_positions:
            return {}, 0.0
        result = self._submit(lambda backend: self._moments_request(batch, layers, threshold, onset_ids, backend))
        return dict(zip(sorted(layers), result["moments"])), float(result["onset"])

    def emoji_dla(self, layers: list[int], onset_ids: list[int]) -> torch.Tensor:
        """[len(layers), d_mlp] float64 ``interp.dla.emoji_dla`` of the hosted weights, computed on NDIF."""
        return self._submit(lambda backend: self._dla_request(layers, onset_ids, backend))["dla"]

    def build_request(self, batch: TokenBatch, layers: list[int], threshold: float, onset_ids: list[int]) -> bytes:
        """The serialized moments request of one batch, exactly as it would be sent; sends nothing."""
        from nnsight.ndif import pull_env
        from nnsight.schema.config import CONFIG
        from nnsight.schema.request import RequestModel
        from nnsight.tracing.backend import Backend

        blobs = []

        class Recorder(Backend):
            def __call__(self, tracer) -> None:
                pull_env()
                blobs.append(RequestModel.serialize(tracer, CONFIG.API.COMPRESS))

        _ship_by_value()
        self._moments_request(batch, layers, threshold, onset_ids, Recorder())
        return blobs[0]

    def _moments_request(self, batch: TokenBatch, layers: list[int], threshold: float, onset_ids, backend) -> None:
        """The trace of one batch. Its body runs on the server; it saves only the moments and the onset sum."""
        import nnsight

        model = self.sites.wrapped
        sites = [self.sites.site(layer) for layer in sorted(layers)]  # nnsight needs execution order
        flat_index = torch.nonzero(batch.positions.reshape(-1)).squeeze(1)
        stand_in = NeuronStats.empty([], 0, threshold)  # carries the threshold (and the class) to the server
        batch_moments = BATCH_MOMENTS
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        with model.trace(inputs, backend=backend):
            with torch.no_grad():
                moments = []
                for site in sites:
                    acts = site.input
                    rows = acts.reshape(-1, acts.shape[-1]).index_select(0, flat_index.to(acts.device))
                    moments.append(batch_moments(stand_in, rows))
                logits = model.output.logits
                counted = logits.reshape(-1, logits.shape[-1]).index_select(0, flat_index.to(logits.device))
                onset = torch.softmax(counted.float(), dim=-1)[:, onset_ids].sum(-1).double().sum()
            nnsight.save(moments)
            nnsight.save(onset)

    def _dla_request(self, layers: list[int], onset_ids: list[int], backend) -> None:
        """A one-token trace whose body reads the emoji DLA from the server's weights."""
        import nnsight

        model = self.sites.wrapped
        shell = LoadedModel(None, None, None, self.lm.spec, self.lm.n_layers, self.lm.d_mlp)  # weights: server's
        emoji_dla_of = EMOJI_DLA
        token = self.lm.tokenizer.pad_token_id
        inputs = {"input_ids": torch.tensor([[token]]), "attention_mask": torch.ones(1, 1, dtype=torch.long)}
        with model.trace(inputs, backend=backend):
            with torch.no_grad():
                dla = emoji_dla_of(replace(shell, model=model._module), layers, onset_ids)
            nnsight.save(dla)

    def _submit(self, request: Callable[[object], None]) -> dict:
        """Send one request (``request(backend)`` runs its trace) and wait for its saved values."""
        import httpx
        from nnsight.intervention.backends.remote import RemoteBackend, RemoteError
        from pydantic import ValidationError

        _ship_by_value()
        backend = RemoteBackend(
            self.model_key, host=self.host, api_key=self.api_key, env=self.sites.wrapped._remoteable_get_env(),
            blocking=False,
        )  # fmt: skip
        backend.display.enabled = False  # progress is ours (stderr), stdout stays clean
        try:
            started = time.monotonic()
            request(backend)  # leaving the trace submits it
            delay = 0.02
            while (result := backend()) is None:  # polls GET /response/{id}
                if time.monotonic() - started > self.deadline_s:
                    raise UserInputError(
                        f"NDIF at {self.host} did not finish a request within {self.deadline_s:g} s "
                        "(--remote-timeout); it may be queued behind other users' jobs."
                    )
                time.sleep(min(delay, max(0.0, self.deadline_s - (time.monotonic() - started)) + 0.01))
                delay = min(delay * 2, 2.0)
        except (RemoteError, httpx.HTTPError, ValidationError) as exc:
            raise UserInputError(describe_failure(self.host, exc)) from None
        return result


def describe_failure(host: str, exc: Exception) -> str:
    """One sentence naming the host and the cause of a failed NDIF request."""
    import httpx

    cause = exc.__cause__ if isinstance(exc.__cause__, httpx.HTTPError) else exc
    text = str(exc).removeprefix("Failed to send request: ").strip().splitlines()
    detail = (text[0] if text else type(exc).__name__).rstrip(".")
    if isinstance(cause, httpx.HTTPStatusError):
        return f"NDIF at {host} answered HTTP {cause.response.status_code}: {detail}."
    if isinstance(cause, httpx.HTTPError):
        return f"cannot reach NDIF at {host}: {detail}."
    if isinstance(exc, ValueError):
        return f"NDIF at {host} sent an answer that is not an nnsight response: {detail}."
    return f"NDIF at {host} could not run the request: {detail}."


def _ship_by_value() -> None:
    """Ship ``interp``'s code with each request: it is not installed on the server."""
    import nnsight

    nnsight.register("interp")


def capture_stats(
    backend: RemoteNNsightBackend,
    batches: list[TokenBatch],
    layers: list[int],
    threshold: float,
    onset_ids: list[int],
    progress=None,
) -> CaptureResult:
    """``interp.capture.capture_stats`` for a hosted model: one request per batch, folded in batch order."""
    stats = NeuronStats.empty(layers, backend.lm.d_mlp, threshold)
    onset_sum = 0.0
    start = time.perf_counter()
    for batch in progress(batches) if progress else batches:
        moments, onset = backend.batch_moments(batch, layers, threshold, onset_ids)
        for layer, values in moments.items():
            stats.add_moments(stats.slot(layer), *values)
        onset_sum += onset
    processed = sum(int(batch.attention_mask.sum()) for batch in batches)
    counted = int(stats.count[0]) if layers else 0
    return CaptureResult(stats, counted, processed, onset_sum, time.perf_counter() - start)
