"""Placeholder digits metrics (class consistency, pixel FD ± bootstrap s.e.; see fpdm.sweep) for sample
files written by `fpdm sample` or `fpdm sweep`, until the evaluation issue lands.

    python benchmarks/digits_metrics.py runs/demo-fpdm/samples.npz [more.npz ...]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from fpdm.registry import model_config
from fpdm.sweep import placeholder_metric

DIGITS = model_config("FPDM-T/2", input_size=8, in_channels=1, num_classes=10)


def main(paths: list[str]) -> None:
    for path in paths:
        data = np.load(path)
        m = placeholder_metric(torch.from_numpy(data["samples"]), torch.from_numpy(data["labels"]), DIGITS)
        print(f"{path}: class consistency {m['class_consistency']:.4f}, pixel FD {m['pixel_fd']:.2f} ± "
              f"{m['pixel_fd_se']:.2f} over {len(data['labels'])} samples")


if __name__ == "__main__":
    main(sys.argv[1:])
