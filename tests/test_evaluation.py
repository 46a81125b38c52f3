"""Tests of lab_utils.evaluation: bounds, label fidelity, pictures, the classifier."""
from __future__ import annotations

import math

import pytest
import torch

from lab_utils import evaluation as ev
from lab_utils.checkpoints import load_pretrained, read_checkpoint, save_checkpoint
from lab_utils.losses import _gaussian_log_prob, bce, iwae_bound, negative_elbo
from lab_utils.model import CVAE


@pytest.fixture(scope="module")
def trained():
    """The shipped lab CVAE: bounds behave as in theory only for a trained model."""
    return load_pretrained("lab")


@pytest.fixture(scope="module")
def classifier():
    return ev.load_classifier()


# ---------------------------------------------------------------- classifier

def test_shipped_classifier_reads_the_mnist_test_set(classifier, mnist_test):
    x, y = mnist_test
    assert ev.accuracy(classifier, x, y) >= 0.99


def test_shipped_classifier_reads_blurred_digits(classifier, mnist_test):
    # VAE samples are blurrier than real digits: the classifier must judge the
    # digit, not its sharpness (it was trained with blur augmentation).
    x, y = mnist_test
    x, y = x[:2000], y[:2000]
    blurred = ev.gaussian_blur(x, torch.full((2000,), 1.5))
    assert ev.accuracy(classifier, blurred, y) >= 0.97


def test_gaussian_blur_matches_torchvision_and_keeps_ink():
    from torchvision.transforms.functional import gaussian_blur

    x = torch.zeros(2, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0  # an impulse: the blur is the kernel itself
    ours = ev.gaussian_blur(x, torch.tensor([1.0, 0.0]))
    assert torch.allclose(ours[0], gaussian_blur(x[:1], [7, 7], [1.0, 1.0])[0], atol=1e-6)
    assert torch.equal(ours[1], x[1])  # sigma 0: unchanged
    assert ours.sum().item() == pytest.approx(2.0, abs=1e-5)


def test_classify_returns_labels_and_confidences(classifier, small_batch):
    x, y = small_batch
    pred, conf = ev.classify(classifier, x)
    assert pred.shape == (64,) and pred.dtype == torch.long
    assert conf.shape == (64,) and conf.dtype == torch.float32
    assert bool(((conf > 0) & (conf <= 1)).all())
    assert (pred == y).float().mean() >= 0.95
    assert torch.is_inference(pred)  # computed under inference_mode: no graph kept


def test_classify_rejects_images_without_channel_axis(classifier, small_batch):
    x, _ = small_batch
    with pytest.raises(ValueError, match="unsqueeze"):
        ev.classify(classifier, x[:, 0])


def test_classifier_checkpoint_round_trip(tmp_path, small_batch):
    torch.manual_seed(0)
    model = ev.Classifier(ev.ClassifierConfig(channels=(4, 8), hidden=16)).eval()
    path = save_checkpoint(tmp_path / "c.pt", model)
    ckpt = read_checkpoint(path, kind="Classifier")
    again = ev.Classifier(ev.ClassifierConfig.from_dict(ckpt["model_config"]))
    again.load_state_dict(ckpt["state_dict"])
    x, _ = small_batch
    assert torch.equal(model(x), again.eval()(x))


def test_augment_keeps_shape_and_mostly_moves_little(small_batch):
    x, _ = small_batch
    g = torch.Generator().manual_seed(0)
    moved = ev.augment(x, g)
    assert moved.shape == x.shape
    # Ink is roughly preserved (a shift of 2 px never pushes a digit off the image).
    ratio = moved.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert bool(((ratio > 0.7) & (ratio < 1.3)).all())
    assert not torch.equal(moved, x)


def test_train_classifier_learns_on_a_small_subset(mnist_test):
    x, y = mnist_test
    model, metrics = ev.train_classifier(
        x[:2000], y[:2000], x[2000:3000], y[2000:3000], epochs=2, batch_size=64,
        use_augment=False, config=ev.ClassifierConfig(channels=(8, 16), hidden=32),
        verbose=False,
    )
    assert not model.training
    assert metrics["test_accuracy"] > 0.7  # chance is 0.1


# ---------------------------------------------------------------- bounds

def test_iwae_k1_is_a_one_sample_elbo_with_the_same_noise(trained, small_batch):
    x, y = small_batch
    torch.manual_seed(3)
    bound = iwae_bound(trained, x, y, k=1)
    # The same noise by hand: z = mu + sigma * eps, then log p(x|z) + log p(z) - log q(z|x).
    torch.manual_seed(3)
    with torch.no_grad():
        mu, logvar = trained.encode(x, y)
        z = trained.reparameterize(mu, logvar)
        x_hat = trained.decode(z, y)
        by_hand = bce(x_hat, x) - _gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z)) \
            + _gaussian_log_prob(z, mu, logvar)
    assert torch.allclose(bound, by_hand, atol=1e-3)


def test_iwae_k1_averages_to_the_negative_elbo(trained, small_batch):
    x, y = small_batch
    nelbo = ev.test_nelbo(trained, x, y)
    # k=1 uses a sampled KL, the ELBO the closed form: equal on average over the noise.
    many = sum(ev.iwae_nll(trained, x, y, k=1, seed=s) for s in range(20)) / 20
    assert abs(many - nelbo) < 1.0


def test_iwae_tightens_as_k_grows_on_real_digits(trained, mnist_test):
    x, y = mnist_test
    curve = ev.iwae_curve(trained, x[:200], y[:200], ks=(1, 5, 25))
    assert curve[1] > curve[5] > curve[25]
    # Still above the floor that no model can beat (the grey pixels' entropy).
    assert curve[25] > ev.pixel_entropy(x[:200])


def test_iwae_nll_is_repeatable_and_leaves_the_global_stream_alone(trained, small_batch):
    x, y = small_batch
    torch.manual_seed(7)
    expected = torch.rand(1)
    torch.manual_seed(7)
    a = ev.iwae_nll(trained, x, y, k=4, seed=1)
    after = torch.rand(1)
    assert torch.equal(after, expected)
    assert ev.iwae_nll(trained, x, y, k=4, seed=1) == a
    assert ev.iwae_nll(trained, x, y, k=4, seed=2) != a


def test_test_nelbo_matches_the_loss_of_the_training_code(trained, small_batch):
    x, y = small_batch
    torch.manual_seed(0)
    with torch.no_grad():
        x_hat, mu, logvar = trained(x, y)
    assert ev.test_nelbo(trained, x, y, seed=0) == pytest.approx(
        negative_elbo(x_hat, x, mu, logvar).mean().item(), rel=1e-5)


def test_test_nelbo_ignores_labels_of_a_plain_vae(small_batch):
    torch.manual_seed(0)
    vae = CVAE("lab-vae").eval()
    x, y = small_batch
    assert ev.test_nelbo(vae, x, y) == ev.test_nelbo(vae, x, None)


def test_pixel_entropy_of_binary_images_is_zero():
    x = (torch.rand(5, 1, 28, 28) > 0.5).float()
    assert ev.pixel_entropy(x) == pytest.approx(0.0, abs=1e-6)
    assert ev.pixel_entropy(torch.full((1, 1, 28, 28), 0.5)) == pytest.approx(784 * math.log(2))


# ---------------------------------------------------------------- label fidelity

def test_label_fidelity_shape_and_range(trained, classifier):
    result = ev.label_fidelity(trained, classifier, n_per_label=20)
    assert len(result["per_label"]) == 10
    assert all(0.0 <= f <= 1.0 for f in result["per_label"])
    assert result["overall"] == pytest.approx(sum(result["per_label"]) / 10)
    assert result["overall"] > 0.5  # a trained CVAE draws mostly the digit asked for
    again = ev.label_fidelity(trained, classifier, n_per_label=20)
    assert again == result  # seeded


def test_label_fidelity_of_an_untrained_model_is_near_chance(classifier):
    torch.manual_seed(0)
    result = ev.label_fidelity(CVAE("lab").eval(), classifier, n_per_label=20)
    assert result["overall"] < 0.3


def test_label_fidelity_refuses_a_plain_vae(classifier):
    with pytest.raises(ValueError, match="conditional"):
        ev.label_fidelity(CVAE("lab-vae"), classifier, n_per_label=2)


# ---------------------------------------------------------------- pictures

def test_reconstruct_is_close_to_the_input(trained, small_batch):
    x, y = small_batch
    x_hat = ev.reconstruct(trained, x, y)
    assert x_hat.shape == x.shape
    assert torch.equal(x_hat, ev.reconstruct(trained, x, y))  # the mean: no noise
    other = ev.reconstruct(trained, x, y.roll(1))
    # Closer to its own digit than to the shuffled batch.
    assert (x_hat - x).abs().mean() < (x_hat - x.roll(1, 0)).abs().mean()
    assert not torch.equal(other, x_hat)  # the label is used


def test_interpolate_starts_and_ends_at_the_reconstructions(trained, small_batch):
    x, y = small_batch
    path = ev.interpolate(trained, x[0], y[0], x[1], y[1], steps=6)
    assert path.shape == (6, 1, 28, 28)
    ends = ev.reconstruct(trained, x[:2], y[:2])
    assert torch.allclose(path[0], ends[0], atol=1e-5)
    assert torch.allclose(path[-1], ends[1], atol=1e-5)


def test_interpolate_rejects_a_batch(trained, small_batch):
    x, y = small_batch
    with pytest.raises(ValueError, match="one image"):
        ev.interpolate(trained, x[:2], y[0], x[1], y[1])


# ---------------------------------------------------------------- silent digits

def _silence(model: CVAE, digit: int) -> CVAE:
    """Make ``digit``'s label channel push the first convolution far below zero:
    its 3 maps, then (with a negative bias) the one map after them, are all zero."""
    torch.manual_seed(0)
    conv1, conv2 = model.encoder.conv[0], model.encoder.conv[2]
    with torch.no_grad():
        conv1.weight.abs_()
        conv1.bias.fill_(0.1)  # every other digit: positive maps everywhere
        conv1.weight[:, 1 + digit] = -100.0  # (3, 11, 3, 3): input channel 1 + d is label d
        conv2.weight.abs_()
        conv2.bias.fill_(-0.05)
    return model


def test_feature_spread_finds_a_digit_whose_image_never_reaches_z(small_batch):
    x, y = small_batch
    model = _silence(CVAE("lab"), 5)
    spread = ev.feature_spread(model, x, y)
    assert spread.shape == (10,)
    assert spread[5] == 0.0
    assert all(spread[d] > 0.01 for d in range(10) if d != 5 and (y == d).sum() >= 2)
    assert ev.silent_digits(model, x, y) == [5]
    mu, _ = model.encode(x[y == 5], y[y == 5])
    assert torch.allclose(mu, mu[:1].expand_as(mu))  # every 5 gets the same code


def test_shipped_lab_model_has_no_silent_digit(trained, mnist_test):
    x, y = mnist_test
    spread = ev.feature_spread(trained, x[:2000], y[:2000])
    assert ev.silent_digits(trained, x[:2000], y[:2000]) == [], spread
    assert spread.min() > 0.3 * spread.max()


def test_silent_digits_refuses_a_plain_vae(small_batch):
    x, y = small_batch
    with pytest.raises(ValueError, match="needs a conditional model"):
        ev.silent_digits(CVAE("lab-vae"), x, y)


# ---------------------------------------------------------------- shipped models

def test_shipped_wide_model_explains_digits_better_than_the_lab_model(trained, mnist_test):
    x, y = mnist_test
    wide = load_pretrained("wide")
    assert wide.config.conditional and wide.config.enc_strides == (2, 2)
    assert ev.test_nelbo(wide, x[:500], y[:500]) < ev.test_nelbo(trained, x[:500], y[:500])
    assert ev.test_nelbo(wide, x[:500], y[:500]) < 100


def test_train_command_reproduces_the_shipped_training_settings():
    from lab_utils.train import parse_args

    for name in ("lab", "wide", "fashion"):
        info = load_pretrained(name).checkpoint_info
        command = ev.train_command(info)
        assert command.startswith("python -m lab_utils.train ")
        args = vars(parse_args(command.split()[3:]))
        for key in ("model", "epochs", "lr", "lr_schedule", "batch_size", "seed", "dataset"):
            assert args[key] == info["train_config"][key], (name, key, command)


def test_results_table_has_a_row_per_model(trained, classifier, small_batch):
    x, y = small_batch
    row = ev.measure(trained, x, y, classifier, ks=(1, 4), iwae_size=16, n_per_label=5)
    assert row["iwae_size"] == 16 and set(row["iwae"]) == {1, 4}
    table = ev.results_table({"lab": row, "again": row})
    lines = table.splitlines()
    assert lines[0].count("|") == lines[2].count("|") == 10  # 9 columns
    assert lines[2].startswith("| lab | mnist | ") and f"{row['test_nelbo']:.1f}" in lines[2]
    per = ev.results_table({"lab": row}, per_label=True).splitlines()
    assert len(per) == 3 and per[2].count("%") == 10
