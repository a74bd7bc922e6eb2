"""`fpdm train --tensorboard` (the `[tb]` extra): the run's log.jsonl records as TensorBoard scalars and
its sample grids as images, in <run>/tb/. log.jsonl stays the record; the event files are a view of it, so
a resumed run drops the events past its checkpoint (`purge_step`) as it truncates its log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TB_DIR = "tb"


def require_tensorboard() -> None:
    """Fail before any work when the TensorBoard writer cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:  # torch's writer needs the tensorboard package
        raise ImportError("--tensorboard needs the tensorboard package: pip install 'fpdm[tb]' (or leave "
                          "--tensorboard out: log.jsonl and training_curve.png hold the same figures)"
                          ) from None


class TensorBoardLog:
    """Writes what the loop logs; a no-op when not enabled (another torchrun process, or no --tensorboard)."""

    def __init__(self, out: str | Path, enabled: bool, start_step: int = 0) -> None:
        self.out, self.writer = Path(out), None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            # events an interrupted run logged past its checkpoint (`start_step`) are dropped, as log.jsonl's
            # rows are: the resumed run logs those steps again
            self.writer = SummaryWriter(log_dir=str(self.out / TB_DIR),
                                        purge_step=start_step + 1 if start_step else None)

    def record(self, rec: dict[str, Any]) -> None:
        """One log.jsonl record: a loss record's figures under train/, a sample record's under sample/
        with its grid."""
        if self.writer is None:
            return
        step = int(rec["step"])
        sample = rec.get("sample")
        figures = sample if sample is not None else rec
        group = "sample" if sample is not None else "train"
        for key, value in figures.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{group}/{key}", value, step)
        if sample is not None and sample.get("grid"):
            from PIL import Image

            with Image.open(self.out / sample["grid"]) as im:
                grid = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
            self.writer.add_image("samples", grid, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["TB_DIR", "TensorBoardLog", "require_tensorboard"]
