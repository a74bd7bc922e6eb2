"""`fpdm train-features`: (re)train a dataset's feature network (digits or Fashion-MNIST)."""

from __future__ import annotations

import argparse
import json
import sys

from fpdm.cli.common import _Formatter


def _add_train_features(sub: argparse._SubParsersAction) -> None:
    from fpdm.evaluation import digits_features, fashion_features
    from fpdm.evaluation.evaluate import FEATURE_ACCURACY

    d = digits_features.FeatureTrainConfig()
    p = sub.add_parser("train-features", formatter_class=_Formatter, help="(re)train a feature net",
                       description="Train the CNN behind digits-FID (on the digits train split) or "
                                   "fashion-FID (on the 60k Fashion-MNIST training images), seeded and on "
                                   "one thread, and write its weights and the reference features of the "
                                   "held-out images. With the defaults this regenerates the shipped file bit "
                                   "for bit.")
    p.add_argument("--data", choices=tuple(FEATURE_ACCURACY), default="digits",
                   help="which dataset's network")
    p.add_argument("--data-dir", default=None, help="fashion-mnist: the folder of its four IDX files "
                   "(default: $FPDM_DATA, else /usr/share/datasets/fashion-mnist)")
    p.add_argument("--out", default=None, help="safetensors path (default: the package's, "
                   f"{digits_features.WEIGHTS} or {fashion_features.WEIGHTS})")
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs (default: {d.epochs} for "
                   f"digits, {fashion_features.CONFIG.epochs} for fashion-mnist)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for init and data order")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_features)


def _cmd_train_features(a: argparse.Namespace) -> int:
    from fpdm.evaluation.evaluate import train_feature_net

    out, acc = train_feature_net(a.data, data_dir=a.data_dir, out=a.out, epochs=a.epochs, seed=a.seed,
                                 progress=not a.no_progress,
                                 warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    print(json.dumps({"out": out, "test_accuracy": acc}))
    return 0
