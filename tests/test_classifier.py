"""Tests of lab_utils.classifier: the shipped judge, blur and moves, training, its command line."""
from __future__ import annotations

import pytest
import torch

from lab_utils import classifier as cl
from lab_utils.checkpoints import (
    CheckpointError, load_pretrained, pretrained_path, read_checkpoint, save_checkpoint,
)


@pytest.fixture(scope="module")
def classifier():
    return cl.load_classifier()


def _tiny() -> cl.Classifier:
    torch.manual_seed(0)
    return cl.Classifier(cl.ClassifierConfig(channels=(4, 8), hidden=16)).eval()


# ---------------------------------------------------------------- the shipped classifier

def test_shipped_classifier_reads_the_mnist_test_set(classifier, mnist_test):
    x, y = mnist_test
    assert cl.accuracy(classifier, x, y) >= 0.99


def test_shipped_classifier_reads_blurred_digits(classifier, mnist_test):
    # VAE samples are blurrier than real digits: the classifier must judge the
    # digit, not its sharpness (it was trained with blur augmentation).
    x, y = mnist_test
    x, y = x[:2000], y[:2000]
    blurred = cl.gaussian_blur(x, torch.full((2000,), 1.5))
    assert cl.accuracy(classifier, blurred, y) >= 0.97


def test_shipped_classifier_keeps_its_checkpoint_format_and_info(classifier):
    ckpt = read_checkpoint(cl.CLASSIFIER_PATH)
    assert ckpt["kind"] == "Classifier"
    assert not classifier.training
    assert classifier.checkpoint_info["train_config"]["augment"] is True
    assert classifier.checkpoint_info["metrics"]["test_accuracy"] >= 0.99


def test_load_classifier_refuses_a_cvae_checkpoint():
    with pytest.raises(CheckpointError, match="holds a CVAE, not a Classifier"):
        cl.load_classifier(path=pretrained_path("lab"))


def test_a_built_classifier_has_empty_checkpoint_info():
    assert _tiny().checkpoint_info == {}
    assert load_pretrained().checkpoint_info["epochs"] > 0  # the CVAE loader fills it too


# ---------------------------------------------------------------- classify

def test_classify_returns_labels_and_confidences(classifier, small_batch):
    x, y = small_batch
    pred, conf = cl.classify(classifier, x)
    assert pred.shape == (64,) and pred.dtype == torch.long
    assert conf.shape == (64,) and conf.dtype == torch.float32
    assert bool(((conf > 0) & (conf <= 1)).all())
    assert (pred == y).float().mean() >= 0.95
    assert torch.is_inference(pred)  # computed under inference_mode: no graph kept


def test_classify_rejects_images_without_channel_axis(classifier, small_batch):
    x, _ = small_batch
    with pytest.raises(ValueError, match="unsqueeze"):
        cl.classify(classifier, x[:, 0])


def test_classify_leaves_a_training_classifier_in_training_mode(small_batch):
    model = _tiny().train()
    cl.classify(model, small_batch[0][:4])
    assert model.training and model.head[3].training  # the Dropout too


# ---------------------------------------------------------------- blur and moves

def test_gaussian_blur_matches_torchvision_and_keeps_ink():
    from torchvision.transforms.functional import gaussian_blur

    x = torch.zeros(2, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0  # an impulse: the blur is the kernel itself
    ours = cl.gaussian_blur(x, torch.tensor([1.0, 0.0]))
    assert torch.allclose(ours[0], gaussian_blur(x[:1], [7, 7], [1.0, 1.0])[0], atol=1e-6)
    assert torch.equal(ours[1], x[1])  # sigma 0: unchanged
    assert ours.sum().item() == pytest.approx(2.0, abs=1e-5)


def test_augment_batch_keeps_shape_and_mostly_moves_little(small_batch):
    x, _ = small_batch
    g = torch.Generator().manual_seed(0)
    moved = cl.augment_batch(x, g)
    assert moved.shape == x.shape
    # Ink is roughly preserved (a shift of 2 px never pushes a digit off the image).
    ratio = moved.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert bool(((ratio > 0.7) & (ratio < 1.3)).all())
    assert not torch.equal(moved, x)


# ---------------------------------------------------------------- training

def test_classifier_checkpoint_round_trip(tmp_path, small_batch):
    model = _tiny()
    path = save_checkpoint(tmp_path / "c.pt", model, epochs=2)
    again = cl.load_classifier(path=path)
    x, _ = small_batch
    assert torch.equal(model(x), again(x))
    assert again.config == model.config and again.checkpoint_info["epochs"] == 2


def test_train_classifier_learns_on_a_small_subset(mnist_test):
    x, y = mnist_test
    model, metrics = cl.train_classifier(
        x[:2000], y[:2000], x[2000:3000], y[2000:3000], epochs=2, batch_size=64,
        augment=False, config=cl.ClassifierConfig(channels=(8, 16), hidden=32),
        verbose=False,
    )
    assert not model.training
    assert metrics["test_accuracy"] > 0.7  # chance is 0.1


def _count_augment_calls(monkeypatch, small_batch, **kwargs) -> int:
    calls = []

    def spy(x, generator=None):
        calls.append(x.shape[0])
        return x

    monkeypatch.setattr(cl, "augment_batch", spy)
    x, y = small_batch
    cl.train_classifier(x[:32], y[:32], epochs=1, batch_size=16, verbose=False,
                        config=cl.ClassifierConfig(channels=(4, 8), hidden=16), **kwargs)
    return len(calls)


def test_train_classifier_augments_unless_told_not_to(monkeypatch, small_batch):
    assert _count_augment_calls(monkeypatch, small_batch) == 2  # two batches of 16
    assert _count_augment_calls(monkeypatch, small_batch, augment=False) == 0


def test_train_classifier_settings_are_keyword_only(small_batch):
    x, y = small_batch
    with pytest.raises(TypeError):
        cl.train_classifier(x, y, None, None, 1)  # epochs must be named


def test_command_line_no_augment_is_stored_in_the_checkpoint(monkeypatch, tmp_path, small_batch):
    import lab_utils.data

    seen = {}

    def fake_train(x, y, x_test, y_test, **kwargs):
        seen.update(kwargs)
        return _tiny(), {"train_seconds": 0.0, "test_accuracy": 0.5}

    monkeypatch.setattr(lab_utils.data, "load_mnist", lambda split, root=None: small_batch)
    monkeypatch.setattr(cl, "train_classifier", fake_train)
    out = tmp_path / "plain.pt"
    assert cl.main(["--no-augment", "--epochs", "1", "--out", str(out)]) == 0
    assert seen["augment"] is False and seen["epochs"] == 1
    assert cl.load_classifier(path=out).checkpoint_info["train_config"]["augment"] is False
