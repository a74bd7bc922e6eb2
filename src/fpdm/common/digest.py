"""Digests that tell a damaged file from a good one.

Atomic writes protect against a crash mid-write, not against a bad disk, a truncated copy or a flipped bit
in storage: torch.load and safetensors read such damage back as plausible numbers. So every file fpdm
writes and later reads records 64-bit hashes of what it holds (per tensor, plus one over every other
value) and each load recomputes them:

- training checkpoints and sampling parts (`torch.save` dicts): a ``"fpdm_digest"`` entry in the dict;
- exported weights (`model.safetensors` + `config.json`, the built-in assets among them), the digits
  feature net and latent shards: the tensors' (and an export's config's) hashes in the safetensors metadata;
- JSON that fpdm reads back (reproduce cache entries, latent manifests, calibrated schedules): a
  ``"fpdm_digest"`` field over the rest.

A mismatch raises :class:`DamagedFile` naming the file and the first damaged entry. Files written before
digests existed load with a warning. The hash is XXH3-64 (``xxhash``): damage goes unseen with probability
about 2^-64, and it runs at memory speed, where the standard library's fastest, ``zlib.crc32``, made the
full check cost 27 % of a digits checkpoint's ``torch.load`` instead of 11 % (sampling, which hashes only
the weights it uses, pays 4 %; `benchmarks/digest_cost.py`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xxhash

DIGEST_KEY = "fpdm_digest"
FORMAT = "fpdm-digest/1"

__all__ = ["DIGEST_KEY", "DamagedFile", "check_json", "check_safetensors", "check_state", "digest_state",
           "hash_json", "read_json", "safetensors_metadata", "tensor_hash", "with_json_digest"]


class DamagedFile(ValueError):
    """A file's contents do not match the digest recorded in it (`path`, and `entry` when one is named);
    `hint` says what to do."""

    def __init__(self, path: str | Path, what: str, entry: str | None = None, hint: str = "") -> None:
        self.path, self.what, self.entry, self.hint = Path(path), what, entry, hint
        super().__init__(f"{path} is damaged: {what}" + (f"; {hint}" if hint else ""))

    def with_hint(self, hint: str) -> DamagedFile:
        return DamagedFile(self.path, self.what, self.entry, hint)


def _hash(data: Any, seed: int = 0) -> int:
    return xxhash.xxh3_64_intdigest(data, seed)


def tensor_hash(t: torch.Tensor, heads: dict | None = None) -> int:
    """Hash of a tensor's dtype, shape and bytes (wherever it lives). `heads` memoises the dtype-and-shape
    part across one file's tensors (model, EMA and both AdamW moments share their shapes)."""
    try:  # the fast path, a CPU tensor numpy can view: no torch calls (their per-tensor overhead dominated)
        a = t.numpy()
    except (TypeError, RuntimeError):  # on a GPU, requiring grad, or a dtype numpy lacks (bfloat16)...
        a = t.detach().cpu().resolve_conj().resolve_neg().contiguous().reshape(-1).view(torch.uint8).numpy()
    key = (t.dtype, t.shape)
    head = None if heads is None else heads.get(key)
    if head is None:
        head = _hash(f"{t.dtype}{tuple(t.shape)}".encode())
        if heads is not None:
            heads[key] = head
    try:
        return _hash(a, head)
    except ValueError:  # a strided view: hash its values in order
        return _hash(np.ascontiguousarray(a), head)


def _walk(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> str:
    """The canonical text of every non-tensor value of `obj` (tensors stand in as their path, and are
    collected into `tensors`)."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj
        return f"<{path}>"
    if isinstance(obj, dict):
        return "{" + ",".join(f"{k!r}:{_walk(v, f'{path}/{k}', tensors)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        inner = ",".join(_walk(v, f"{path}/{i}", tensors) for i, v in enumerate(obj))
        return f"{type(obj).__name__}[{inner}]"
    return f"{type(obj).__name__}:{obj!r}"


def _entries(state: dict) -> tuple[dict[str, torch.Tensor], int]:
    tensors: dict[str, torch.Tensor] = {}
    text = _walk({k: v for k, v in state.items() if k != DIGEST_KEY}, "", tensors)
    return tensors, _hash(text.encode())


def digest_state(state: dict) -> dict[str, Any]:
    """The digest entry for a checkpoint-like dict: a hash per tensor (by its /-joined key path) and one
    over all other values (keys, configs, step counts...)."""
    tensors, values = _entries(state)
    heads: dict = {}
    hashes = {p: tensor_hash(t, heads) for p, t in tensors.items()}
    return {"format": FORMAT, "tensors": hashes, "values": values}


def check_state(state: dict, path: str | Path, *, foreign_ok: bool = False,
                only: tuple[str, ...] | None = None) -> dict:
    """Verify and remove `state`'s digest entry; raise DamagedFile naming the first damaged tensor. A state
    without one passes: with a warning if fpdm wrote it (before digests existed), silently if `foreign_ok`
    and it is not fpdm's (an official DiT/FPDM checkpoint, which never has one).

    `only`: the top-level entries whose tensors the caller will use (sampling reads ``("ema",)`` of a
    training checkpoint, half its bytes being AdamW moments); other tensors are not hashed, all non-tensor
    values still are. Whoever uses the rest (resume, export) checks it all."""
    recorded = state.pop(DIGEST_KEY, None)
    if recorded is None:
        if foreign_ok and "fpdm_version" not in state:
            return state
        warnings.warn(f"{path} was written before fpdm recorded digests: it is loaded unchecked (save it "
                      "again to add one)", stacklevel=3)
        return state
    if not isinstance(recorded, dict) or recorded.get("format") != FORMAT \
            or not isinstance(recorded.get("tensors"), dict):
        raise DamagedFile(path, "its digest entry is unreadable")
    tensors, values = _entries(state)
    expected = recorded["tensors"]
    if only is not None:
        def used(name: str) -> bool:
            return name.split("/", 2)[1] in only  # paths are /<entry>/...

        tensors = {n: t for n, t in tensors.items() if used(n)}
        expected = {n: h for n, h in expected.items() if isinstance(n, str) and n.count("/") and used(n)}
    for name in _first_differences(tensors, expected):
        raise DamagedFile(path, f"tensor {name.lstrip('/')} does not match its recorded digest", name)
    if values != recorded.get("values"):
        raise DamagedFile(path, "its non-tensor values (configs, step, keys) do not match their digest")
    return state


def _first_differences(tensors: dict[str, torch.Tensor], recorded: dict[str, int]) -> Iterator[str]:
    heads: dict = {}
    for name, t in tensors.items():
        if recorded.get(name) != tensor_hash(t, heads):  # a missing name is damage too
            yield name
    yield from (name for name in recorded if name not in tensors)


# ---------------------------------------------------------------------------------------------- JSON


def hash_json(obj: Any) -> int:
    """Hash of `obj`'s canonical JSON (sorted keys), so whitespace and key order do not matter."""
    return _hash(json.dumps(obj, sort_keys=True).encode())


def with_json_digest(obj: dict) -> dict:
    """`obj` plus a ``"fpdm_digest"`` field over the rest, ready to be written as JSON."""
    rest = {k: v for k, v in obj.items() if k != DIGEST_KEY}
    return {**rest, DIGEST_KEY: f"{hash_json(rest):016x}"}


def check_json(obj: Any, path: str | Path) -> dict:
    """Verify and remove the digest field of a JSON object read from `path` (DamagedFile when it does not
    match; a warning when there is none)."""
    if not isinstance(obj, dict):
        raise DamagedFile(path, f"expected a JSON object, found {type(obj).__name__}")
    if DIGEST_KEY not in obj:
        warnings.warn("some files were written before fpdm recorded digests: they are read unchecked",
                      stacklevel=3)
        return obj
    recorded = obj.pop(DIGEST_KEY)
    if recorded != f"{hash_json(obj):016x}":
        raise DamagedFile(path, "its contents do not match their recorded digest")
    return obj


def read_json(path: str | Path) -> dict:
    """A JSON object written with :func:`with_json_digest`, checked (DamagedFile if it is not valid JSON
    or does not match)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DamagedFile(path, f"it is not valid JSON ({e})") from None
    return check_json(obj, path)


# ------------------------------------------------------------------------------------- safetensors


def safetensors_metadata(tensors: dict[str, torch.Tensor], beside: dict | None = None,
                         **about: Any) -> dict[str, str]:
    """Metadata for a .safetensors file: under one key ``"fpdm"`` (safetensors writes several keys in hash
    order, so the bytes would change run to run), `about` and a digest: each tensor's hash and, if given,
    the hash of the config kept `beside` the file (so a damaged config.json is caught too)."""
    entry = {"format": FORMAT, "tensors": {k: f"{tensor_hash(v):016x}" for k, v in tensors.items()}}
    if beside is not None:
        entry["config"] = f"{hash_json(beside):016x}"
    return {"fpdm": json.dumps({**about, "digest": entry}, sort_keys=True)}


def check_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None,
                      config: dict | None = None, config_path: str | Path | None = None) -> None:
    """Raise DamagedFile unless `tensors` (and `config`, read from `config_path`) match the hashes in the
    file's `metadata`; a file without them (written before digests existed) passes with a warning."""
    try:
        about = json.loads((metadata or {}).get("fpdm", "{}"))
        recorded = about.get("digest") if isinstance(about, dict) else None
    except ValueError:
        raise DamagedFile(path, "its metadata is unreadable") from None
    if recorded is None:
        warnings.warn(f"{path} was written before fpdm recorded digests: it is loaded unchecked",
                      stacklevel=3)
        return
    try:
        hashes = {k: int(v, 16) for k, v in recorded["tensors"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DamagedFile(path, "its digest entry is unreadable") from None
    for name in _first_differences(tensors, hashes):
        raise DamagedFile(path, f"tensor {name} does not match its recorded digest", name)
    if config is not None and "config" in recorded and f"{hash_json(config):016x}" != recorded["config"]:
        raise DamagedFile(config_path or path, f"it does not match the digest recorded in {path}")
