"""lab_utils.fast computes the same loss, and the same gradients, as the plain model.

Exact (to float64 rounding) in double precision; to float32 tolerance in single
precision, on real MNIST batches, for an untrained and for the shipped model.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lab_utils import fast
from lab_utils.checkpoints import pretrained_path
from lab_utils.labels import expand_labels
from lab_utils.losses import loss_function
from lab_utils.model import CVAE, get_config
from lab_utils.train import initialise


def plain_loss(model, x, y, seed):
    torch.manual_seed(seed)
    x_hat, mu, logvar = model(x, y)
    return loss_function(x_hat, x, mu, logvar)


def fast_loss(model, x, y, seed):
    torch.manual_seed(seed)
    return fast.negative_elbo(model, x, y).sum()


def loss_and_grads(loss_fn, model, x, y, seed=0):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, x, y, seed)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def test_phase_kernel_is_the_same_convolution():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 28, 28, dtype=torch.float64)
    w = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    full = F.conv2d(x, w, padding=1)  # (3, 2, 28, 28)
    phased = F.conv2d(F.pixel_unshuffle(x, 2), fast.phase_weight(w), padding=1)  # (3, 8, 14, 14)
    torch.testing.assert_close(F.pixel_shuffle(phased, 2), full, rtol=0, atol=1e-12)


def test_upsample_kernel_folds_the_nearest_upsampling():
    torch.manual_seed(1)
    x = torch.randn(3, 11, 14, 14, dtype=torch.float64)
    w = torch.randn(3, 11, 3, 3, dtype=torch.float64)
    full = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, padding=1)  # (3, 3, 28, 28)
    folded = F.conv2d(x, fast.upsample_phase_weight(w), padding=1)  # (3, 12, 14, 14)
    torch.testing.assert_close(F.pixel_shuffle(folded, 2), full, rtol=0, atol=1e-12)


def test_label_bias_maps_are_the_convolution_of_the_label_channels():
    torch.manual_seed(2)
    conv = CVAE("lab").encoder.conv[0].double()
    y = torch.arange(10)
    labels = expand_labels(y, 28, 28, 10).double()  # (10, 10, 28, 28)
    expected = F.conv2d(labels, conv.weight[:, 1:], padding=1)  # no bias: the image part has it
    got = fast.label_bias_maps(conv, 10, 28, 28)  # (10, 3, 28, 28)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # Constant inside, different on the zero-padded border.
    assert torch.allclose(got[:, :, 1:-1, 1:-1], got[:, :, 14:15, 14:15].expand_as(got[:, :, 1:-1, 1:-1]))
    assert not torch.allclose(got[:, :, 0, 0], got[:, :, 14, 14])


@pytest.mark.parametrize("name", ["lab", "lab-vae"])
def test_loss_and_gradients_are_exact_in_float64(name, small_batch):
    x, y = small_batch
    torch.manual_seed(3)
    model = CVAE(name).double()
    y = y if model.config.conditional else None
    assert fast.supports(model.config)
    plain, g_plain = loss_and_grads(plain_loss, model, x.double(), y)
    quick, g_fast = loss_and_grads(fast_loss, model, x.double(), y)
    torch.testing.assert_close(quick, plain, rtol=1e-12, atol=0)
    for k in g_plain:
        torch.testing.assert_close(g_fast[k], g_plain[k], rtol=1e-9, atol=1e-12, msg=k)


def _shipped_or_skip():
    from lab_utils import load_pretrained

    if not pretrained_path("lab").exists():
        pytest.skip("the shipped lab checkpoint is missing")
    return load_pretrained("lab", device="cpu")


@pytest.mark.parametrize("which", ["untrained", "label-neutral start", "shipped"])
def test_loss_and_gradients_agree_in_float32_on_real_batches(which, mnist_test, float64_reference):
    """The PyTorch route in float32 against the plain model in float64 (the float32 plain
    model itself drifts in the 4th digit of a bias gradient, a sum of 100,000 terms)."""
    x, y = mnist_test
    x, y = x[1000:1128], y[1000:1128]  # one real training-size batch
    torch.manual_seed(4)
    if which == "shipped":
        model = _shipped_or_skip()
    else:
        model = CVAE("lab")
        if which == "label-neutral start":
            initialise(model, "label-neutral")
    model.train()
    rec, kl, g_ref = float64_reference(model, x, y, 0)
    plain = (rec.sum() + kl.sum()).item()

    def phase_route(model, x, y, seed):
        torch.manual_seed(seed)
        return fast.negative_elbo(model, x, y, compiled=False).sum()

    quick, g_fast = loss_and_grads(phase_route, model, x, y)
    assert abs(quick.item() - plain) <= 1e-5 * plain
    for k in g_ref:
        scale = g_ref[k].abs().max().item()
        err = (g_fast[k].double() - g_ref[k]).abs().max().item()
        assert err <= 1e-4 * scale + 1e-6, (k, err, scale)


def test_models_of_another_shape_fall_back_to_the_plain_forward_pass(small_batch):
    x, y = small_batch
    assert not fast.supports(get_config("wide"))
    torch.manual_seed(5)
    model = CVAE("wide")
    assert torch.equal(fast_loss(model, x, y, 0), plain_loss(model, x, y, 0))


def test_the_fast_route_draws_the_same_noise_as_the_model(small_batch):
    """Same seed, same z: the route changes the arithmetic, not the random stream."""
    x, y = small_batch
    torch.manual_seed(6)
    model = CVAE("lab")
    fast_loss(model, x, y, 11)
    after_fast = torch.rand(1)
    plain_loss(model, x, y, 11)
    assert torch.equal(torch.rand(1), after_fast)
