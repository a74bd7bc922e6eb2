"""Crash-safe checkpoints and RNG state capture for exact resumption.

Checkpoints are written atomically (temp file in the same directory, fsync, ``os.replace``) so an
interrupted save never leaves a half-written file under the real name, and they are read with
``torch.load(weights_only=True)`` so loading a checkpoint cannot execute code. That restricts what a
state may hold to tensors, ``dict``/``OrderedDict``, ``list``, ``tuple`` (``torch.Size``), ``str``,
``int``, ``float``, ``bool``, ``None``, ``torch.dtype`` and ``torch.device``;
:func:`save_checkpoint` checks this up front and names the offending entry (a NumPy scalar
such as a loss stored as ``np.float32`` is the usual culprit).
"""

from __future__ import annotations

import os
import random
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from fpdm.common.digest import DIGEST_KEY, DamagedFile, check_state, digest_state

__all__ = [
    "atomic_write",
    "capture_rng_state",
    "generator_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "set_generator_state",
    "into_the_package",
    "writable_folder",
]

_SCALARS = (str, int, float, bool, type(None), torch.dtype, torch.device)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync it, then rename it into place.

    The parent directory is created. On any failure the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp's 0600 would make the result private
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and str(path) not in str(exc):  # e.g. ENOSPC names no file
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}; it was left as it "
                                     "was") from exc
        raise
    _fsync_dir(path.parent)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; best effort because not every OS/filesystem allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_safe(obj: Any, where: str) -> None:
    """Raise TypeError naming the first entry that ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(obj, torch.Tensor) or type(obj) in _SCALARS:
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if type(key) not in _SCALARS:
                raise TypeError(f"checkpoint key {where}[{key!r}] has unsupported type {type(key).__name__}")
            _check_safe(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple, torch.Size):
        for i, value in enumerate(obj):
            _check_safe(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint entry {where} has type {type(obj).__module__}.{type(obj).__qualname__}, which "
        "torch.load(weights_only=True) cannot load; use tensors, dicts, lists, tuples, str, int, "
        "float, bool or None"
    )


def save_checkpoint(path: str | os.PathLike[str], state: dict) -> None:
    """Atomically ``torch.save`` a weights_only-safe ``state`` dict to ``path``."""
    if type(state) not in (dict, OrderedDict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    _check_safe(state, "state")
    stamped = {**state, DIGEST_KEY: digest_state(state)}  # checked by load_checkpoint
    atomic_write(path, lambda f: torch.save(stamped, f))


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu", *, foreign_ok: bool = False,
                    only: tuple[str, ...] | None = None) -> dict:
    """Load a checkpoint with ``weights_only=True`` and check its digest (:mod:`fpdm.common.digest`);
    corrupt or
    damaged files raise ValueError naming ``path`` (:class:`fpdm.common.digest.DamagedFile` for a digest
    mismatch, naming the first damaged tensor). `foreign_ok`: a file fpdm did not write (an official
    checkpoint) loads without the warning that an fpdm file without a digest gets. `only`: check just
    these top-level entries' tensors (and every other value): for a caller that uses nothing else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (PermissionError, IsADirectoryError, FileNotFoundError):
        raise
    except Exception as exc:  # bad bytes surface as RuntimeError, UnpicklingError, EOFError, OSError...
        why = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ValueError(
            f"{path} is not a valid fpdm checkpoint (corrupt, truncated, or holds objects that "
            f"weights_only loading refuses: {type(exc).__name__}: {why})"
        ) from exc
    if not isinstance(state, dict):
        kind = type(state).__name__
        raise ValueError(f"{path} is not a valid fpdm checkpoint: expected a dict, got {kind}")
    try:
        return check_state(state, path, foreign_ok=foreign_ok, only=only)
    except DamagedFile as e:
        kept = path.with_name("ckpt.prev1.pt")
        raise e.with_hint("it changed after fpdm wrote it (a bad disk, a truncated or altered copy): use an "
                          "intact copy" + (f", or the earlier checkpoint kept beside it ({kept.name}; "
                                           "`fpdm train --resume --fallback` continues from it)"
                                           if kept.exists() and kept != path else "")) from None


# ------------------------------------------------------------------------------------------ RNG


def capture_rng_state() -> dict:
    """Snapshot Python, NumPy, torch CPU and all CUDA RNGs as weights_only-safe values.

    Layout: ``{"python": {"version", "state" (int64 tensor), "gauss_next"}, "numpy": {"keys" (int64
    tensor), "pos", "has_gauss", "cached_gaussian"}, "torch": uint8 tensor, "cuda": [uint8 tensor per
    device]}``; ``"cuda"`` is empty when CUDA is unavailable.
    """
    py_version, py_state, gauss_next = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    if np_kind != "MT19937":  # pragma: no cover - the legacy global RNG is always MT19937
        raise RuntimeError(f"unexpected NumPy global RNG {np_kind!r}")
    return {
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64).copy()),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict) -> None:
    """Restore what :func:`capture_rng_state` captured (also after a save/load round trip).

    CUDA states are restored device by device; a mismatch in device count (e.g. resuming a GPU run on
    a CPU) restores what it can and warns, since the CPU-side streams are still exact.
    """
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    keys = npy["keys"].cpu().numpy().astype(np.uint32)
    cached = float(npy["cached_gaussian"])
    np.random.set_state(("MT19937", keys, int(npy["pos"]), int(npy["has_gauss"]), cached))
    torch.set_rng_state(_byte_state(state["torch"]))
    cuda_states = list(state.get("cuda", []))
    n_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(cuda_states) != n_devices and cuda_states:
        warnings.warn(
            f"RNG state holds {len(cuda_states)} CUDA device state(s) but {n_devices} device(s) are "
            "available; restoring the overlap only",
            RuntimeWarning,
            stacklevel=2,
        )
    for device, cuda_state in enumerate(cuda_states[:n_devices]):
        torch.cuda.set_rng_state(_byte_state(cuda_state), device)


def _byte_state(t: torch.Tensor) -> torch.Tensor:
    """RNG setters want a CPU uint8 tensor; a ``map_location`` may have moved or it may be a view."""
    return t.detach().to(device="cpu", dtype=torch.uint8).contiguous()


def generator_state(g: torch.Generator) -> torch.Tensor:
    """A weights_only-safe copy of a ``torch.Generator``'s state (CPU uint8 tensor)."""
    return g.get_state().clone()


def set_generator_state(g: torch.Generator, state: torch.Tensor) -> None:
    """Restore a state from :func:`generator_state` into ``g``."""
    g.set_state(_byte_state(state))


def writable_folder(folder: Path, flag: str) -> None:
    """Fail early, naming the flag and the obstacle, when `folder` cannot be created or written; creates
    nothing."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{flag}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(f"{flag}: cannot write in {parent}")
            return


def into_the_package(path: str | Path, flag: str) -> Path:
    """A default output inside the fpdm package: fine in a source checkout (regenerating the shipped
    files), refused in an installed package (site-packages), where it would overwrite the installed
    files; the ValueError names `flag`."""
    path = Path(path)
    if "site-packages" in path.resolve().parts or "dist-packages" in path.resolve().parts:
        raise ValueError(f"by default this writes into the installed package ({path}); pass {flag} to write "
                         "elsewhere (the default is for a source checkout, to regenerate the shipped files)")
    return path
