"""Tests of lab_utils.evaluation: bounds, label fidelity, pictures, diagnostics, the table."""
from __future__ import annotations

import math

import pytest
import torch

from lab_utils import evaluation as ev
from lab_utils.checkpoints import load_pretrained
from lab_utils.classifier import load_classifier
from lab_utils.losses import _gaussian_log_prob, bce, iwae_bound, negative_elbo
from lab_utils.model import CVAE


@pytest.fixture(scope="module")
def trained():
    """The shipped lab CVAE: bounds behave as in theory only for a trained model."""
    return load_pretrained("lab")


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


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
    nelbo = ev.negative_elbo_on(trained, x, y)
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


def test_negative_elbo_on_matches_the_loss_of_the_training_code(trained, small_batch):
    x, y = small_batch
    torch.manual_seed(0)
    with torch.no_grad():
        x_hat, mu, logvar = trained(x, y)
    assert ev.negative_elbo_on(trained, x, y, seed=0) == pytest.approx(
        negative_elbo(x_hat, x, mu, logvar).mean().item(), rel=1e-5)


def test_negative_elbo_on_ignores_labels_of_a_plain_vae(small_batch):
    torch.manual_seed(0)
    vae = CVAE("lab-vae").eval()
    x, y = small_batch
    assert ev.negative_elbo_on(vae, x, y) == ev.negative_elbo_on(vae, x, None)


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
    assert ev.negative_elbo_on(wide, x[:500], y[:500]) < ev.negative_elbo_on(trained, x[:500], y[:500])
    assert ev.negative_elbo_on(wide, x[:500], y[:500]) < 100


def test_train_command_reproduces_the_shipped_training_settings():
    from lab_utils.train import TrainConfig, parse_args

    for name in ("lab", "wide", "fashion", "lab-binarized"):
        info = load_pretrained(name).checkpoint_info
        command = ev.train_command(info)
        assert command.startswith("python -m lab_utils.train ")
        args = vars(parse_args(command.split()[3:]))
        stored = TrainConfig.from_dict(info["train_config"])
        for key in ("model", "epochs", "lr", "lr_schedule", "warmup_steps", "kl_warmup_steps",
                    "init", "beta", "binarize", "val_size", "batch_size", "seed", "dataset"):
            assert args[key] == getattr(stored, key), (name, key, command)
        assert args["plain"] == (not stored.fast), (name, command)
    assert "--binarize" in command  # the last one, lab-binarized, was trained on binarized digits
    info = {"epochs": 3, "train_config": {**TrainConfig().to_dict(), "beta": 4.0, "val_size": 5000,
                                          "kl_warmup_steps": 100}}
    args = vars(parse_args(ev.train_command(info).split()[3:]))
    assert (args["beta"], args["val_size"], args["kl_warmup_steps"]) == (4.0, 5000, 100)


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
    assert "label fidelity" in lines[0] and lines[2].rstrip().endswith("% |")


def test_results_table_without_a_classifier_has_no_fidelity_column(trained, small_batch):
    """Notebook 07 measures nats only: no column of n/a."""
    x, y = small_batch
    row = ev.measure(trained, x, y, None, ks=(1, 4), iwae_size=16)
    lines = ev.results_table({"lab": row}).splitlines()
    assert "fidelity" not in lines[0] and "fidelity" not in lines[-1]
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == 9  # 8 columns


def test_no_measure_is_named_like_a_test():
    # pytest collects any test_* function imported into a test module.
    assert [name for name in dir(ev) if name.startswith("test")] == []
