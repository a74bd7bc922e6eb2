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
    ff.save_fashion_net(net, acc, cfg, path)
    feats, pred = ff.fashion_features(_tiny(40, 1).images, path)
    assert feats.shape == (40, 256) and pred.shape == (40,)
    assert float((torch.from_numpy(pred) == _tiny(40, 1).labels).float().mean()) == pytest.approx(acc)


def test_wrong_shapes_and_missing_weights_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"need images of shape \(N, 1, 32, 32\), got \(2, 1, 8, 8\)"):
        ff.fashion_features(torch.zeros(2, 1, 8, 8), tmp_path / "none.safetensors")
    with pytest.raises(FileNotFoundError, match="fpdm train-features --data fashion-mnist --out"):
        ff.fashion_features(torch.zeros(2, 1, 32, 32), tmp_path / "none.safetensors")


REAL = ff.Path("/usr/share/datasets/fashion-mnist")
INSTALLED = any((REAL / f"t10k-images-idx3-ubyte{gz}").exists() for gz in ("", ".gz"))


@pytest.mark.skipif(not INSTALLED, reason="Debian's dataset-fashion-mnist is not installed")
def test_the_shipped_network_scores_real_images_near_the_floor_and_noise_far_from_it(tmp_path, monkeypatch):
    from fpdm.data.fashion import load_fashion_mnist
    from fpdm.evaluation.evaluate import fashion_metrics

    monkeypatch.setenv("FPDM_CACHE", str(tmp_path))
    train = load_fashion_mnist("train")
    real = fashion_metrics(train.images[:1000], train.labels[:1000], bootstrap=5, kid_subsets=10)
    uniform = torch.rand(1000, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise = fashion_metrics(uniform, train.labels[:1000], bootstrap=5, kid_subsets=10)
    # measured: 1,000 training images 5.68 (FID's bias at this size; 10,000 give 0.89), class consistency
    # 0.964; uniform noise 698.6, 0.102
    assert real["class_consistency"] > 0.9 and noise["class_consistency"] < 0.5
    assert real["fashion_fid"] < 10 and noise["fashion_fid"] > 50 * real["fashion_fid"]
    assert len(list(tmp_path.glob("fashion-test-features-*.npy"))) == 1  # computed once, cached
