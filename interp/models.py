"""Model references and loading.

A reference (every ``--model/--base/--finetuned`` flag) is one of:
- an embedded alias such as ``smollm2-135m`` (fetched and converted on first use, see ``interp.embedded``);
- a local Hugging Face model directory with safetensors weights;
- a ``.gguf`` file (dequantised to fp32 in memory);
- a PEFT adapter directory (has ``adapter_config.json``), merged in fp32 onto ``base`` or its recorded base.
Pickled weights are never loaded; remote code runs only with ``trust_remote_code=True``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp import embedded
from interp.architectures import ArchitectureSpec, check_model_shape, spec_for_config, text_config
from interp.errors import UserInputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
QLORA_MARKER = "qlora.json"  # beside an adapter trained on a 4-bit base: merge it with the QLoRA procedure


@dataclass(frozen=True)
class ModelSource:
    """A resolved reference: what kind of thing it names and where it lies on disk."""

    ref: str
    kind: str  # "embedded" | "hf" | "gguf" | "adapter"
    path: Path
    base_ref: str | None = None  # adapters only


@dataclass
class LoadedModel:
    source: ModelSource
    model: nn.Module
    tokenizer: object
    spec: ArchitectureSpec
    n_layers: int
    d_mlp: int
    _fingerprint: str | None = field(default=None, repr=False)
    # 4-bit models: output projections dequantised at load time, before any forward (on CPU a forward
    # repacks 4-bit weights and dequantising afterwards silently corrupts them; STACK_NOTES.md).
    dequantized_output: dict[int, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's device (the first of several under a device map)."""
        return self.model.get_input_embeddings().weight.device

    def output_weight(self, layer: int) -> torch.Tensor:
        """[d_model, d_mlp] MLP output projection of ``layer``, dequantised for a 4-bit model."""
        if self.dequantized_output is not None:
            return self.dequantized_output[layer]
        return self.spec.output_weight(self.model, layer)

    def residual_write_weight(self, layer: int) -> torch.Tensor:
        """[d_model, d_mlp] what one unit of each neuron adds to the residual stream: ``output_weight`` scaled by
        the gain of a norm on the MLP output (Gemma 2/3), whose data-dependent 1/rms (one positive factor per
        layer and position) it leaves out; ``output_weight`` itself where the MLP output is added as it is."""
        weight = self.output_weight(layer)
        gain = self.spec.post_mlp_norm_scale(self.model, layer)
        return weight if gain is None else weight * gain.to(weight.device, weight.dtype)[:, None]

    def post_mlp_norm_eps(self, layer: int) -> float | None:
        """The epsilon of the norm on ``layer``'s MLP output (Gemma 2/3), or None where the output is added as is."""
        norm = self.spec.post_mlp_norm_module(self.model, layer)
        if norm is None:
            return None
        return float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))

    @property
    def d_model(self) -> int:
        """Width of the residual stream."""
        return int(text_config(self.model.config).hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.spec.unembedding(self.model).shape[0])

    @property
    def logit_soft_cap(self) -> float | None:
        """The final logits' soft cap (Gemma 2: 30), None where logits are linear in the final hidden state."""
        return getattr(text_config(self.model.config), "final_logit_softcapping", None) or None

    def logits_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., vocab] logits from final hidden states (after the final norm), soft-capped where the model does."""
        logits = self.model.get_output_embeddings()(hidden)
        cap = self.logit_soft_cap
        return torch.tanh(logits / cap) * cap if cap else logits

    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) over parameter names and bytes: identifies the exact weights."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint


def weights_fingerprint(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, param in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(param.dtype).encode())
        digest.update(param.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())  # no bytes copy
    return digest.hexdigest()[:16]


def resolve(ref: str, base_ref: str | None = None, fetch_log=print) -> ModelSource:
    """Resolve a reference without loading weights, or raise UserInputError with one clear sentence."""
    if ref in embedded.EMBEDDED_MODELS:
        return ModelSource(ref, "embedded", embedded.fetch(ref, log=fetch_log))
    path = Path(ref).expanduser()
    if not path.exists():
        known = ", ".join(embedded.EMBEDDED_MODELS)
        raise UserInputError(f"model {ref!r} is neither a known alias ({known}) nor an existing path.")
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserInputError(f"model file {ref!r} is not a .gguf file; pass a model directory instead.")
        with open(path, "rb") as handle:
            if handle.read(4) != b"GGUF":
                raise UserInputError(f"model file {ref!r} is not a valid GGUF file (bad magic bytes).")
        return ModelSource(ref, "gguf", path)
    if (path / "adapter_config.json").is_file():
        if not (path / "adapter_model.safetensors").is_file():
            raise UserInputError(f"adapter {ref!r} has no adapter_model.safetensors (pickled weights are not loaded).")
        recorded = _read_json(path / "adapter_config.json", ref).get("base_model_name_or_path")
        base = base_ref or recorded
        if not base:
            raise UserInputError(f"adapter {ref!r} records no base model; pass the base with --base.")
        return ModelSource(ref, "adapter", path, base_ref=base)
    if not (path / "config.json").is_file():
        raise UserInputError(f"model directory {ref!r} has no config.json or adapter_config.json.")
    if not any(path.glob("*.safetensors")):
        raise UserInputError(f"model directory {ref!r} has no .safetensors weights (pickled weights are not loaded).")
    return ModelSource(ref, "hf", path)


def _read_json(path: Path, ref: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{ref!r}: cannot read {path.name}: {exc}.") from None


def context_length(config) -> int | None:
    """The most positions the model was built for (learned position tables stop there; rotary models were
    trained up to it), or None where the config does not say."""
    config = text_config(config)
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_max_length(config, max_length: int, log=print) -> int:
    """``min(max_length, the model's context)``; says so (once, through ``log``) when the context is shorter."""
    context = context_length(config)
    if context is None or max_length <= context:
        return max_length
    log(f"note: --max-length {max_length} is longer than the model's context ({context} tokens); "
        f"sequences are cut to {context} tokens.")  # fmt: skip
    return context


def load_config(source: ModelSource, trust_remote_code: bool = False):
    """The transformers config of a resolved source (for an adapter: of its base)."""
    from transformers import AutoConfig

    if source.kind == "adapter":
        return load_config(resolve(source.base_ref), trust_remote_code)
    directory, where = _pretrained_location(source)
    try:
        return AutoConfig.from_pretrained(directory, **where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise UserInputError(f"cannot read the config of model {source.ref!r}: {_first_line(exc)}") from None


SIZE_MISMATCH = re.compile(
    r"size mismatch for (?P<name>\S+): copying a param with shape torch\.Size\(\[(?P<saved>[\d, ]*)\]\) from "
    r"checkpoint, the shape in current model is torch\.Size\(\[(?P<model>[\d, ]*)\]\)"
)


def _state_dict_mismatch(exc: BaseException) -> str:
    """torch's multi-line load_state_dict error as one clause: how many weights differ and the first of them."""
    found = list(SIZE_MISMATCH.finditer(str(exc)))
    if not found:
        return _first_line(exc)
    first = found[0]
    name = first["name"].removeprefix("base_model.model.").replace(".default.weight", "")
    saved, model = (first[key].replace(", ", "x") for key in ("saved", "model"))
    return (f"{len(found)} of its weights have other shapes than the base's layers, first {name} "
            f"(adapter {saved}, base {model}); it was trained on another model.")  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda was asked for but no CUDA device is available.")
    return torch.device(device)


NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")  # x86, then Arm


def native_bf16(capabilities: Mapping[str, Any] | None = None) -> bool:
    """Whether the CPU does bfloat16 arithmetic in hardware (``capabilities``: ``torch.cpu.get_capabilities()``
    by default). Elsewhere PyTorch emulates it and bf16 matrix products run several times slower than fp32 (on an
    AVX2-only EPYC, a LoRA step under bf16 autocast took about 30x the fp32 step: BENCHMARKS.md, "Fine-tuning")."""
    capabilities = torch.cpu.get_capabilities() if capabilities is None else capabilities
    return any(bool(capabilities.get(name)) for name in NATIVE_BF16_FEATURES)


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """Default: float32 on CPU (exact statistics), bfloat16 on GPUs (memory and speed)."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UserInputError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}.")
    return DTYPES[dtype]


def load(
    ref: str | ModelSource,
    *,
    base_ref: str | None = None,
    device: str = "auto",
    dtype: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    device_map: str | None = None,
    load_in_4bit: bool = False,
    tokenizer=None,
) -> LoadedModel:
    """Load a model reference for analysis (eval mode, no grad needed). The one path every command takes.

    By default the weights load in fp32 on the CPU (an adapter is merged there, in fp32), then move to
    ``device`` in ``dtype``. ``device_map`` (accelerate: auto | balanced | sequential) spreads the layers over
    the GPUs (and the CPU) and ``load_in_4bit`` loads NF4 weights (bitsandbytes); both load straight from the
    model directory in the target dtype, and on a 4-bit base an adapter stays unmerged (PEFT adds its low-rank
    update in the forward: merging into 4-bit weights is lossy and, on CPU, corrupts them). Every adapter is
    checked to fit its base. ``attn_implementation`` ("eager" | "sdpa") overrides transformers' default;
    TransformerLens always runs eager attention, so comparisons with it to 1e-4 need "eager" here too.
    ``tokenizer``: the source's tokenizer when the caller already loaded it (``load_tokenizer``), else loaded."""
    source = ref if isinstance(ref, ModelSource) else resolve(ref, base_ref)
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    placed = bool(device_map or load_in_4bit)
    base = _adapter_base(source) if source.kind == "adapter" else source
    qlora = source.kind == "adapter" and (source.path / QLORA_MARKER).is_file()
    if placed:
        _check_placement(source, base, qlora, device_map, load_in_4bit)
        kwargs: dict = {"dtype": torch_dtype, "device_map": device_map or {"": torch_device}}
        if load_in_4bit:
            kwargs["quantization_config"] = _nf4_config(torch_dtype)
        model = _from_pretrained(base, trust_remote_code, **kwargs)
    elif qlora:
        # QLoRA: merging into a 4-bit model (or dequantising one after an eval forward) silently corrupts
        # the weights on CPU; a freshly loaded 4-bit base, dequantised before the adapter is attached, is exact.
        model = _from_pretrained(base, False, quantization_config=_nf4_config(), dtype=torch.float32).dequantize()
    else:
        model = _from_pretrained(base, trust_remote_code, dtype=torch.float32)
    if source.kind == "adapter":
        model = _attach_adapter(model, source, merge=not load_in_4bit)
    if attn_implementation:
        model.set_attn_implementation(attn_implementation)
    if not placed:
        model = model.to(device=torch_device, dtype=torch_dtype)
    lm = _analysis_model(source, model, tokenizer or load_tokenizer(source))
    if load_in_4bit:
        lm.dequantized_output = _dequantized_outputs(model, lm.spec, lm.n_layers)
    return lm


def load_quantized(source: ModelSource) -> LoadedModel:
    """A fresh NF4 4-bit copy of a model directory (bitsandbytes), for QLoRA training, on the CPU."""
    if source.kind not in ("embedded", "hf"):
        raise UserInputError(f"--qlora needs a model directory or alias, not a {source.kind} ({source.ref!r}).")
    model = _from_pretrained(source, False, quantization_config=_nf4_config(), dtype=torch.float32)
    spec = spec_for_config(model.config)
    n_layers, d_mlp = len(spec.layers(model)), spec.d_mlp(model.config)
    return LoadedModel(source, model, load_tokenizer(source), spec, n_layers, d_mlp)


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def _adapter_base(source: ModelSource) -> ModelSource:
    base = resolve(source.base_ref)
    if base.kind == "adapter":
        raise UserInputError(f"the base of adapter {source.ref!r} is itself an adapter; merge it first.")
    return base


def _check_placement(source: ModelSource, base: ModelSource, qlora: bool, device_map, load_in_4bit: bool) -> None:
    """What a device map or NF4 loading cannot take, refused before any weight loads."""
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise UserInputError(f"--device-map must be one of {', '.join(DEVICE_MAPS)}, not {device_map!r}.")
    if qlora and not load_in_4bit:
        raise UserInputError(f"{source.ref!r} is a QLoRA adapter: merge it first (interp merge) to use --device-map.")
    if base.kind == "gguf" and load_in_4bit:
        raise UserInputError(f"--load-in-4bit needs a model directory, not a .gguf ({base.ref!r}).")


def _pretrained_location(source: ModelSource) -> tuple[Path, dict]:
    """Where transformers finds a resolved source's files: (directory, extra ``from_pretrained`` arguments);
    the one place that tells a .gguf file from a model directory."""
    if source.kind == "gguf":
        return source.path.parent, {"gguf_file": source.path.name}
    return source.path, {}


def _from_pretrained(source: ModelSource, trust_remote_code: bool, **kwargs):
    """transformers' model of a directory or .gguf source, safetensors weights only; any failure is bad input
    (a user-supplied model can fail to load in many ways)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    directory, where = _pretrained_location(source)
    if not where:  # a directory: never pickled weights
        where = {"use_safetensors": True, "trust_remote_code": trust_remote_code}
    try:
        return AutoModelForCausalLM.from_pretrained(directory, **where, **kwargs)
    except Exception as exc:
        raise UserInputError(f"cannot load model {source.ref!r}: {_first_line(exc)}") from None


def _attach_adapter(model, source: ModelSource, merge: bool):
    """``model`` with the adapter of ``source`` merged in (``merge``) or attached unmerged in its own module tree
    (hooks and module paths still fit); refused unless the adapter's saved weights are exactly its modules."""
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors import safe_open

    try:
        attached = PeftModel.from_pretrained(model, source.path)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserInputError(
            f"adapter {source.ref!r} does not fit base {source.base_ref!r}: {_state_dict_mismatch(exc)}"
        ) from None
    with safe_open(source.path / "adapter_model.safetensors", "pt") as saved:
        saved_keys = set(saved.keys())
    expected_keys = set(get_peft_model_state_dict(attached))
    if saved_keys != expected_keys:
        missing = len(expected_keys - saved_keys)
        raise UserInputError(
            f"adapter {source.ref!r} does not fit base {source.base_ref!r}: {missing} of its modules are missing "
            "(it was trained on a model of another shape)."
        )
    return attached.merge_and_unload() if merge else attached.base_model.model


def _analysis_model(source: ModelSource, model, tokenizer) -> LoadedModel:
    """Shape-checked, eval-mode, gradient-free LoadedModel with a padding token."""
    spec = spec_for_config(model.config)
    n_layers, d_mlp = check_model_shape(model, spec)
    model.eval().requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(source, model, tokenizer, spec, n_layers, d_mlp)


def _dequantized_outputs(model, spec, n_layers: int) -> dict[int, torch.Tensor]:
    """Every layer's output projection dequantised from NF4 (plus an unmerged LoRA update on it, if any):
    [d_model, d_mlp], on the CPU. Called before any forward pass."""
    import bitsandbytes.functional as bnb

    outputs = {}
    for layer in range(n_layers):
        module = spec.site_module(model, layer)
        weight = module.weight
        full = bnb.dequantize_4bit(weight.data, weight.quant_state) if hasattr(weight, "quant_state") else weight
        full = full.float()
        for adapter in getattr(module, "active_adapters", []):
            if adapter in getattr(module, "lora_A", {}):
                full = full + module.get_delta_weight(adapter).float()
        outputs[layer] = (full.T if spec.site_weight_is_transposed else full).detach().cpu().clone()
    return outputs


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")


def load_tokenizer(source: ModelSource):
    """The tokenizer of a resolved source without loading its weights."""
    from transformers import AutoTokenizer

    if source.kind == "adapter":
        if (source.path / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(source.path)
        return load_tokenizer(resolve(source.base_ref))
    if source.kind == "hf" and not any((source.path / name).is_file() for name in TOKENIZER_FILES):
        raise UserInputError(
            f"model {source.ref!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
            "save its tokenizer beside the weights (tokenizer.save_pretrained)."
        )
    directory, where = _pretrained_location(source)
    try:
        return AutoTokenizer.from_pretrained(directory, **where)
    except (OSError, ValueError, KeyError) as exc:
        raise UserInputError(f"cannot load the tokenizer of model {source.ref!r}: {_first_line(exc)}") from None


def _nf4_config(compute_dtype: torch.dtype = torch.float32):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)


def check_compatible(a: LoadedModel, b: LoadedModel) -> None:
    """Two loaded models must share family, shape and vocabulary to see the same tokens and neurons."""
    check_compatible_configs(a.model.config, b.model.config, a.tokenizer, b.tokenizer, a.source.ref, b.source.ref)


def check_compatible_configs(config_a, config_b, tokenizer_a, tokenizer_b, ref_a: str, ref_b: str) -> None:
    """Like ``check_compatible``, from configs and tokenizers alone (before loading weights)."""
    spec_a, spec_b = spec_for_config(config_a), spec_for_config(config_b)
    if spec_a.family != spec_b.family:
        raise UserInputError(f"{ref_a!r} is a {spec_a.family} model but {ref_b!r} is a {spec_b.family} model.")

    def shape(config, spec) -> tuple[int, int, int]:
        config = text_config(config)
        layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0)
        width = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
        return int(layers), int(width), spec.d_mlp(config)

    if shape(config_a, spec_a) != shape(config_b, spec_b):
        raise UserInputError(
            f"{ref_a!r} has (layers, residual width, MLP width) {shape(config_a, spec_a)} but {ref_b!r} has "
            f"{shape(config_b, spec_b)}; they cannot be compared neuron by neuron."
        )
    if tokenizer_a.get_vocab() != tokenizer_b.get_vocab():
        raise UserInputError(f"{ref_a!r} and {ref_b!r} have different vocabularies; they cannot see the same tokens.")
