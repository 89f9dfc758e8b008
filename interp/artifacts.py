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


def write_json(path: Path, data, indent: int | None = 2) -> None:
    """``data`` as JSON, atomically; ``indent=None`` writes one line (the C encoder: several times faster, for
    large machine-read files such as profiles.json)."""
    separators = (",", ":") if indent is None else None
    write_text(path, json.dumps(data, indent=indent, separators=separators, ensure_ascii=False) + "\n")


def check_output_dir(out: Path) -> None:
    """Fail early (before any model work) if ``out`` cannot be created or written.

    Permission bits are not enough (root passes every ``os.access`` check, /proc refuses anyway), so this
    creates and removes a hidden directory where the run will stage its files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"output path {str(out)!r} exists and is not a directory.")
    for directory in {_first_existing_parent(out), _first_existing_parent(out.parent)}:
        try:
            Path(tempfile.mkdtemp(dir=directory, prefix=".probe-")).rmdir()
        except OSError as exc:
            raise UserInputError(
                f"cannot write the output {str(out)!r} under {str(directory)!r}: {exc.strerror}."
            ) from None


def _first_existing_parent(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor (which must be a directory)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    if not path.is_dir():
        raise UserInputError(f"cannot create output directory under {str(path)!r}: it is a file.")
    return path


# Files that mark a directory as a run (or model) this toolkit wrote: only such a directory, or an empty one,
# is replaced by a new run.
RUN_FILES = frozenset({
    "summary.json", "neurons.csv", "ablation.json", "table.json", "explain.json", "planted.json", "train.json",
    "pipeline.json", "config.json", "report.html", "stats.safetensors", "steering.json", "persona_vector.safetensors",
    "lens.json",
})  # fmt: skip


def check_run_dir(out: Path) -> None:
    """``check_output_dir``, and refuse a non-empty ``out`` that holds none of our files: a run replaces its
    whole directory, which must never delete a folder of the user's own."""
    check_output_dir(out)
    out = Path(out)
    if out.is_dir():
        names = {path.name for path in out.iterdir()}
        if names and not names & RUN_FILES:
            raise UserInputError(
                f"output directory {str(out)!r} holds files this toolkit did not write, and a run replaces its "
                "whole directory; choose a new --out or empty it."
            )


@contextmanager
def staged_run_dir(out: Path) -> Iterator[Path]:
    """Yield a hidden staging directory; on success it replaces ``out`` as a whole.

    ``out`` appears (or changes) only when the run succeeds, with exactly the files this run wrote: nothing of an
    earlier run into the same directory is left. On an exception (or Ctrl-C) the staging directory is deleted
    and ``out`` is left exactly as it was; leftovers of a killed run are removed by the next one.
    """
    out = Path(out)
    check_run_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700; run directories are meant to be shared
        swap_in_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def swap_in_dir(staging: Path, final: Path) -> None:
    """Replace directory ``final`` by ``staging`` (two renames); a crash between them leaves ``final`` absent,
    never mixed, and the previous version at ``.NAME.old`` until the next swap removes it."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
