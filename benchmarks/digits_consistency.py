"""Stop-gap check until the evaluation issue lands: how often an SVC trained on the digits train split
classifies generated samples as the class they were drawn for.

    python benchmarks/digits_consistency.py runs/demo-fpdm/samples.npz [more.npz ...]
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.svm import SVC

from fpdm.data import load_dataset


def _features(x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x) + 1) * 8).reshape(len(x), -1)  # back to the 0..16 pixel scale


def main(paths: list[str]) -> None:
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    clf = SVC(gamma=0.001).fit(_features(train.images.numpy()), train.labels.numpy())
    acc = (clf.predict(_features(test.images.numpy())) == test.labels.numpy()).mean()
    print(f"SVC accuracy on the real test split: {acc:.4f}")
    for path in paths:
        data = np.load(path)
        hit = (clf.predict(_features(data["samples"])) == data["labels"]).mean()
        print(f"{path}: class consistency {hit:.4f} over {len(data['labels'])} samples")


if __name__ == "__main__":
    main(sys.argv[1:])
