"""Atomic artifact writing: an interrupted run never leaves a truncated file or a half-written run directory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from interp.errors import UserInputError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on failure delete it."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are meant to be shared
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def check_output_dir(out: Path) -> None:
    """Fail early (before any model work) if ``out`` cannot be created or written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"output path {str(out)!r} exists and is not a directory.")
    parent = out if out.exists() else _first_existing_parent(out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserInputError(f"output directory {str(out)!r} is not writable.")


def _first_existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    if not path.is_dir():
        raise UserInputError(f"cannot create output directory under {str(path)!r}: it is a file.")
    return path


@contextmanager
def staged_run_dir(out: Path) -> Iterator[Path]:
    """Yield a hidden staging directory; on success move every file in it into ``out``.

    ``out`` is created only when the run succeeds. On an exception (or Ctrl-C) the staging
    directory is deleted and ``out`` is left exactly as it was.
    """
    out = Path(out)
    check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        yield staging
        out.mkdir(exist_ok=True)
        for item in sorted(staging.iterdir()):
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
