"""lab_utils.kernels: the compiled convolution stacks compute the plain model's
loss and gradients (float32 tolerance, real MNIST batches), whatever the batch
size and the thread count; they build atomically, and training falls back to
the PyTorch route, with the reason given, where they cannot be had.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from lab_utils import fast, kernels
from lab_utils.checkpoints import pretrained_path
from lab_utils.losses import bce, kl_divergence
from lab_utils.model import CVAE, get_config
from lab_utils.train import TrainConfig, initialise, train


@pytest.fixture
def lib():
    """The loaded kernels; without them the test skips, or fails where
    CVAE_LAB_REQUIRE_KERNELS=1 (CI: its machines have g++)."""
    if kernels.load() is None:
        reason = f"the compiled kernels are not available here: {kernels.why_not()}"
        if os.environ.get("CVAE_LAB_REQUIRE_KERNELS") == "1":
            pytest.fail(reason + " (CVAE_LAB_REQUIRE_KERNELS=1)")
        pytest.skip(reason)
    return kernels.load()


@pytest.fixture
def fresh_state():
    """Forget the loaded library before and after: the test changes how it loads."""
    kernels._reset()
    yield
    kernels._reset()


def plain_terms(model, x, y, seed):
    torch.manual_seed(seed)
    x_hat, mu, logvar = model(x, y)
    return bce(x_hat, x), kl_divergence(mu, logvar)


def compiled_terms(model, x, y, seed):
    torch.manual_seed(seed)
    return fast.loss_terms(model, x, y, compiled=True)


def terms_and_grads(fn, model, x, y, seed=0):
    model.zero_grad(set_to_none=True)
    rec, kl = fn(model, x, y, seed)
    (rec.sum() + kl.sum()).backward()
    return rec.detach(), kl.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def _model(which: str) -> CVAE:
    if which == "shipped":
        from lab_utils import load_pretrained

        if not pretrained_path("lab").exists():
            pytest.skip("the shipped lab checkpoint is missing")
        return load_pretrained("lab", device="cpu").train()
    torch.manual_seed(4)
    model = CVAE("lab-vae" if which == "lab-vae" else "lab")
    if which == "label-neutral start":
        initialise(model, "label-neutral")
    return model


@pytest.mark.parametrize("which", ["untrained", "label-neutral start", "shipped", "lab-vae"])
@pytest.mark.parametrize("batch", [128, 37, 1])  # 37 and 1: chunks of 16 lanes, part empty
def test_compiled_loss_and_gradients_match_the_plain_model(lib, which, batch, mnist_test,
                                                          float64_reference):
    x, y = mnist_test
    x, y = x[2000:2000 + batch], y[2000:2000 + batch]  # real test digits
    model = _model(which)
    y = y if model.config.conditional else None
    assert fast.uses_kernels(model, x)
    rec_p, kl_p, g_ref = float64_reference(model, x, y, 0)  # the plain model, in float64
    rec_c, kl_c, g_comp = terms_and_grads(compiled_terms, model, x, y)
    # per image: the BCE sums 784 pixels in another order, with its own exp and log
    torch.testing.assert_close(rec_c.double(), rec_p, rtol=2e-6, atol=2e-3)
    torch.testing.assert_close(kl_c.double(), kl_p, rtol=1e-6, atol=1e-4)
    for k in g_ref:
        scale = g_ref[k].abs().max().item()
        err = (g_comp[k].double() - g_ref[k]).abs().max().item()
        assert err <= 1e-4 * scale + 1e-6, (k, err, scale)


def test_the_float32_plain_model_agrees_with_the_float64_reference(lab_model, mnist_test,
                                                                  float64_reference):
    """The reference the test above uses is the plain model: checked against its float32 self."""
    x, y = mnist_test
    x, y = x[:64], y[:64]
    rec64, kl64, _ = float64_reference(lab_model, x, y, 3)
    rec32, kl32 = plain_terms(lab_model, x, y, 3)
    torch.testing.assert_close(rec32.detach().double(), rec64, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(kl32.detach().double(), kl64, rtol=1e-5, atol=1e-4)


def test_the_compiled_route_is_taken_only_where_it_applies(lib, mnist_test):
    x, _ = mnist_test
    assert fast.uses_kernels(CVAE("lab"), x[:8])
    assert not fast.uses_kernels(CVAE("lab"), x[:8].double())  # float32 only
    assert not fast.uses_kernels(CVAE("wide"), x[:8])  # the kernels are written for the lab shape
    assert kernels.supports(get_config("lab-vae")) and not kernels.supports(get_config("wide"))


def _kernel_outputs(x, y, threads):
    """The two kernels' outputs and input gradients for fixed inputs, at a thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(7)
        model = CVAE("lab")
        first, second = model.encoder.conv[0], model.encoder.conv[2]
        h2 = kernels.encoder_convs(x, y, first, second)
        h0 = torch.rand(x.shape[0], 392, requires_grad=True)
        convs = [m for m in model.decoder.conv if isinstance(m, torch.nn.Conv2d)]
        loss = kernels.decoder_bce(h0, x, convs)
        (h2.sum() + loss.sum()).backward()
        grads = [p.grad for p in (h0, first.weight, first.bias, second.weight, second.bias,
                                         *model.decoder.parameters())
                 if p.grad is not None]
        return [h2.detach(), loss.detach(), *grads]
    finally:
        torch.set_num_threads(before)


def test_the_kernels_give_the_same_bits_on_one_thread_and_on_two(lib, mnist_test):
    """Every sum over the batch runs per chunk of 16 images, then over chunks in order."""
    x, y = mnist_test
    one, two = _kernel_outputs(x[:100], y[:100], 1), _kernel_outputs(x[:100], y[:100], 2)
    assert len(one) == len(two) == 13
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_saturated_pixels_cost_what_torch_binary_cross_entropy_says(lib, mnist_test):
    """Logits of +-200: the sigmoid is exactly 1 or 0, a log is -inf, and torch clamps it at -100."""
    x, _ = mnist_test
    x = x[:20]
    torch.manual_seed(8)
    convs = [m for m in CVAE("lab").decoder.conv if isinstance(m, torch.nn.Conv2d)]
    h0 = torch.rand(20, 392)
    with torch.no_grad():
        convs[-1].weight.zero_()
        for logit in (200.0, -200.0):
            convs[-1].bias.fill_(logit)
            got = kernels.decoder_bce(h0, x, convs)  # (20,)
            p = torch.full_like(x, 1.0 if logit > 0 else 0.0)
            expected = F.binary_cross_entropy(p, x, reduction="none").flatten(1).sum(1)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)  # sums of ~60,000 nats
            assert expected.min() > 1000  # the clamp was reached: 100 nats per wrong black pixel


def test_training_through_the_kernels_follows_the_phase_route(lib, mnist_test):
    """Sixteen Adam steps each way from the same weights: the losses agree to float tolerance."""
    x, y = mnist_test
    x, y = x[:960], y[:960]
    histories = []
    for compiled in (True, False):
        with kernels.switched(compiled):
            assert fast.uses_kernels(CVAE("lab"), x) is compiled
            torch.manual_seed(9)
            model = initialise(CVAE("lab"), "label-neutral")
            h = train(model, x, y, TrainConfig(epochs=2, batch_size=128, log_every=1, seed=3),
                      progress=False, verbose=False)
            histories.append(torch.tensor(h.loss))
    assert len(histories[0]) == 16
    torch.testing.assert_close(histories[0], histories[1], rtol=2e-4, atol=0)


def test_nan_weights_give_a_nan_loss_not_a_finite_one(lib, mnist_test):
    """A run whose weights went NaN must not log a finite loss (torch's clamp would read 100)."""
    x, y = mnist_test
    model = CVAE("lab")
    with torch.no_grad():
        model.decoder.conv[-2].bias.fill_(float("nan"))  # the last convolution's bias
    rec, _ = fast.loss_terms(model, x[:20], y[:20], compiled=True)
    assert torch.isnan(rec).all()


def test_bad_labels_and_tensors_are_refused_with_a_reason(lib, mnist_test):
    x, y = mnist_test
    x, y = x[:20], y[:20].clone()
    model = CVAE("lab")
    first, second = model.encoder.conv[0], model.encoder.conv[2]
    with pytest.raises(ValueError, match="class indices in 0..9"):
        kernels.encoder_convs(x, torch.full((20,), 10), first, second)  # would index past the maps
    with pytest.raises(ValueError, match=r"\(20,\) class indices"):
        kernels.encoder_convs(x, y[:5], first, second)
    with pytest.raises(ValueError, match="needs labels"):
        kernels.encoder_convs(x, None, first, second)
    with pytest.raises(TypeError, match="float32 tensors on the CPU"):
        kernels.encoder_convs(x.double(), y, first, second)
    convs = [m for m in model.decoder.conv if isinstance(m, torch.nn.Conv2d)]
    with pytest.raises(ValueError, match=r"\(B, 392\)"):
        kernels.decoder_bce(torch.rand(19, 392), x, convs)
    assert not fast.uses_kernels(CVAE("lab").double(), x)  # float64 weights take the PyTorch route


def test_a_damaged_cached_library_is_built_again(fresh_state, monkeypatch, tmp_path):
    if kernels.shutil.which(kernels.compiler().split()[0]) is None:
        pytest.skip(f"no {kernels.compiler()} here")
    monkeypatch.setenv("CVAE_LAB_CACHE", str(tmp_path))
    path = kernels.library_path(kernels.compiler())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # what a crash in the middle of an old, non-atomic write could leave
    assert kernels.load() is not None, kernels.why_not()
    assert path.stat().st_size > 10_000


def test_a_compiler_with_arguments_is_accepted(fresh_state, monkeypatch, tmp_path):
    if kernels.shutil.which("g++") is None:
        pytest.skip("no g++ here")
    monkeypatch.setenv("CVAE_LAB_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "g++ -Wall")  # as `ccache g++` would be
    assert kernels.load() is not None, kernels.why_not()


def test_switched_off_by_the_environment_the_pytorch_route_runs(fresh_state, monkeypatch, mnist_test):
    monkeypatch.setenv("CVAE_LAB_KERNELS", "0")
    assert kernels.load() is None
    assert "CVAE_LAB_KERNELS=0" in kernels.why_not()
    x, y = mnist_test
    model = CVAE("lab")
    assert not fast.uses_kernels(model, x[:4])
    rec, kl = fast.loss_terms(model, x[:4], y[:4])  # the phase route
    assert rec.shape == kl.shape == (4,)


def test_without_a_compiler_the_reason_says_what_to_install(fresh_state, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-cvae")
    assert kernels.load() is None
    why = kernels.why_not()
    assert "no C++ compiler" in why and "no-such-compiler-cvae" in why and "g++" in why


def test_a_failed_build_leaves_no_file_and_says_why(fresh_state, monkeypatch, tmp_path):
    monkeypatch.setenv("CVAE_LAB_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    assert kernels.load() is None
    assert "could not build" in kernels.why_not() and "false failed" in kernels.why_not()
    assert list(tmp_path.iterdir()) == []  # no library, no half-written temporary


def test_the_build_is_cached_under_a_name_of_the_source_and_cpu(fresh_state, monkeypatch, tmp_path):
    if kernels.shutil.which(kernels.compiler()) is None:
        pytest.skip(f"no {kernels.compiler()} here")
    monkeypatch.setenv("CVAE_LAB_CACHE", str(tmp_path))
    assert kernels.load() is not None
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [kernels.library_path(kernels.compiler()).name]
    assert files[0].name.startswith("kernels-") and files[0].suffix == ".so"
    stamp = files[0].stat().st_mtime_ns
    kernels._reset()
    assert kernels.load() is not None  # a second process: loads the cached file, builds nothing
    assert files[0].stat().st_mtime_ns == stamp
