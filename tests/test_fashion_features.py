"""The Fashion-MNIST feature network's code on tiny data (its 12-minute training on the real files is the
shipped asset's job: `fpdm train-features --data fashion-mnist`)."""

import pytest
import torch

from fpdm.data.image_folder import ImageDataset
from fpdm.evaluation import fashion_features as ff
from fpdm.evaluation.digits_features import FeatureTrainConfig, train_classifier


def _tiny(n: int, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.rand(n, 1, 32, 32, generator=g) * 0.2 - 1
    images[torch.arange(n), 0, labels * 3, :] = 1.0  # a class-specific bright row: learnable
    return ImageDataset(images, labels, num_classes=10, name="tiny", split="train")


def test_the_net_learns_and_regenerates_bit_for_bit(tmp_path):
    cfg = FeatureTrainConfig(epochs=3, batch_size=16, lr=3e-3, seed=0)
    runs = [train_classifier(ff.FashionNet, _tiny(80, 0), _tiny(40, 1), cfg, "t") for _ in range(2)]
    (net, acc), (net2, acc2) = runs
    assert acc == acc2 and acc > 0.5
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values(),
                                                 strict=True))
    path = tmp_path / "f.safetensors"
    from fpdm.evaluation.digits_features import save_feature_net

    save_feature_net(net, acc, cfg, path, reference=_tiny(40, 1).images, dataset="fashion-mnist")
    feats, pred = ff.fashion_features(_tiny(40, 1).images, path)
    assert feats.shape == (40, 256) and pred.shape == (40,)
    assert ff.reference_features(path).shape == (40, 256)
    assert float((torch.from_numpy(pred) == _tiny(40, 1).labels).float().mean()) == pytest.approx(acc)


def test_wrong_shapes_and_missing_weights_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"need images of shape \(N, 1, 32, 32\), got \(2, 1, 8, 8\)"):
        ff.fashion_features(torch.zeros(2, 1, 8, 8), tmp_path / "none.safetensors")
    with pytest.raises(FileNotFoundError, match="fpdm train-features --data fashion-mnist --out"):
        ff.fashion_features(torch.zeros(2, 1, 32, 32), tmp_path / "none.safetensors")
