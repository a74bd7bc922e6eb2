"""`fpdm train-features`: (re)train the digits feature network."""

from __future__ import annotations

import argparse
import json
import sys

from fpdm.cli.common import _Formatter


def _add_train_features(sub: argparse._SubParsersAction) -> None:
    from fpdm.evaluation.digits_features import WEIGHTS, FeatureTrainConfig

    d = FeatureTrainConfig()
    p = sub.add_parser("train-features", formatter_class=_Formatter, help="(re)train the digits feature net",
                       description="Train the CNN behind digits-FID on the digits train split (seeded, one "
                                   "thread) and write its weights and the held-out reference features. With "
                                   "the defaults this regenerates the shipped file bit for bit.")
    p.add_argument("--out", default=str(WEIGHTS), help="safetensors path")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for init and data order")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_features)


def _cmd_train_features(a: argparse.Namespace) -> int:
    from fpdm.evaluation.digits_features import FeatureTrainConfig, save_feature_net, train_digits_net

    cfg = FeatureTrainConfig(epochs=a.epochs, seed=a.seed)
    net, acc = train_digits_net(cfg, progress=not a.no_progress)
    if acc < 0.97:
        print(f"warning: held-out accuracy {acc:.4f} is below 0.97", file=sys.stderr)
    save_feature_net(net, acc, cfg, a.out)
    print(json.dumps({"out": a.out, "test_accuracy": acc}))
    return 0
