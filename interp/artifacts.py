"""Artifacts: written so that nothing is ever half there, read back with one sentence for a bad file.

Writing: a file appears whole or not at all (``atomic_path``, ``write_text``, ``write_json``: a temporary name,
fsync, one rename); a run directory appears whole or not at all and a rerun replaces it whole
(``staged_run_dir``). A full disk or an I/O error while writing is one sentence naming the output and the cause
(``OutputError``) and leaves what was there before; an output that is a symbolic link is written through (its
target changes, the link stays); runs writing into the same directory at once never remove each other's files.
Reading: ``read_json``, ``read_jsonl`` and ``read_tensors`` name the file that is missing, damaged (cut short,
not JSON or safetensors), foreign, or of an earlier format than its reader needs.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from safetensors import SafetensorError

from interp import textfiles
from interp.errors import OutputError, UserInputError

_UMASK = os.umask(0)
os.umask(_UMASK)


# --- writing files ----------------------------------------------------------------------------------------
def resolve_link(path: Path) -> Path:
    """``path``, or the path its symbolic link points to: outputs are written through links, never over them."""
    path = Path(path)
    if not path.is_symlink():
        return path
    target = Path(os.path.realpath(path))
    if target.is_symlink():
        raise UserInputError(f"output {str(path)!r} is a symbolic link that never reaches a file or folder (a loop).")
    return target


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (whose folder is created); on success rename it onto ``path``, on
    failure delete it and leave ``path`` as it was. An OS error while writing is an OutputError naming ``path``."""
    path = resolve_link(path)
    with _write_errors(path, "the file there is kept" if path.exists() else "nothing was written"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are meant to be shared
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` into ``path``, atomically and on disk (fsync) before the rename."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data, indent: int | None = 2) -> None:
    """``data`` as JSON, atomically; ``indent=None`` writes one line (the C encoder: several times faster, for
    large machine-read files such as profiles.json)."""
    separators = (",", ":") if indent is None else None
    write_text(path, json.dumps(data, indent=indent, separators=separators, ensure_ascii=False) + "\n")


@contextmanager
def _write_errors(target: Path, kept: str) -> Iterator[None]:
    """An OS error while writing ``target`` (a full disk, an I/O error) as an OutputError naming it and the cause;
    ``kept`` says what is left. Errors about other paths (reading a model) pass unchanged."""
    try:
        yield
    except OutputError:
        raise
    except Exception as exc:
        cause = _write_cause(exc, target.parent)
        if cause is None:
            raise
        raise OutputError(target, cause, kept) from None


def _write_cause(exc: Exception, folder: Path) -> str | None:
    """The cause of a failed write in or above ``folder`` in words, or None for an error that is not one."""
    if isinstance(exc, OSError):
        paths = [Path(os.fsdecode(name)) for name in (exc.filename, exc.filename2) if isinstance(name, str | bytes)]
        if any(not (_inside(path, folder) or _inside(folder, path)) for path in paths):
            return None
        return exc.strerror or str(exc)
    if isinstance(exc, SafetensorError) and "I/O error: " in str(exc):  # its writer's OS errors
        return str(exc).split("I/O error: ", 1)[1].split(" (os error")[0]
    return None


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it."""
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


# --- run directories --------------------------------------------------------------------------------------
def check_output_dir(out: Path) -> None:
    """Fail early (before any model work) if ``out`` cannot be created or written.

    Permission bits are not enough (root passes every ``os.access`` check, /proc refuses anyway), so this
    creates and removes a hidden directory where the run will stage its files."""
    out = resolve_link(out)
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
    "lens.json", "adapter_config.json", "state.json",
})  # fmt: skip


def check_run_dir(out: Path) -> None:
    """``check_output_dir``, and refuse a non-empty ``out`` that holds none of our files: a run replaces its
    whole directory, which must never delete a folder of the user's own. A previous run of ``out`` left aside
    by a run killed in the middle of its swap is put back first."""
    check_output_dir(out)
    out = resolve_link(out)
    if out.parent.is_dir():
        with _folder_lock(out.parent):
            _restore_interrupted(out)
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
    and ``out`` is left exactly as it was; an OS error while writing (a full disk) is an OutputError naming
    ``out`` and the cause. The staging directory is locked by this process, so a second run into the same ``out``
    removes only the leftovers of runs that were killed, never a live run's; the last run to finish wins.
    """
    out = resolve_link(out)
    check_run_dir(out)
    kept = "the earlier run there is kept" if out.exists() else "nothing was written"
    staging, owner = None, None
    try:
        with _write_errors(out, kept):
            out.parent.mkdir(parents=True, exist_ok=True)
            with _folder_lock(out.parent):
                for stale in out.parent.glob(f".{glob.escape(out.name)}.partial-*"):
                    if not _owned(stale):
                        shutil.rmtree(stale, ignore_errors=True)
                staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
                owner = _own(staging)
            yield staging
            os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700; run directories are meant to be shared
            swap_in_dir(staging, out)
    except OutputError as exc:  # a file of the staging directory is the run's output
        if staging is None or not _inside(Path(exc.path), staging):
            raise
        raise OutputError(out, exc.cause, kept) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if owner is not None:
            os.close(owner)


def swap_in_dir(staging: Path, final: Path) -> None:
    """Replace directory ``final`` by ``staging`` with two renames, one run at a time (a lock on their folder). A
    failed second rename puts the previous version back; a kill between the two leaves ``final`` absent and the
    previous version at ``.NAME.old``, which the next run into ``final`` puts back before anything else."""
    old = final.with_name(f".{final.name}.old")
    with _folder_lock(final.parent):
        _restore_interrupted(final)
        moved = final.exists()
        if moved:
            os.replace(final, old)
        try:
            os.replace(staging, final)
        except BaseException:
            if moved:
                os.replace(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
        _sync(final.parent)


def _restore_interrupted(final: Path) -> None:
    """Put back the previous version of ``final`` that a killed swap left at ``.NAME.old`` (the caller holds the
    folder's lock); a leftover beside a whole ``final`` is removed."""
    old = final.with_name(f".{final.name}.old")
    if old.is_dir() and not final.exists():
        os.replace(old, final)
    else:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock (flock) on ``folder`` for the few renames that stage and swap a run directory: runs
    writing into the same folder take turns. Where the folder cannot be opened or locked, nothing is locked."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _own(staging: Path) -> int:
    """An open descriptor of ``staging`` holding its lock for as long as this process runs (or closes it)."""
    fd = os.open(staging, os.O_RDONLY)
    with suppress(OSError):  # a file system without locks: its staging directories are never cleaned as stale
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _owned(staging: Path) -> bool:
    """Whether a live process (or one that cannot be told apart from one) holds ``staging``'s lock."""
    try:
        fd = os.open(staging, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _sync(folder: Path) -> None:
    """fsync ``folder`` so that its renames reach the disk; best effort (the swap is done whatever it says)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ----------------------------------------------------------------------------------------------
def read_json(path: Path, needs: Iterable[str] = (), command: str | None = None) -> dict:
    """A JSON object this tool wrote; UserInputError naming the file if it is missing, damaged (cut short, not
    JSON), not written by ``interp COMMAND`` (when given), or of an earlier format that lacks a key its reader
    ``needs`` (dotted paths, ``*`` for every entry: ``"comparisons.*.nulls"``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{str(path)!r} does not exist.") from None
    except OSError as exc:
        raise UserInputError(f"cannot read {str(path)!r}: {exc.strerror}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f"byte {exc.start}" if isinstance(exc, UnicodeDecodeError) else f"line {exc.lineno} column {exc.colno}"
        raise UserInputError(
            f"{str(path)!r} is damaged: it is not valid JSON (at {where}); it may have been cut short"
            f"{_remake(command)}."
        ) from None
    if not isinstance(data, dict):
        raise UserInputError(f"{str(path)!r} is not a {path.name} this tool wrote (it holds no JSON object).")
    if command is not None and data.get("command") != command:
        raise UserInputError(f"{str(path)!r} is not a {path.name} written by `interp {command}`.")
    missing = next((key for key in needs if not _has(data, key.split("."))), None)
    if missing is not None:
        raise UserInputError(
            f"{str(path)!r} predates a format change: it has no {missing!r} (written by {_writer(data)})"
            f"{_remake(data.get('command') or command)}."
        )
    return data


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL artifact (generations.jsonl), split at line endings only (``textfiles.lines``);
    UserInputError naming the file and the line that is not a JSON object."""
    return [record for _, record in textfiles.read_jsonl(path)]


def read_tensors(path: Path, framework: str = "pt") -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a safetensors file this tool wrote; UserInputError naming the file if it is missing
    or damaged (cut short, not safetensors)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{str(path)!r} does not exist.")
    try:
        with safe_open(str(path), framework=framework) as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not iterable)
            return tensors, dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        reason = str(exc).removeprefix("Error while deserializing header: ")
        raise UserInputError(
            f"{str(path)!r} is damaged: it is not a readable safetensors file ({reason}); it may have been cut short."
        ) from None


def _has(data, keys: list[str]) -> bool:
    if not keys:
        return True
    head, rest = keys[0], keys[1:]
    if head == "*":
        values = data.values() if isinstance(data, dict) else data if isinstance(data, list) else None
        return values is not None and all(_has(value, rest) for value in values)
    return isinstance(data, dict) and head in data and _has(data[head], rest)


def _writer(data: dict) -> str:
    """Which release wrote an artifact, as far as it records it."""
    versions = data.get("versions")
    version = versions.get("persona-interp") if isinstance(versions, dict) else None
    return f"persona-interp {version}" if version else "an earlier release of persona-interp"


def _remake(command: str | None) -> str:
    return f"; rerun `interp {command}` to remake it" if command else ""
