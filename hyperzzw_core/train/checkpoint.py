"""Checkpoints you can trust, and one run per output folder.

A checkpoint file is ``torch.save({"format": FORMAT, "sha256": digest, "payload": bytes})`` where
``payload`` (a uint8 tensor) is the ``torch.save`` of the training state and ``digest`` its
SHA-256. It is written to a temporary file, fsynced, then renamed over the old one (a crash never
leaves a torn file), and loaded with ``weights_only=True`` (no arbitrary unpickling) after the
digest is checked: a flipped byte anywhere in the payload, a truncated file or a file not written
here is refused with :class:`CheckpointError` instead of being trained on.

:func:`run_lock` holds a lock file in the output folder for a whole run (``filelock``; the OS
releases it when the process dies, so a killed run never leaves a stale lock behind) and removes
temporary files left by a run killed during a save.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMAT = "hyperzzw-checkpoint/1"
LOCK_NAME = ".hyperzzw.lock"
HOLDER_NAME = ".hyperzzw.holder.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupted, not ours, or does not fit the run (CLI exit 2)."""


class RunFolderError(ValueError):
    """The output folder is held by another run or cannot be written (CLI exit 2)."""


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) with its digest; atomic (temp file + rename)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    wrapper = {
        "format": FORMAT,
        "sha256": _digest(payload),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(wrapper, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`: digest verified, no arbitrary objects unpickled.

    Raises ``FileNotFoundError`` when there is none and :class:`CheckpointError` when it is
    truncated, corrupted (digest mismatch), unsafe, or not written by :func:`save`.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        wrapper = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path}: refused; it is corrupted or holds objects other than tensors, "
            f"numbers, strings, lists and dicts ({first[:160]})"
        ) from None
    except Exception as exc:  # broad on purpose: torch raises RuntimeError, EOFError, zip errors … for torn files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path}: unreadable, truncated or corrupted ({type(exc).__name__}: {first[:160]})"
        ) from None
    if not (
        isinstance(wrapper, dict)
        and wrapper.get("format") == FORMAT
        and isinstance(wrapper.get("sha256"), str)
        and isinstance(wrapper.get("payload"), torch.Tensor)
        and wrapper["payload"].dtype == torch.uint8
    ):
        raise CheckpointError(
            f"checkpoint {path}: not a {FORMAT} file with a content digest "
            f"(written by another program or an older hyperzzw); refusing to use it"
        )
    payload = wrapper["payload"].numpy().tobytes()
    actual = _digest(payload)
    if actual != wrapper["sha256"]:
        raise CheckpointError(
            f"checkpoint {path}: content digest mismatch (stored sha256 {wrapper['sha256'][:16]}…, "
            f"computed {actual[:16]}…); the file is corrupted, refusing to use it"
        )
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # broad on purpose: digest matched, so the payload was written this way
        raise CheckpointError(f"checkpoint {path}: payload unreadable ({type(exc).__name__})") from None


def leftover_temporaries(folder: str | Path, name: str = "checkpoint.pt") -> list[Path]:
    """Temporary files of :func:`save` for ``name`` in ``folder`` (left by a run killed mid-save)."""
    return sorted(Path(folder).glob(f".{name}.*.tmp"))


def _holder(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / HOLDER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _describe(h: dict[str, Any] | None) -> str:
    if not h:
        return "unknown process"
    return f"pid {h.get('pid')} on {h.get('host')}, started {h.get('started')}"


@contextlib.contextmanager
def run_lock(folder: str | Path, argument: str = "--out") -> Iterator[list[str]]:
    """Hold ``folder``'s run lock for the ``with`` body; yields notes on what was cleaned up.

    Refuses (:class:`RunFolderError`) at once, naming the holder, when another run holds it, and
    when the folder cannot be created or written. A holder record left by a killed run (the OS
    released its lock) is reported as stale and replaced; temporary checkpoint files are removed.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise RunFolderError(
            f"{argument} {folder}: not writable ({type(exc).__name__}: {exc.strerror or exc})"
        ) from None
    lock = FileLock(str(folder / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderError(
            f"{argument} {folder}: another run is using this folder ({_describe(_holder(folder))}); "
            f"wait for it to finish or choose another {argument}"
        ) from None
    try:
        notes = []
        stale = _holder(folder)
        if stale is not None:
            notes.append(f"a previous run ({_describe(stale)}) ended without releasing {folder}; its lock was stale")
        for tmp in leftover_temporaries(folder):
            tmp.unlink(missing_ok=True)
            notes.append(f"removed {tmp.name}, left by a run killed while saving")
        (folder / HOLDER_NAME).write_text(
            json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            )
            + "\n"
        )
        try:
            yield notes
        finally:
            (folder / HOLDER_NAME).unlink(missing_ok=True)
    finally:
        lock.release()
