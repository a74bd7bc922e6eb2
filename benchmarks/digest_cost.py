"""What the digest check (fpdm.common.digest) adds to loading a digits checkpoint.

A `make demo`-sized training checkpoint (FPDM-T/2 on digits: model, EMA, AdamW moments, RNG states) is
written once; then, interleaved in one process:

- `torch.load`: the bare load, no check (what fpdm did before digests);
- `load_checkpoint`: the load plus the full check (what resume and export pay), and with the check of the
  EMA weights only (what sampling pays);
- `load_model, unchecked` / `load_model`: what `fpdm sample --ckpt` waits for (load, rebuild, copy the EMA
  weights in), without and with its check;
- the full check alone, the EMA-only one, the full one with zlib.crc32 in place of XXH3 (the standard
  library's fastest), and one XXH3 pass over the file's bytes through a memory map: what any whole-file
  digest would cost at least (it reads every byte once more, at memory speed);
- `load_exported` of the built-in `digits-fpdm` weights (4.4 MB safetensors, EMA only), without and with
  its check;
- `torch.load(mmap=True)`, without and with the full check: storages mapped from the page cache, not
  copied out of it (not what fpdm does: the optimizer would keep its moments mapped from the file).

The CPU caches are evicted before every timed call (a 96 MB write), as for a load in a fresh process:
with a warm cache (`--warm`) a second pass over the 17.6 MB is 3-5× cheaper, which flatters any check.

    python benchmarks/digest_cost.py [--repeats 21] [--warm] [--json PATH]
"""

from __future__ import annotations

import mmap
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
import xxhash
from common import interleaved, median_ms, parser, table, write_json

import fpdm.common.checkpoint as checkpoint
import fpdm.common.digest as digest
import fpdm.weights.export as export
from fpdm.config import TrainConfig
from fpdm.models.registry import model_config
from fpdm.training.loop import train
from fpdm.weights.loading import load_model


def file_hash(path: Path) -> int:
    """XXH3 over the file's bytes through a memory map: the least any whole-file digest costs."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        view = memoryview(m)
        try:
            return xxhash.xxh3_64_intdigest(view)
        finally:
            view.release()


def main() -> None:
    p = parser("digest_cost", repeats=21)
    p.add_argument("--warm", action="store_true",
                   help="leave the CPU caches as the previous call left them (default: evict them before "
                        "every timed call, as for a load in a fresh process)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    evict = None
    if not a.warm:
        junk = np.zeros(96 << 20, dtype=np.uint8)  # 96 MB, three times the last-level cache here

        def evict():
            np.add(junk, 1, out=junk)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(out_dir=tmp, steps=2, log_every=1)
        train(cfg, model_config("FPDM-T/2", input_size=8, in_channels=1, num_classes=10), progress=False)
        path = Path(tmp) / "ckpt.pt"
        size_mb = path.stat().st_size / 1e6
        real_check = checkpoint.check_state

        def unchecked(state, p, **kw):
            state.pop(digest.DIGEST_KEY)
            return state

        def model_unchecked():
            checkpoint.check_state = unchecked
            try:
                load_model(path)
            finally:
                checkpoint.check_state = real_check

        asset = Path(export.__file__).parent / "assets" / "digits-fpdm"

        def exported_unchecked():
            export.check_safetensors = lambda *a, **k: None
            try:
                export.load_exported(asset)
            finally:
                export.check_safetensors = digest.check_safetensors

        def check_only_with(hash_fn):
            state = torch.load(path, weights_only=True)
            return lambda: (hash_fn(state))

        def crc_all(state):
            tensors, _ = digest._entries(state)
            for t in tensors.values():
                zlib.crc32(t.contiguous().reshape(-1).view(torch.uint8).numpy())

        fresh = torch.load(path, weights_only=True)
        fns = {
            "torch.load": lambda: torch.load(path, weights_only=True),
            "load_checkpoint": lambda: checkpoint.load_checkpoint(path),
            "load_checkpoint, EMA only": lambda: checkpoint.load_checkpoint(path, only=("ema",)),
            "load_model, unchecked": model_unchecked,
            "load_model": lambda: load_model(path),
            "XXH3 over the file's bytes (mmap)": lambda: file_hash(path),
            "load_exported (built-in digits-fpdm), unchecked": exported_unchecked,
            "load_exported (built-in digits-fpdm)": lambda: export.load_exported(asset),
            "torch.load(mmap=True)": lambda: torch.load(path, weights_only=True, mmap=True),
            "torch.load(mmap=True) + full check": lambda: digest.check_state(
                torch.load(path, weights_only=True, mmap=True), path),
            "check alone (XXH3)": lambda: digest.check_state(dict(fresh), path),
            "check alone, EMA only": lambda: digest.check_state(dict(fresh), path, only=("ema",)),
            "check alone (crc32)": check_only_with(crc_all),
        }
        times = interleaved(fns, repeats=a.repeats, warmup=2, before=evict)
    ms = {k: median_ms(v) for k, v in times.items()}
    rows = [{"what": k, "median ms": v} for k, v in ms.items()]
    ratios = {
        "load_checkpoint / torch.load - 1": ms["load_checkpoint"] / ms["torch.load"] - 1,
        "load_checkpoint EMA only / torch.load - 1": ms["load_checkpoint, EMA only"] / ms["torch.load"] - 1,
        "load_model / load_model unchecked - 1": ms["load_model"] / ms["load_model, unchecked"] - 1,
        "check / torch.load": ms["check alone (XXH3)"] / ms["torch.load"],
        "EMA-only check / load_model (unchecked)": ms["check alone, EMA only"] / ms["load_model, unchecked"],
        "file hash / torch.load": ms["XXH3 over the file's bytes (mmap)"] / ms["torch.load"],
        "load_exported / unchecked - 1": ms["load_exported (built-in digits-fpdm)"]
        / ms["load_exported (built-in digits-fpdm), unchecked"] - 1,
        "mmap load + full check / torch.load": ms["torch.load(mmap=True) + full check"] / ms["torch.load"],
        "crc32 check / torch.load": ms["check alone (crc32)"] / ms["torch.load"],
    }
    print(f"checkpoint: {size_mb:.1f} MB, {a.repeats} interleaved repeats, {a.threads} thread(s), CPU caches "
          f"{'warm' if a.warm else 'evicted before each call'}")
    print(table(rows, ["what", "median ms"]))
    print(table([{"ratio": k, "value": v} for k, v in ratios.items()], ["ratio", "value"]))
    print(write_json("digest_cost", {"checkpoint_mb": size_mb, "warm": a.warm, "median_ms": ms,
                                     "ratios": ratios}, a.json))


if __name__ == "__main__":
    main()
