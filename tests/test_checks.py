"""The exercise checks: a right answer passes, typical wrong answers get the right hint.

Each wrong function below is a mistake students make; the test asserts the
verdict names it and that the check hands back the lab_utils reference.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lab_utils import checks
from lab_utils.labels import expand_labels, one_hot
from lab_utils.evaluation import slant
from lab_utils.evaluation import active_from_means
from lab_utils.handwriting import center_of_mass
from lab_utils.losses import bce, iwae_from_log_weights, kl_divergence, loss_function
from lab_utils.model import Decoder, Encoder

FALLBACK = "using the lab_utils reference for the rest of this notebook"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- correct solutions, as a student would write them -----------------------

def good_expand_labels(y):
    return one_hot(y).view(-1, 10, 1, 1).expand(-1, 10, 28, 28)


def good_encoder_forward(encoder, x, y):
    labels = expand_labels(y)
    h = encoder.conv(torch.cat([x, labels], dim=1))
    h = encoder.fc(h.flatten(1))
    return encoder.fc_mu(h), encoder.fc_logvar(h)


def good_reparameterize(mu, logvar):
    std = torch.exp(0.5 * logvar)
    return mu + std * torch.randn_like(std)


def good_kl_divergence(mu, logvar):
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def good_decoder_forward(decoder, z, y):
    h = decoder.fc(torch.cat([z, one_hot(y)], dim=1))
    return decoder.conv(h.view(-1, 2, 14, 14))


def good_train_step(model, optimizer, x, y):
    x_hat, mu, logvar = model(x, y)
    loss = loss_function(x_hat, x, mu, logvar)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def good_slant(x):
    x = x[:, 0]
    mass = x.sum((1, 2), keepdim=True)
    r = torch.arange(28.0).view(1, 28, 1)
    c = torch.arange(28.0).view(1, 1, 28)
    r = r - (x * r).sum((1, 2), keepdim=True) / mass
    c = c - (x * c).sum((1, 2), keepdim=True) / mass
    return -(x * r * c).sum((1, 2)) / (x * r * r).sum((1, 2))


def good_iwae_bound(log_w):
    return torch.logsumexp(log_w, dim=0) - torch.log(torch.tensor(float(log_w.shape[0])))


def good_active_units(mu, threshold=0.01):
    activity = ((mu - mu.mean(0)) ** 2).mean(0)  # (N, D) -> (D,): the population variance
    return (activity > threshold).nonzero().flatten().tolist()


def good_center_of_mass(image):
    H, W = image.shape
    total = image.sum()
    rows = (image * torch.arange(H).view(H, 1)).sum() / total
    cols = (image * torch.arange(W).view(1, W)).sum() / total
    return rows.item(), cols.item()


CHECKS = {
    # check name: (check, a correct function, the reference it falls back to, number of cases)
    "expand_labels": (checks.check_expand_labels, good_expand_labels, expand_labels, 4),
    "encoder_forward": (checks.check_encoder_forward, good_encoder_forward, Encoder.forward, 4),
    "reparameterize": (checks.check_reparameterize, good_reparameterize,
                       checks.reference_reparameterize, 4),
    "kl_divergence": (checks.check_kl_divergence, good_kl_divergence, kl_divergence, 4),
    "decoder_forward": (checks.check_decoder_forward, good_decoder_forward, Decoder.forward, 4),
    "train_step": (checks.check_train_step, good_train_step, checks.reference_train_step, 2),
    "slant": (checks.check_slant, good_slant, slant, 2),
    "iwae_bound": (checks.check_iwae_bound, good_iwae_bound, iwae_from_log_weights, 3),
    "active_units": (checks.check_active_units, good_active_units, active_from_means, 3),
    "center_of_mass": (checks.check_center_of_mass, good_center_of_mass, center_of_mass, 3),
}

# Solution code that the first tier (the verdict) must never show, per exercise.
KEY_EXPRESSIONS = {
    "expand_labels": [".expand(", "view(B, 10, 1, 1)", "view(-1, 10, 1, 1)"],
    "encoder_forward": ["torch.cat([x, labels], dim=1)", "encoder.fc_mu(h)", "encoder.fc_logvar(h)",
                        "h.flatten(1)"],
    "reparameterize": ["randn_like", "exp(0.5", "mu + std * eps"],
    "kl_divergence": ["1 + logvar", "logvar.exp()", "exp(logvar)", "mu.pow(2)", "sum(dim=1)"],
    "decoder_forward": ["torch.cat([z, one_hot(y)], dim=1)", "view(B, 2, 14, 14)",
                        "view(-1, 2, 14, 14)", "decoder.conv(h"],
    "train_step": ["loss_function(x_hat, x, mu, logvar)", "optimizer.zero_grad()", "loss.backward()",
                   "optimizer.step()", "return loss.item()", 'reduction="sum"'],
    "slant": ["(x * r * c)", "(x * r * r)", "-mu11 / mu02", "arange(28.0).view"],
    "iwae_bound": ["logsumexp(log_w", "math.log(K)", "log(K)"],
    "active_units": ["var(dim=0", "mu.var(", "enumerate(activity"],
    "center_of_mass": ["arange(H)", "image.sum(1)", "image.sum(dim=1)", "/ image.sum()"],
}


@pytest.mark.parametrize("name", CHECKS)
def test_a_correct_function_passes_and_is_returned(name, capsys):
    check, good, _, n = CHECKS[name]
    assert check(good) is good
    out = capsys.readouterr().out
    assert out.startswith(f"✔ check_{name}: all {n} cases passed (")
    assert "Your function is used for the rest of this notebook." in out
    assert FALLBACK not in out
    assert len(out.splitlines()) == 2


@pytest.mark.parametrize("name", CHECKS)
def test_the_reference_passes_its_own_check(name, capsys):
    """The fallback has the exercise's signature, so later cells can call it the same way."""
    check, _, reference, _ = CHECKS[name]
    assert check(reference) is reference
    assert "all" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["reparameterize", "train_step"])
def test_verdict_is_the_same_text_every_run_and_the_notebook_rng_is_untouched(name, capsys):
    """nbval compares the verdict; the notebook's random numbers must not depend on the check."""
    check, good, _, _ = CHECKS[name]
    torch.manual_seed(123)
    check(good)
    after_check = torch.rand(3)
    first = capsys.readouterr().out
    torch.manual_seed(7)
    check(good)
    assert capsys.readouterr().out == first
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after_check)


@pytest.mark.parametrize("name", CHECKS)
def test_not_implemented_yet_is_a_verdict_not_a_traceback(name, capsys):
    check, _, reference, _ = CHECKS[name]

    def todo(*args):
        raise NotImplementedError("Your turn: write it (see the hint above)")

    assert check(todo) is reference
    out = capsys.readouterr().out
    assert f"check_{name}: not implemented yet" in out
    assert FALLBACK in out
    assert "Traceback" not in out
    assert len(out.splitlines()) == 3


@pytest.mark.parametrize("name", CHECKS)
def test_another_exception_is_one_short_line(name, capsys):
    check, _, reference, _ = CHECKS[name]

    def broken(*args):
        raise ValueError("something odd\nsecond line")

    assert check(broken) is reference
    out = capsys.readouterr().out
    assert "raised ValueError: something odd" in out
    assert "second line" not in out and "Traceback" not in out
    assert len(out.splitlines()) <= 7


def test_passing_the_result_instead_of_the_function(capsys):
    assert checks.check_kl_divergence(None) is kl_divergence
    out = capsys.readouterr().out
    assert "expected your function, got a NoneType" in out
    assert "without calling it" in out


# ---- typical mistakes ---------------------------------------------------------

def _std(logvar):
    return torch.exp(0.5 * logvar)


def _encode_from(encoder, h):
    h = encoder.fc(h.flatten(1))
    return encoder.fc_mu(h), encoder.fc_logvar(h)


def _train(loss_of, zero_grad=True, backward=True, step=True, ret="item", late_zero=False):
    """A training step with one slip, built from flags."""
    def fn(model, optimizer, x, y):
        x_hat, mu, logvar = model(x, y)
        loss = loss_of(x_hat, x, mu, logvar)
        if zero_grad and not late_zero:
            optimizer.zero_grad()
        if backward:
            loss.backward()
        if late_zero:
            optimizer.zero_grad(set_to_none=False)
        if step:
            optimizer.step()
        return {"item": loss.item(), "tensor": loss, "none": None}[ret]
    return fn


MISTAKES = {
    # id: (check name, wrong function, [expected verdict/problem text, expected hint text])
    "expand: repeat copies": (
        "expand_labels", lambda y: one_hot(y).view(-1, 10, 1, 1).repeat(1, 1, 28, 28),
        ["3 of 4 cases passed", "a copy, not a view: 62,720 bytes stored, strides (7840, 784, 28, 1)",
         "`.repeat(...)`", "stride 0"]),
    "expand: multiplied by ones": (
        "expand_labels", lambda y: one_hot(y).view(-1, 10, 1, 1) * torch.ones(1, 1, 28, 28),
        ["a copy, not a view"]),
    "expand: one-hot only": (
        "expand_labels", lambda y: one_hot(y),
        ["shape (1, 10), expected (1, 10, 28, 28)", "that is the one-hot matrix"]),
    "expand: no expand": (
        "expand_labels", lambda y: one_hot(y).view(-1, 10, 1, 1),
        ["shape (1, 10, 1, 1), expected (1, 10, 28, 28)", "add .expand(-1, 10, 28, 28)"]),
    "expand: channels last": (
        "expand_labels", lambda y: one_hot(y).view(-1, 1, 1, 10).expand(-1, 28, 28, 10),
        ["shape (1, 28, 28, 10)", "the class axis comes second"]),
    "expand: integer dtype": (
        "expand_labels", lambda y: F.one_hot(y, 10).view(-1, 10, 1, 1).expand(-1, 10, 28, 28),
        ["dtype torch.int64, expected a float tensor", "F.one_hot gives integers"]),
    "expand: view(10, B)": (
        "expand_labels", lambda y: one_hot(y).view(10, -1, 1, 1).expand(10, -1, 28, 28),
        ["images and classes are swapped"]),
    "encoder: mu and logvar swapped": (
        "encoder_forward", lambda e, x, y: good_encoder_forward(e, x, y)[::-1],
        ["1 of 4 cases passed (gradients reach the weights)", "mu and logvar are swapped"]),
    "encoder: logvar from fc_mu": (
        "encoder_forward",
        lambda e, x, y: (good_encoder_forward(e, x, y)[0],) * 2,
        ["mu is right, logvar is wrong", "encoder.fc_logvar(h)"]),
    "encoder: labels forgotten": (
        "encoder_forward", lambda e, x, y: _encode_from(e, e.conv(x)),
        ["raised RuntimeError", "to have 11 channels", "the first conv wants 11 channels"]),
    "encoder: labels before the image": (
        "encoder_forward",
        lambda e, x, y: _encode_from(e, e.conv(torch.cat([expand_labels(y), x], dim=1))),
        ["the label channels come before the image", "torch.cat([x, labels], dim=1)"]),
    "encoder: flattened the whole batch": (
        "encoder_forward",
        lambda e, x, y: (lambda h: (e.fc_mu(h), e.fc_logvar(h)))(
            e.fc(e.conv(torch.cat([x, expand_labels(y)], 1)).view(-1))),
        ["mat1 and mat2 shapes cannot be multiplied", "h.flatten(1)"]),
    "encoder: no gradients": (
        "encoder_forward",
        lambda e, x, y: tuple(t.detach() for t in good_encoder_forward(e, x, y)),
        ["3 of 4 cases passed", "mu or logvar carries no gradient", "don't use torch.no_grad()"]),
    "encoder: a tensor, not a pair": (
        "encoder_forward", lambda e, x, y: good_encoder_forward(e, x, y)[0],
        ["returned a Tensor, expected a pair (mu, logvar)"]),
    "reparam: eps not scaled": (
        "reparameterize", lambda mu, logvar: mu + torch.randn_like(mu),
        ["std of z - mu is [1.00, 1.00] for sigma = [0.50, 2.00]", "eps is not scaled by the std",
         "z does not depend on logvar"]),
    "reparam: exp(logvar) as the std": (
        "reparameterize", lambda mu, logvar: mu + torch.exp(logvar) * torch.randn_like(mu),
        ["std of z - mu is [0.25, 4.01]", "exp(logvar) is the variance sigma^2; the std is exp(0.5 * logvar)"]),
    "reparam: logvar as the std": (
        "reparameterize", lambda mu, logvar: mu + logvar * torch.randn_like(mu),
        ["std of z - mu is [1.39, 1.39]", "logvar is not the std"]),
    "reparam: deterministic z": (
        "reparameterize", lambda mu, logvar: mu.clone(),
        ["1 of 4 cases passed (shape (4, 20))", "z equals mu: no noise was added",
         "a deterministic z is not a sample"]),
    "reparam: the same eps every call": (
        "reparameterize",
        lambda mu, logvar: mu + _std(logvar) * torch.randn(
            mu.shape, generator=torch.Generator().manual_seed(0)),
        ["3 of 4 cases passed", "z is the same on every call", "draw fresh noise"]),
    "reparam: uniform noise": (
        "reparameterize", lambda mu, logvar: mu + _std(logvar) * torch.rand_like(mu),
        ["z is never below mu", "torch.rand_like is uniform"]),
    "reparam: mu forgotten": (
        "reparameterize", lambda mu, logvar: _std(logvar) * torch.randn_like(mu),
        ["mean of z - mu is [-2.01, 0.99]", "z is centred at mu", "z does not depend on mu"]),
    "reparam: torch.normal": (
        "reparameterize", lambda mu, logvar: torch.normal(mu, _std(logvar)),
        ["3 of 4 cases passed", "the gradient with respect to mu is not 1",
         "torch.normal(mu, std) passes no gradient"]),
    "reparam: Normal(...).sample()": (
        "reparameterize", lambda mu, logvar: torch.distributions.Normal(mu, _std(logvar)).sample(),
        ["z carries no gradient", "Normal(...).sample() is also cut off"]),
    "reparam: a fixed shape": (
        "reparameterize", lambda mu, logvar: mu + _std(logvar) * torch.randn(4, 20),
        ["raised RuntimeError", "eps must have the shape of mu: torch.randn_like(std)"]),
    "kl: sign error": (
        "kl_divergence", lambda mu, lv: 0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp(), dim=1),
        ["2 of 4 cases passed", "values wrong: the sign is flipped", "a KL is never negative"]),
    "kl: missing 0.5": (
        "kl_divergence", lambda mu, lv: -torch.sum(1 + lv - mu.pow(2) - lv.exp(), dim=1),
        ["the factor 0.5 is missing"]),
    "kl: summed over the batch": (
        "kl_divergence", lambda mu, lv: -0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp()),
        ["shape (), expected (5,)", "you summed over the batch too", ".sum(dim=1)"]),
    "kl: averaged over the batch": (
        "kl_divergence", lambda mu, lv: (-0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp(), 1)).mean(),
        ["shape (), expected (5,)", "you averaged over the batch"]),
    "kl: summed over dim 0": (
        "kl_divergence", lambda mu, lv: -0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp(), dim=0),
        ["shape (20,), expected (5,)", "you summed over the batch (dim=0)"]),
    "kl: not summed": (
        "kl_divergence", lambda mu, lv: -0.5 * (1 + lv - mu.pow(2) - lv.exp()),
        ["shape (5, 20), expected (5,)", "the latent dims still have to be added up", ".sum(dim=1)"]),
    "kl: sigma^2 = logvar": (
        "kl_divergence", lambda mu, lv: -0.5 * torch.sum(1 + lv - mu.pow(2) - lv, dim=1),
        ["1 of 4 cases passed (gradients reach mu and logvar)", "sigma^2 is taken as logvar"]),
    "kl: sigma^2 = exp(0.5 logvar)": (
        "kl_divergence",
        lambda mu, lv: -0.5 * torch.sum(1 + lv - mu.pow(2) - torch.exp(0.5 * lv), dim=1),
        ["sigma^2 is taken as exp(0.5 * logvar)"]),
    "kl: mu not squared": (
        "kl_divergence", lambda mu, lv: -0.5 * torch.sum(1 + lv - mu - lv.exp(), dim=1),
        ["mu appears where mu^2 should"]),
    "kl: a Python float": (
        "kl_divergence", lambda mu, lv: (-0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp())).item(),
        ["returned a Python float, expected a tensor of shape (3,)", "no .item()"]),
    "kl: detached": (
        "kl_divergence", lambda mu, lv: good_kl_divergence(mu, lv).detach(),
        ["3 of 4 cases passed", "the result carries no gradient"]),
    "decoder: one-hot before z": (
        "decoder_forward",
        lambda d, z, y: d.conv(d.fc(torch.cat([one_hot(y), z], 1)).view(-1, 2, 14, 14)),
        ["values wrong: the one-hot comes before z", "z first"]),
    "decoder: labels forgotten": (
        "decoder_forward", lambda d, z, y: d.conv(d.fc(z).view(-1, 2, 14, 14)),
        ["mat1 and mat2 shapes cannot be multiplied (4x20 and 30x392)",
         "torch.cat([z, one_hot(y)], dim=1)"]),
    "decoder: Sigmoid twice": (
        "decoder_forward", lambda d, z, y: torch.sigmoid(good_decoder_forward(d, z, y)),
        ["the Sigmoid is applied twice", "already ends with a Sigmoid"]),
    "decoder: Sigmoid forgotten": (
        "decoder_forward",
        lambda d, z, y: d.conv[:-1](d.fc(torch.cat([z, one_hot(y)], 1)).view(-1, 2, 14, 14)),
        ["the Sigmoid at the end is missing", "run all of decoder.conv"]),
    "decoder: ReLU forgotten": (
        "decoder_forward",
        lambda d, z, y: d.conv(d.fc[0](torch.cat([z, one_hot(y)], 1)).view(-1, 2, 14, 14)),
        ["the ReLU after the Linear layer is missing", "call decoder.fc(h), all of it"]),
    "decoder: channels last": (
        "decoder_forward",
        lambda d, z, y: d.conv(d.fc(torch.cat([z, one_hot(y)], 1)).view(-1, 14, 14, 2)),
        ["to have 2 channels, but got 14", "channels first"]),
    "decoder: a fixed batch size": (
        "decoder_forward",
        lambda d, z, y: d.conv(d.fc(torch.cat([z, one_hot(y)], 1)).view(4, 2, 14, 14)),
        ["1 of 4 cases passed (batch of 4)", "is invalid for input of size 392", ".view(-1, 2, 14, 14)"]),
    "decoder: flattened output": (
        "decoder_forward", lambda d, z, y: good_decoder_forward(d, z, y).flatten(1),
        ["shape (4, 784), expected (4, 1, 28, 28)", "decoder.conv already gives that shape"]),
    "decoder: z detached": (
        "decoder_forward", lambda d, z, y: good_decoder_forward(d, z.detach(), y),
        ["3 of 4 cases passed", "no gradient for z"]),
    "train: zero_grad forgotten": (
        "train_step", _train(loss_function, zero_grad=False),
        ["1 of 2 cases passed (one step)", "the second step used the first step's gradients too",
         "call optimizer.zero_grad() before loss.backward()"]),
    "train: optimizer.step forgotten": (
        "train_step", _train(loss_function, step=False),
        ["0 of 2", "the parameters did not change", "call optimizer.step() after loss.backward()"]),
    "train: backward forgotten": (
        "train_step", _train(loss_function, backward=False),
        ["the parameters did not change and have no gradients",
         "step needs the gradients that backward computes"]),
    "train: zero_grad after backward": (
        "train_step", _train(loss_function, late_zero=True),
        ["the gradients are all zero", "clearing the gradients after backward wipes them"]),
    "train: returned a tensor": (
        "train_step", _train(loss_function, ret="tensor"),
        ["returned a tensor, expected a Python float", "return loss.item()"]),
    "train: returned nothing": (
        "train_step", _train(loss_function, ret="none"),
        ["returned None", "return loss.item()"]),
    "train: mean per image": (
        "train_step", _train(lambda *a: loss_function(*a) / a[1].shape[0]),
        ["the mean per image; expected the batch's sum", "don't divide by the batch size"]),
    "train: BCE averaged over pixels": (
        "train_step",
        _train(lambda x_hat, x, mu, lv: F.binary_cross_entropy(x_hat, x) + kl_divergence(mu, lv).sum()),
        ["returned 0.81, expected 4360.78", "averaged over the pixels", 'reduction, "mean"',
         "784 times more", 'reduction="sum"']),
    "train: KL forgotten": (
        "train_step", _train(lambda x_hat, x, mu, lv: bce(x_hat, x).sum()),
        ["the KL term is missing", "loss = loss_function(x_hat, x, mu, logvar)"]),
    "train: another loss": (
        "train_step", _train(lambda x_hat, x, mu, lv: 2 * loss_function(x_hat, x, mu, lv)),
        ["expected 4360.78", "loss = loss_function(x_hat, x, mu, logvar)"]),
    "reparam: one eps row for the batch": (
        "reparameterize", lambda mu, logvar: mu + _std(logvar) * torch.randn(1, mu.shape[1]),
        ["the same noise for every image", "torch.randn_like(std)"]),
    "reparam: eps of shape (D,)": (
        "reparameterize", lambda mu, logvar: mu + _std(logvar) * torch.randn(mu.shape[1]),
        ["the same noise for every image"]),
    "kl: KL(p || q)": (
        "kl_divergence", lambda mu, lv: 0.5 * torch.sum(lv + (1 + mu.pow(2)) / lv.exp() - 1, dim=1),
        ["KL(p || q)", "the reverse direction", "KL(q || p)"]),
    "slant: sign flipped": (
        "slant", lambda x: -good_slant(x), ["the sign is flipped", "slant = -mu11 / mu02"]),
    "slant: not normalised": (
        "slant", lambda x: good_slant(x) * _mu02(x), ["not divided by mu02"]),
    "slant: divided by the mass": (
        "slant", lambda x: good_slant(x) * _mu02(x) / x.sum((1, 2, 3)), ["divided by the mass"]),
    "slant: (N, 1)": ("slant", lambda x: good_slant(x)[:, None], ["shape (6, 1), expected (6,)"]),
    "slant: per column": (
        "slant", lambda x: good_slant(x)[:, None].expand(-1, 28), ["one slant per column"]),
    "iwae: log of the mean of exp": (
        "iwae_bound", lambda lw: lw.exp().mean(0).log(), ["inf or nan", "underflows"]),
    "iwae: mean of log_w (the ELBO)": (
        "iwae_bound", lambda lw: lw.mean(0), ["that is the ELBO estimate"]),
    "iwae: - log K forgotten": (
        "iwae_bound", lambda lw: torch.logsumexp(lw, 0), ["the - log K is missing"]),
    "iwae: the wrong dim": (
        "iwae_bound", lambda lw: torch.logsumexp(lw, 1) - torch.log(torch.tensor(lw.shape[1] * 1.0)),
        ["the K samples are the first axis"]),
    "iwae: max instead of logsumexp": (
        "iwae_bound", lambda lw: lw.max(0).values, ["the largest log weight, not the logsumexp"]),
    "units: the sd, not the variance": (
        "active_units", lambda mu: (mu.std(0) > 0.01).nonzero().flatten().tolist(),
        ["the standard deviation compared with 0.01"]),
    "units: the mean square": (
        "active_units", lambda mu: (mu.pow(2).mean(0) > 0.01).nonzero().flatten().tolist(),
        ["the mean square of mu, not its variance"]),
    "units: the count": (
        "active_units", lambda mu: len(active_from_means(mu)), ["expected the list of active dimensions"]),
    "units: a mask": ("active_units", lambda mu: mu.var(0) > 0.01, ["booleans, one per dimension"]),
    "units: over the images' dimensions": (
        "active_units", lambda mu: (mu.var(1) > 0.01).nonzero().flatten().tolist(),
        ["computed per image (over dim 1)"]),
    "com: (col, row)": (
        "center_of_mass", lambda im: center_of_mass(im)[::-1], ["(column, row) instead of (row, column)"]),
    "com: unweighted ink pixels": (
        "center_of_mass", lambda im: center_of_mass((im > 0.5).float()), ["the unweighted mean"]),
    "com: off by a pixel": (
        "center_of_mass", lambda im: tuple(v + 1 for v in center_of_mass(im)), ["off by one pixel"]),
}


def _mu02(x):
    x = x[:, 0]
    r = torch.arange(28.0).view(1, 28, 1)
    r = r - (x * r).sum((1, 2), keepdim=True) / x.sum((1, 2), keepdim=True)
    return (x * r * r).sum((1, 2))


def test_slant_is_the_notebook_06_measure():
    """evaluation.slant gives 06's numbers: 0 upright, 0.5 px per row for the drawn stroke."""
    bars = torch.zeros(2, 1, 28, 28)
    for row in range(4, 24):
        bars[0, 0, row, 13:16] = 1
        right = (24 - row) // 2
        bars[1, 0, row, 8 + right:11 + right] = 1
    s = slant(bars)
    assert s.shape == (2,) and abs(s[0].item()) < 1e-6 and abs(s[1].item() - 0.5) < 0.03


def test_iwae_from_log_weights_survives_log_weights_near_minus_100():
    log_w = torch.full((10, 3), -120.0)
    assert torch.allclose(iwae_from_log_weights(log_w), torch.full((3,), -120.0))
    assert torch.isinf(log_w.exp().mean(0).log()).all()  # why logsumexp: the naive route fails
    lw = torch.randn(7, 4, dtype=torch.float64)
    assert torch.allclose(iwae_from_log_weights(lw), lw.exp().mean(0).log())


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_typical_mistake_gets_its_hint_and_the_reference(mistake, capsys):
    """The verdict names the mistake; its text or hint level 2 says what to change."""
    name, wrong, expected = MISTAKES[mistake]
    check, _, reference, n = CHECKS[name]
    assert check(wrong) is reference
    out = capsys.readouterr().out
    assert out.startswith(f"✘ check_{name}: ")
    assert f"of {n} cases passed" in out
    assert out.rstrip().endswith(f"{FALLBACK} ({_dotted(reference)}).")
    assert "not your function" in out
    assert f'checks.hint("{name}", level=2)' in out
    assert "Traceback" not in out
    assert len(out.splitlines()) <= 8, out
    assert not checks.passed(name)
    with pytest.raises(AssertionError, match=name):
        checks.grade(name)
    checks.hint(name, level=2)
    both = out + capsys.readouterr().out
    for text in expected:
        assert text in both, f"{text!r} missing from the verdict and hint 2:\n{both}"


@pytest.mark.parametrize("mistake", MISTAKES)
def test_the_first_tier_shows_no_solution_code(mistake, capsys):
    name, wrong, _ = MISTAKES[mistake]
    CHECKS[name][0](wrong)
    checks.hint(name, level=1)
    out = capsys.readouterr().out
    for key in KEY_EXPRESSIONS[name]:
        assert key not in out, f"{key!r} in the first tier of {name}:\n{out}"


@pytest.mark.parametrize("name", CHECKS)
def test_the_first_tier_of_todo_and_errors_shows_no_solution_code(name, capsys):
    check = CHECKS[name][0]

    def todo(*args):
        raise NotImplementedError

    def broken(*args):
        raise ValueError("odd")

    check(todo)
    check(broken)
    checks.hint(name)
    out = capsys.readouterr().out
    for key in KEY_EXPRESSIONS[name]:
        assert key not in out, f"{key!r} in the first tier of {name}:\n{out}"


@pytest.mark.parametrize("name", CHECKS)
def test_passed_grade_and_the_solution_tier(name, capsys):
    check, good, _, _ = CHECKS[name]
    check(good)
    assert checks.passed(name) and checks.passed(f"check_{name}")
    checks.grade(name)  # no AssertionError
    checks.hint(name, level=3)
    out = capsys.readouterr().out
    assert any(k in out for k in KEY_EXPRESSIONS[name]), out


def test_grade_before_any_check_and_unknown_names():
    checks._RESULTS.pop("slant", None)
    assert not checks.passed("slant")
    with pytest.raises(AssertionError, match="has not run"):
        checks.grade("slant")
    with pytest.raises(ValueError):
        checks.hint("no_such_exercise")


def _dotted(reference) -> str:
    return {
        expand_labels: "lab_utils.labels.expand_labels",
        Encoder.forward: "lab_utils.model.Encoder.forward",
        checks.reference_reparameterize: "lab_utils.model.CVAE.reparameterize",
        kl_divergence: "lab_utils.losses.kl_divergence",
        Decoder.forward: "lab_utils.model.Decoder.forward",
        checks.reference_train_step: "lab_utils.train.train_step",
        slant: "lab_utils.evaluation.slant",
        iwae_from_log_weights: "lab_utils.losses.iwae_from_log_weights",
        active_from_means: "lab_utils.evaluation.active_from_means",
        center_of_mass: "lab_utils.handwriting.center_of_mass",
    }[reference]


def test_the_returned_reference_works_on_real_digits(small_batch, lab_model):
    """After a failed check, later cells call the reference exactly like their own function."""
    x, y = small_batch[0][:8], small_batch[1][:8]
    encode = checks.check_encoder_forward(lambda *a: None)
    mu, logvar = encode(lab_model.encoder, x, y)
    ref_mu, ref_logvar = lab_model.encode(x, y)
    assert torch.equal(mu, ref_mu) and torch.equal(logvar, ref_logvar)
    decode = checks.check_decoder_forward(lambda *a: None)
    z = checks.check_reparameterize(lambda *a: None)(mu, logvar)
    assert decode(lab_model.decoder, z, y).shape == (8, 1, 28, 28)
    step = checks.check_train_step(lambda *a: None)
    optimizer = torch.optim.Adam(lab_model.parameters(), lr=1e-3)
    loss = step(lab_model, optimizer, x, y)
    assert isinstance(loss, float) and 8 * 100 < loss < 8 * 800  # nats per batch of 8 digits
