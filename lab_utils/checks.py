"""Friendly checks for the "Your turn" exercises of notebooks 01-05.

Each ``check_*`` runs a student's function on a few small cases against the
``lab_utils`` reference, prints a short verdict (what passed, what failed, a
hint that names the usual mistake) and returns the function to use from then
on: the student's own if every case passed, else the reference. So a notebook
runs top to bottom even while an exercise is unsolved::

    my_expand_labels = checks.check_expand_labels(my_expand_labels)

The checks touch nothing outside themselves: they build their own small
tensors and models on the CPU, and run inside ``torch.random.fork_rng`` so the
notebook's random stream is the same whether or not a check ran (and a
correct function always prints the same text, which nbval compares).
Used by notebooks 01-05; the convention is in the README ("For instructors").
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .labels import NUM_CLASSES, expand_labels, one_hot
from .losses import kl_divergence, loss_function
from .model import CONFIGS, CVAE, Decoder, Encoder
from .train import train_step as reference_train_step  # the one implementation

__all__ = [
    "check_expand_labels", "check_encoder_forward", "check_reparameterize",
    "check_kl_divergence", "check_decoder_forward", "check_train_step",
    "reference_reparameterize", "reference_train_step",
]

PASS, FAIL, TODO = "✔", "✘", "✎"
MAX_FAILURES_SHOWN = 2
MAX_HINTS_SHOWN = 2


# --------------------------------------------------------------------------
# The references a failed check hands back (same signature as the exercise).
# --------------------------------------------------------------------------

def reference_reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``CVAE.reparameterize`` as a plain function ``(mu, logvar) -> z``.

    The method never touches ``self``, so this is the one implementation, not a copy.
    """
    return CVAE.reparameterize(None, mu, logvar)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# The machinery shared by all checks.
# --------------------------------------------------------------------------

class Mistake(Exception):
    """A case found a wrong result: ``problem`` says what, ``hint`` the likely cause."""

    def __init__(self, problem: str, hint: str = ""):
        super().__init__(problem)
        self.problem = problem
        self.hint = hint


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _hint_for_exception(exc: BaseException, hints: list[tuple[str, str]]) -> str:
    """The first hint whose key occurs in the exception's message."""
    message = str(exc)
    for key, hint in hints:
        if key in message:
            return hint
    return "read the error message above; run your function on a small input to see where it fails"


def _run_check(
    name: str,
    fn: Callable,
    cases: list[tuple[str, Callable]],
    reference: Callable,
    reference_name: str,
    exception_hints: list[tuple[str, str]] = (),
) -> Callable:
    """Run ``cases`` on ``fn``, print the verdict, return ``fn`` or ``reference``.

    A case is ``(label, run)``; ``run(fn)`` raises :class:`Mistake` when the
    result is wrong. NotImplementedError means "not implemented yet"; any
    other exception becomes a one-line failure, never a traceback.
    """
    fallback = f"  → using the lab_utils reference for the rest of this notebook ({reference_name})."
    if not callable(fn):
        print(f"{FAIL} {name}: expected your function, got a {type(fn).__name__}.")
        print(f"  Hint: pass the function itself, e.g. {name}(my_function), without calling it.")
        print(fallback)
        return reference
    passed: list[str] = []
    failures: list[tuple[str, str, str]] = []
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        for label, run in cases:
            torch.manual_seed(0)
            try:
                run(fn)
            except NotImplementedError:
                print(f"{TODO} {name}: not implemented yet (your function raises NotImplementedError).")
                print("  Replace the `raise NotImplementedError(...)` line with your code, then run "
                      "this cell again.")
                print(fallback)
                return reference
            except Mistake as m:
                failures.append((label, m.problem, m.hint))
            except Exception as exc:  # the student's code failed: one line, no traceback
                failures.append((label, f"raised {type(exc).__name__}: {_first_line(exc)}",
                                 _hint_for_exception(exc, list(exception_hints))))
            else:
                passed.append(label)
    if not failures:
        print(f"{PASS} {name}: all {len(cases)} cases passed ({'; '.join(passed)}).")
        print("  Well done! Your function is used for the rest of this notebook.")
        return fn
    done = f" ({'; '.join(passed)})" if passed else ""
    print(f"{FAIL} {name}: {len(passed)} of {len(cases)} cases passed{done}.")
    grouped: dict[str, list[str]] = {}  # the same problem in several cases: one line
    for label, problem, _ in failures:
        grouped.setdefault(problem, []).append(label)
    for problem, labels in list(grouped.items())[:MAX_FAILURES_SHOWN]:
        print(f"  {FAIL} {', '.join(labels)}: {problem}")
    hidden = sum(len(labels) for labels in list(grouped.values())[MAX_FAILURES_SHOWN:])
    if hidden:
        print(f"  ... and {hidden} more failed.")
    hints = list(dict.fromkeys(h for _, _, h in failures if h))[:MAX_HINTS_SHOWN]
    for hint in hints:
        print(f"  Hint: {hint}")
    print(fallback)
    return reference


def _tensor(out, what: str, hint: str) -> torch.Tensor:
    """``out`` if it is a tensor, else a Mistake saying what came back instead."""
    if isinstance(out, torch.Tensor):
        return out
    raise Mistake(f"{what} is a {type(out).__name__}, not a torch.Tensor", hint)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Same shape and values (as float32, detached, on the CPU)."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=rtol)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{(a.detach().float().cpu() - b.detach().float().cpu()).abs().max().item():.3g}"


def _no_grad_hint(what: str) -> str:
    return (f"no gradient reached {what}: don't use torch.no_grad(), .detach(), .item(), "
            f".numpy() or .data inside the function; training needs the gradients")


# --------------------------------------------------------------------------
# 01: expand_labels
# --------------------------------------------------------------------------

def _expand_labels_case(labels: list[int], view: bool = False):
    def run(fn):
        y = torch.tensor(labels)
        out = _tensor(fn(y.clone()), "the result",
                      "return the expanded label tensor of shape (B, 10, 28, 28)")
        _check_expanded(out, y)
        if view:
            _check_is_view(out)
    return run


def _check_expanded(out: torch.Tensor, y: torch.Tensor) -> None:
    """Shape, dtype and values of an expand_labels result, or a Mistake naming the slip."""
    B = y.shape[0]
    want = (B, NUM_CLASSES, 28, 28)
    if _shape(out) != want:
        got = _shape(out)
        if got == (B, NUM_CLASSES):
            hint = ("that is the one-hot matrix: reshape it with .view(B, 10, 1, 1), "
                    "then .expand(-1, 10, 28, 28)")
        elif got == (B, NUM_CLASSES, 1, 1):
            hint = "add .expand(-1, 10, 28, 28) after the .view(B, 10, 1, 1)"
        elif got == (NUM_CLASSES, B, 28, 28):
            hint = "images and classes are swapped: .view(B, 10, 1, 1), not .view(10, B, 1, 1)"
        elif got == (B, 28, 28, NUM_CLASSES):
            hint = "the class axis comes second: (B, 10, 28, 28), as PyTorch images are (B, C, H, W)"
        else:
            hint = "one 28x28 map per class and image: shape (B, 10, 28, 28)"
        raise Mistake(f"shape {got}, expected {want}", hint)
    if not out.dtype.is_floating_point:
        raise Mistake(
            f"dtype {out.dtype}, expected a float tensor",
            "the label maps are concatenated with float images: make the one-hot float "
            "(F.one_hot gives integers; add .float(), or use lab_utils' one_hot)")
    ref = expand_labels(y)
    if not _close(out, ref):
        if B == NUM_CLASSES and _close(out, ref.transpose(0, 1)):
            hint = "images and classes are swapped: .view(B, 10, 1, 1), not .view(10, B, 1, 1)"
        else:
            hint = ("for image b, channel y[b] must be all ones and the other 9 channels "
                    "all zeros")
        raise Mistake("shape right, values wrong", hint)


def _check_is_view(out: torch.Tensor) -> None:
    """A Mistake unless ``out`` stores fewer numbers than it shows (a view made by expand)."""
    stored = out.untyped_storage().nbytes()
    if stored >= out.numel() * out.element_size():
        raise Mistake(
            f"a copy, not a view: {stored:,} bytes stored, strides {tuple(out.stride())}",
            "`.repeat(...)` (or `* torch.ones(...)`, `.clone()`, `.contiguous()`) copies the "
            "one-hot into every pixel; `.expand(-1, 10, 28, 28)` makes a view with stride 0 "
            "on the 28x28 axes: no copy")


def check_expand_labels(fn: Callable) -> Callable:
    """Check ``fn(y: (B,) long) -> (B, 10, 28, 28)``, a view made with ``expand``.

    Exercise of ``01_label_expansion.ipynb``; reference ``lab_utils.labels.expand_labels``.
    """
    cases = [
        ("label [3]", _expand_labels_case([3])),
        ("all ten labels, shuffled", _expand_labels_case([3, 1, 4, 5, 9, 2, 6, 8, 7, 0])),
        ("labels [7, 7, 0, 2, 9]", _expand_labels_case([7, 7, 0, 2, 9])),
        ("a view, not a copy", _expand_labels_case([1, 4], view=True)),
    ]
    hints = [
        ("shape '[", "use .view(-1, 10, 1, 1) (or .view(B, 10, 1, 1) with B = y.shape[0])"),
        ("expanded size", "expand keeps the sizes of the view and grows only its size-1 axes: "
                          ".view(B, 10, 1, 1).expand(-1, 10, 28, 28)"),
        ("scatter", "one_hot needs integer labels of shape (B,)"),
    ]
    return _run_check("check_expand_labels", fn, cases, expand_labels,
                      "lab_utils.labels.expand_labels", hints)


# --------------------------------------------------------------------------
# 02: the encoder's forward pass
# --------------------------------------------------------------------------

def _pair(out, names: str, hint: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpack a returned ``(a, b)`` pair of tensors, or say what came back."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        got = (f"a {type(out).__name__} of length {len(out)}"
               if isinstance(out, (tuple, list)) else f"a {type(out).__name__}")
        raise Mistake(f"returned {got}, expected a pair ({names})", hint)
    first, second = names.split(", ")
    return _tensor(out[0], first, hint), _tensor(out[1], second, hint)


def _encoder_swapped_labels(encoder: Encoder, x: torch.Tensor, y: torch.Tensor):
    """The encoder with the label channels put *before* the image (a typical slip)."""
    labels = expand_labels(y).to(x.dtype)  # (B, 10, 28, 28)
    h = encoder.conv(torch.cat([labels, x], dim=1))  # (B, 10 + 1, 28, 28) -> (B, 1, 28, 28)
    h = encoder.fc(h.flatten(1))  # (B, 784) -> (B, 400)
    return encoder.fc_mu(h), encoder.fc_logvar(h)


def _new_encoder(seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(CONFIGS["lab"])


def _encoder_case(B: int, seed: int):
    def run(fn):
        encoder = _new_encoder(seed)
        x = torch.rand(B, 1, 28, 28)
        y = torch.randint(0, NUM_CLASSES, (B,))
        mu, logvar = _pair(fn(encoder, x, y), "mu, logvar",
                           "end with `return encoder.fc_mu(h), encoder.fc_logvar(h)`")
        want = (B, encoder.config.latent_dim)
        for name, t in (("mu", mu), ("logvar", logvar)):
            if _shape(t) != want:
                raise Mistake(
                    f"{name} has shape {_shape(t)}, expected {want}",
                    "flatten each image on its own, h.flatten(1) or h.view(B, -1) with "
                    "B = x.shape[0], never h.view(-1) or a fixed batch size")
        with torch.no_grad():
            ref_mu, ref_logvar = encoder(x, y)
            alt_mu, alt_logvar = _encoder_swapped_labels(encoder, x, y)
        if _close(mu, ref_mu) and _close(logvar, ref_logvar):
            return
        if _close(mu, ref_logvar) and _close(logvar, ref_mu):
            raise Mistake("mu and logvar are swapped",
                          "mu = encoder.fc_mu(h), logvar = encoder.fc_logvar(h)")
        if _close(mu, ref_mu):
            raise Mistake("mu is right, logvar is wrong",
                          "logvar = encoder.fc_logvar(h), from the same h as mu")
        if _close(logvar, ref_logvar):
            raise Mistake("logvar is right, mu is wrong", "mu = encoder.fc_mu(h)")
        if _close(mu, alt_mu) and _close(logvar, alt_logvar):
            raise Mistake("values wrong: the label channels come before the image",
                          "torch.cat([x, labels], dim=1): the image first, then the 10 label "
                          "channels, the order the encoder was built for")
        raise Mistake(
            f"values differ from the encoder's own forward (max difference {_max_diff(mu, ref_mu)})",
            "follow the steps: expand_labels(y) -> torch.cat([x, labels], dim=1) -> encoder.conv "
            "-> h.flatten(1) -> encoder.fc -> encoder.fc_mu and encoder.fc_logvar")
    return run


def _encoder_grad_case(fn):
    encoder = _new_encoder(1)
    x = torch.rand(3, 1, 28, 28)
    y = torch.tensor([0, 5, 9])
    mu, logvar = _pair(fn(encoder, x, y), "mu, logvar",
                       "end with `return encoder.fc_mu(h), encoder.fc_logvar(h)`")
    if not (mu.requires_grad and logvar.requires_grad):
        raise Mistake("mu or logvar carries no gradient", _no_grad_hint("the encoder"))
    (mu.sum() + logvar.sum()).backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None]
    if missing:
        raise Mistake(f"no gradient for {', '.join(missing[:3])}", _no_grad_hint("these weights"))


def check_encoder_forward(fn: Callable) -> Callable:
    """Check ``fn(encoder, x, y) -> (mu, logvar)`` against ``Encoder.forward``.

    Exercise of ``02_encoder.ipynb``: the forward pass written with
    ``encoder.conv``, ``encoder.fc``, ``encoder.fc_mu`` and ``encoder.fc_logvar``.
    """
    cases = [
        ("batch of 4", _encoder_case(4, 0)),
        ("batch of 1", _encoder_case(1, 2)),
        ("batch of 16", _encoder_case(16, 3)),
        ("gradients reach the weights", _encoder_grad_case),
    ]
    hints = [
        ("channels", "the first conv wants 11 channels: the image (1) and expand_labels(y) (10), "
                     "joined with torch.cat([x, labels], dim=1)"),
        ("Sizes of tensors must match", "concatenate along the channel axis: torch.cat([x, labels], dim=1)"),
        ("mat1 and mat2", "flatten each feature map to (B, 784) with h.flatten(1) before encoder.fc"),
        ("shape '[", "flatten with h.flatten(1) or h.view(x.shape[0], -1)"),
    ]
    return _run_check("check_encoder_forward", fn, cases, Encoder.forward,
                      "lab_utils.model.Encoder.forward", hints)


# --------------------------------------------------------------------------
# 03: reparameterize and the KL term
# --------------------------------------------------------------------------

_STD_HINT = "z = mu + std * eps with std = torch.exp(0.5 * logvar) and eps = torch.randn_like(std)"


def _reparam_shape_case(fn):
    mu, logvar = torch.randn(4, 20), 0.5 * torch.randn(4, 20)
    z = _tensor(fn(mu, logvar), "z", f"return z, a tensor: {_STD_HINT}")
    if _shape(z) != (4, 20):
        raise Mistake(f"z has shape {_shape(z)}, expected (4, 20)",
                      "z has the shape of mu: draw eps with torch.randn_like(std)")
    if z.dtype != mu.dtype:
        raise Mistake(f"z has dtype {z.dtype}, expected {mu.dtype}",
                      "torch.randn_like(std) gives eps the dtype (and device) of std")


def _reparam_noise_case(fn):
    mu, logvar = torch.randn(4, 20), 0.5 * torch.randn(4, 20)
    z1 = _tensor(fn(mu, logvar), "z", _STD_HINT)
    z2 = _tensor(fn(mu, logvar), "z", _STD_HINT)
    if _shape(z1) != _shape(mu):
        raise Mistake(f"z has shape {_shape(z1)}, expected {_shape(mu)}", _STD_HINT)
    if _close(z1, mu, atol=1e-7, rtol=0):
        raise Mistake("z equals mu: no noise was added",
                      f"a deterministic z is not a sample; {_STD_HINT}")
    if _close(z1, z2, atol=0, rtol=0):
        raise Mistake("z is the same on every call",
                      "draw a fresh eps inside the function on every call (torch.randn_like(std)); "
                      "don't seed the generator or reuse a fixed eps")


def _reparam_stats_case(fn):
    n = 20_000
    mu = torch.tensor([2.0, -1.0]).repeat(n, 1)  # (2,) -> (n, 2)
    logvar = torch.log(torch.tensor([0.25, 4.0])).repeat(n, 1)  # (2,) -> (n, 2)
    want_std = torch.tensor([0.5, 2.0])
    z = _tensor(fn(mu, logvar), "z", _STD_HINT)
    if _shape(z) != (n, 2):
        raise Mistake(f"z has shape {_shape(z)}, expected {(n, 2)}", _STD_HINT)
    noise = (z - mu).detach().float()  # (n, 2): should be std * eps
    std, mean = noise.std(0), noise.mean(0)

    def std_is(target) -> bool:
        return bool(((std / torch.as_tensor(target) - 1).abs() < 0.05).all())

    def fmt(t) -> str:
        return "[" + ", ".join(f"{v:.2f}" for v in t.tolist()) + "]"

    if (std < 1e-6).all():
        raise Mistake("z - mu is 0: no noise was added", f"a deterministic z is not a sample; {_STD_HINT}")
    if (noise >= 0).all():
        raise Mistake("z is never below mu: eps is not a standard normal",
                      "torch.rand_like is uniform on [0, 1); use torch.randn_like (normal)")
    if not std_is(want_std):
        got = f"std of z - mu is {fmt(std)} for sigma = {fmt(want_std)}"
        if std_is([1.0, 1.0]):
            raise Mistake(got, f"eps is not scaled by the std: {_STD_HINT}")
        if std_is([0.25, 4.0]):
            raise Mistake(got, "exp(logvar) is the variance sigma^2; the std is exp(0.5 * logvar)")
        if std_is(torch.log(torch.tensor([0.25, 4.0])).abs()):
            raise Mistake(got, "logvar is not the std: std = torch.exp(0.5 * logvar)")
        raise Mistake(got, _STD_HINT)
    mu_row = torch.tensor([2.0, -1.0])
    if (mean.abs() > 0.1).any():
        if ((mean + mu_row).abs() < 0.1).all() or ((mean - mu_row).abs() < 0.1).all():
            raise Mistake(f"mean of z - mu is {fmt(mean)}, expected [0.00, 0.00]",
                          "z is centred at mu: z = mu + std * eps (add mu, once)")
        raise Mistake(f"mean of z - mu is {fmt(mean)}, expected [0.00, 0.00]", _STD_HINT)


def _reparam_grad_case(fn):
    mu = torch.randn(3, 5, requires_grad=True)
    logvar = (0.5 * torch.randn(3, 5)).requires_grad_()
    z = _tensor(fn(mu, logvar), "z", _STD_HINT)
    if not z.requires_grad:
        raise Mistake("z carries no gradient",
                      _no_grad_hint("mu and logvar") + " (Normal(...).sample() is also cut off; "
                      "the trick is eps outside, mu + std * eps inside the graph)")
    z.sum().backward()
    if mu.grad is None and logvar.grad is None:
        raise Mistake("no gradient reached mu or logvar", _no_grad_hint("mu and logvar"))
    if mu.grad is None:
        raise Mistake("z does not depend on mu", f"z is centred at mu: {_STD_HINT}")
    if logvar.grad is None:
        raise Mistake("z does not depend on logvar", f"logvar sets the spread: {_STD_HINT}")
    if not _close(mu.grad, torch.ones_like(mu)):
        raise Mistake("the gradient with respect to mu is not 1",
                      "torch.normal(mu, std) passes no gradient to mu and logvar: sample "
                      "eps = torch.randn_like(std), then z = mu + std * eps")


def check_reparameterize(fn: Callable) -> Callable:
    """Check ``fn(mu, logvar) -> z``: z = mu + exp(0.5 * logvar) * eps, eps ~ N(0, I).

    Exercise of ``03_reparameterization.ipynb``. Samples are random, so the check
    looks at their shape, their freshness, their mean and standard deviation
    over 20,000 draws, and the gradients; reference ``CVAE.reparameterize``.
    """
    cases = [
        ("shape (4, 20)", _reparam_shape_case),
        ("fresh noise on every call", _reparam_noise_case),
        ("mean mu, std exp(logvar / 2)", _reparam_stats_case),
        ("gradients reach mu and logvar", _reparam_grad_case),
    ]
    hints = [
        ("must match the size", "eps must have the shape of mu: torch.randn_like(std)"),
        ("exp(): argument 'input'", "torch.exp needs a tensor: torch.exp(0.5 * logvar)"),
    ]
    return _run_check("check_reparameterize", fn, cases, reference_reparameterize,
                      "lab_utils.model.CVAE.reparameterize", hints)


def _kl_variants(mu: torch.Tensor, logvar: torch.Tensor) -> list[tuple[torch.Tensor, str, str]]:
    """Typical wrong KL formulas, each (value (B,), what it is, hint)."""
    D = mu.shape[1]
    ref = kl_divergence(mu, logvar)  # (B,)
    formula = "KL = -0.5 * sum over dims of (1 + logvar - mu^2 - exp(logvar))"
    return [
        (-ref, "the sign is flipped", f"a KL is never negative: {formula}"),
        (2 * ref, "twice the KL: the factor 0.5 is missing", formula),
        (-2 * ref, "minus twice the KL: the sign and the factor 0.5", formula),
        (-0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar, dim=1),
         "sigma^2 is taken as logvar", f"sigma^2 = exp(logvar): {formula}"),
        (-0.5 * torch.sum(1 + logvar - mu.pow(2) - torch.exp(0.5 * logvar), dim=1),
         "sigma^2 is taken as exp(0.5 * logvar)",
         f"sigma^2 = exp(logvar), the std is exp(0.5 * logvar): {formula}"),
        (-0.5 * torch.sum(1 + logvar - mu - logvar.exp(), dim=1),
         "mu appears where mu^2 should", f"square the mean: mu.pow(2); {formula}"),
        (-0.5 * torch.sum(logvar - mu.pow(2) - logvar.exp(), dim=1),
         "the 1 + is missing", formula),
        (ref / D, "averaged over the latent dimensions",
         "sum over the latent dimensions (dim=1), don't average"),
    ]


def _kl_case(B: int, D: int, zero: bool = False):
    def run(fn):
        if zero:
            mu, logvar = torch.zeros(B, D), torch.zeros(B, D)
        else:
            mu, logvar = torch.randn(B, D), 0.8 * torch.randn(B, D)
        out = fn(mu.clone(), logvar.clone())
        if isinstance(out, (float, int)):
            raise Mistake(f"returned a Python {type(out).__name__}, expected a tensor of shape ({B},)",
                          "keep it a tensor with one KL per image (no .item()): the loss needs gradients")
        out = _tensor(out, "the result", "return a tensor of shape (B,), one KL per image")
        ref = kl_divergence(mu, logvar)  # (B,)
        if _shape(out) != (B,):
            got = _shape(out)
            if out.dim() == 0 and _close(out, ref.sum()) and not _close(out, ref.mean()):
                hint = "you summed over the batch too: sum over the latent dims only, .sum(dim=1)"
            elif out.dim() == 0 and _close(out, ref.mean()) and not _close(out, ref.sum()):
                hint = "you averaged over the batch: keep one KL per image, .sum(dim=1)"
            elif out.dim() == 0:
                hint = "one KL per image: .sum(dim=1), not .sum()"
            elif got == (B, D):
                hint = "one KL per image: sum over the latent dims with .sum(dim=1)"
            elif got == (B, 1):
                hint = "drop keepdim=True: the result has shape (B,)"
            elif got == (D,):
                hint = "you summed over the batch (dim=0); sum over the latent dims (dim=1)"
            else:
                hint = "one KL per image: shape (B,)"
            raise Mistake(f"shape {got}, expected ({B},)", hint)
        if _close(out, ref):
            return
        for value, what, hint in _kl_variants(mu, logvar):
            if _close(out, value):
                raise Mistake(f"values wrong: {what}", hint)
        raise Mistake(f"values wrong (max difference {_max_diff(out, ref)})",
                      "KL = -0.5 * sum over dims of (1 + logvar - mu^2 - exp(logvar))")
    return run


def _kl_grad_case(fn):
    mu = torch.randn(4, 6, requires_grad=True)
    logvar = (0.8 * torch.randn(4, 6)).requires_grad_()
    out = fn(mu, logvar)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise Mistake("the result carries no gradient", _no_grad_hint("mu and logvar"))
    out.sum().backward()
    missing = [name for name, t in (("mu", mu), ("logvar", logvar)) if t.grad is None]
    if missing:
        raise Mistake(f"no gradient reached {' or '.join(missing)}", _no_grad_hint(" and ".join(missing)))


def check_kl_divergence(fn: Callable) -> Callable:
    """Check ``fn(mu, logvar) -> (B,)``: KL(N(mu, sigma^2) || N(0, I)) per image.

    Exercise of ``03_reparameterization.ipynb``; reference ``lab_utils.losses.kl_divergence``.
    """
    cases = [
        ("mu = 0, logvar = 0 gives 0", _kl_case(3, 4, zero=True)),
        ("batch of 5 in 20 dims", _kl_case(5, 20)),
        ("batch of 1", _kl_case(1, 20)),
        ("gradients reach mu and logvar", _kl_grad_case),
    ]
    hints = [
        ("exp(): argument 'input'", "torch.exp needs a tensor: logvar.exp() or torch.exp(logvar)"),
        ("Dimension out of range", "mu and logvar are (B, D): sum over dim=1"),
    ]
    return _run_check("check_kl_divergence", fn, cases, kl_divergence,
                      "lab_utils.losses.kl_divergence", hints)


# --------------------------------------------------------------------------
# 04: the decoder's forward pass
# --------------------------------------------------------------------------

def _decoder_variant(decoder: Decoder, z: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """The decoder with one typical slip, to name it when a result matches."""
    cfg = decoder.config
    y_onehot = one_hot(y).to(z.dtype)  # (B, 10)
    h = torch.cat([y_onehot, z] if kind == "labels first" else [z, y_onehot], dim=1)  # (B, 30)
    h = decoder.fc[0](h) if kind == "no relu" else decoder.fc(h)  # (B, 30) -> (B, 392)
    c, s = cfg.dec_start_channels, cfg.dec_start_size
    if kind == "channels last":
        h = h.view(-1, s, s, c).permute(0, 3, 1, 2)  # (B, 392) -> (B, 14, 14, 2) -> (B, 2, 14, 14)
    else:
        h = h.view(-1, c, s, s)  # (B, 392) -> (B, 2, 14, 14)
    conv = decoder.conv[:-1] if kind == "no sigmoid" else decoder.conv
    x_hat = conv(h)  # (B, 2, 14, 14) -> (B, 1, 28, 28)
    return torch.sigmoid(x_hat) if kind == "sigmoid twice" else x_hat


_DECODER_STEPS = ("torch.cat([z, one_hot(y)], dim=1) -> decoder.fc -> .view(B, 2, 14, 14) "
                  "-> decoder.conv (which ends with the Sigmoid)")


def _new_decoder(seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(CONFIGS["lab"])


def _decoder_case(B: int, seed: int):
    def run(fn):
        decoder = _new_decoder(seed)
        z = torch.randn(B, decoder.config.latent_dim)
        y = torch.randint(0, NUM_CLASSES, (B,))
        x_hat = _tensor(fn(decoder, z, y), "x_hat", f"return the image batch: {_DECODER_STEPS}")
        want = (B, 1, 28, 28)
        if _shape(x_hat) != want:
            got = _shape(x_hat)
            if got == (B, 784):
                hint = "return the images as (B, 1, 28, 28): decoder.conv already gives that shape"
            elif got == (B, 392):
                hint = "after decoder.fc, reshape to (B, 2, 14, 14) and run decoder.conv"
            else:
                hint = _DECODER_STEPS
            raise Mistake(f"shape {got}, expected {want}", hint)
        with torch.no_grad():
            ref = decoder(z, y)
            if _close(x_hat, ref):
                return
            if _close(x_hat, _decoder_variant(decoder, z, y, "no sigmoid")):
                raise Mistake("values wrong: the Sigmoid at the end is missing",
                              "pixels are probabilities: run all of decoder.conv, it ends with a Sigmoid")
            if x_hat.min() < 0 or x_hat.max() > 1:
                raise Mistake(
                    f"values outside [0, 1] ({x_hat.min().item():.2f} to {x_hat.max().item():.2f})",
                    "pixels are probabilities: run all of decoder.conv, it ends with a Sigmoid")
            variants = {
                "sigmoid twice": ("the Sigmoid is applied twice",
                                  "decoder.conv already ends with a Sigmoid: don't add another"),
                "labels first": ("the one-hot comes before z",
                                 "torch.cat([z, one_hot(y)], dim=1): z first, as the decoder was built"),
                "channels last": ("the 392 features are reshaped channels-last",
                                  "reshape with .view(B, 2, 14, 14): channels first, as PyTorch images are"),
                "no relu": ("the ReLU after the Linear layer is missing",
                            "call decoder.fc(h), all of it: it is Linear then ReLU"),
            }
            for kind, (what, hint) in variants.items():
                if _close(x_hat, _decoder_variant(decoder, z, y, kind)):
                    raise Mistake(f"values wrong: {what}", hint)
        raise Mistake(f"values differ from the decoder's own forward (max difference "
                      f"{_max_diff(x_hat, ref)})", f"follow the steps: {_DECODER_STEPS}")
    return run


def _decoder_grad_case(fn):
    decoder = _new_decoder(1)
    z = torch.randn(3, decoder.config.latent_dim, requires_grad=True)
    y = torch.tensor([2, 7, 7])
    x_hat = _tensor(fn(decoder, z, y), "x_hat", f"return the image batch: {_DECODER_STEPS}")
    if not x_hat.requires_grad:
        raise Mistake("x_hat carries no gradient", _no_grad_hint("z and the decoder"))
    x_hat.sum().backward()
    missing = [n for n, p in decoder.named_parameters() if p.grad is None]
    if z.grad is None:
        missing.insert(0, "z")
    if missing:
        raise Mistake(f"no gradient for {', '.join(missing[:3])}", _no_grad_hint("these tensors"))


def check_decoder_forward(fn: Callable) -> Callable:
    """Check ``fn(decoder, z, y) -> x_hat`` against ``Decoder.forward``.

    Exercise of ``04_upsampling_decoder.ipynb``: the forward pass written with
    ``decoder.fc`` and ``decoder.conv``.
    """
    cases = [
        ("batch of 4", _decoder_case(4, 0)),
        ("batch of 1", _decoder_case(1, 2)),
        ("batch of 9", _decoder_case(9, 3)),
        ("gradients reach z and the weights", _decoder_grad_case),
    ]
    hints = [
        ("mat1 and mat2", "decoder.fc takes z and the one-hot label side by side, 20 + 10 = 30 "
                          "numbers: torch.cat([z, one_hot(y)], dim=1)"),
        ("channels", "decoder.conv wants (B, 2, 14, 14): reshape with .view(B, 2, 14, 14), channels first"),
        ("shape '[", "reshape the 392 features with .view(-1, 2, 14, 14)"),
        ("Sizes of tensors must match", "concatenate side by side: torch.cat([z, one_hot(y)], dim=1)"),
    ]
    return _run_check("check_decoder_forward", fn, cases, Decoder.forward,
                      "lab_utils.model.Decoder.forward", hints)


# --------------------------------------------------------------------------
# 05: one training step
# --------------------------------------------------------------------------

def _new_model_and_optimizer(seed: int = 0) -> tuple[CVAE, torch.optim.Adam]:
    torch.manual_seed(seed)
    model = CVAE("lab")
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def _train_batch(B: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(B, 1, 28, 28, generator=g)
    y = torch.randint(0, NUM_CLASSES, (B,), generator=g)
    return x, y


def _same_params(a: CVAE, b: CVAE) -> bool:
    return all(torch.allclose(p, q, atol=1e-6, rtol=1e-5)
               for p, q in zip(a.parameters(), b.parameters()))


def _step_without_zero_grad(model, optimizer, x, y) -> float:
    """The typical slip: gradients of earlier steps are never cleared."""
    x_hat, mu, logvar = model(x, y)
    loss = loss_function(x_hat, x, mu, logvar)
    loss.backward()
    optimizer.step()
    return loss.item()


def _check_returned_loss(out, ref_loss: float, B: int) -> None:
    if isinstance(out, torch.Tensor):
        raise Mistake("returned a tensor, expected a Python float",
                      "return loss.item(): a plain number (a tensor keeps the whole graph in memory)")
    if out is None:
        raise Mistake("returned None, expected the batch's loss as a float", "end with `return loss.item()`")
    if isinstance(out, bool) or not isinstance(out, float):
        raise Mistake(f"returned a {type(out).__name__}, expected a float", "end with `return loss.item()`")
    if math.isclose(out, ref_loss, rel_tol=1e-4):
        return
    if math.isclose(out, ref_loss / B, rel_tol=1e-4):
        raise Mistake(f"returned {out:.2f}, the mean per image; expected the batch's sum {ref_loss:.2f}",
                      "return the summed loss that loss_function gives (don't divide by the batch size)")
    raise Mistake(f"returned {out:.2f}, expected {ref_loss:.2f}",
                  "loss = loss_function(x_hat, x, mu, logvar) with x_hat, mu, logvar = model(x, y)")


def _check_step_params(model: CVAE, ref_model: CVAE, initial: list[torch.Tensor]) -> None:
    if _same_params(model, ref_model):
        return
    if all(torch.equal(p, q) for p, q in zip(model.parameters(), initial)):
        grads = [p.grad for p in model.parameters()]
        if all(g is None for g in grads):
            raise Mistake("the parameters did not change and have no gradients",
                          "the order is optimizer.zero_grad(), loss.backward(), optimizer.step(): "
                          "step needs the gradients that backward computes")
        if all(g is None or not g.any() for g in grads):
            raise Mistake("the parameters did not change: the gradients are all zero",
                          "the order is optimizer.zero_grad(), loss.backward(), optimizer.step(); "
                          "zero_grad after backward wipes the gradients")
        raise Mistake("the parameters did not change", "call optimizer.step() after loss.backward()")
    raise Mistake("the parameters differ from one Adam step on loss_function",
                  "optimizer.zero_grad(), loss.backward(), optimizer.step(), once each, "
                  "on loss = loss_function(x_hat, x, mu, logvar)")


def _train_one_step_case(fn):
    x, y = _train_batch()
    model, optimizer = _new_model_and_optimizer()
    ref_model, ref_optimizer = _new_model_and_optimizer()
    initial = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(11)  # the same noise in reparameterize for both
    out = fn(model, optimizer, x, y)
    torch.manual_seed(11)
    ref_loss = reference_train_step(ref_model, ref_optimizer, x, y)
    _check_returned_loss(out, ref_loss, x.shape[0])
    _check_step_params(model, ref_model, initial)


def _train_two_steps_case(fn):
    x, y = _train_batch()
    model, optimizer = _new_model_and_optimizer()
    ref_model, ref_optimizer = _new_model_and_optimizer()
    acc_model, acc_optimizer = _new_model_and_optimizer()
    for step in (1, 2):
        initial = [p.detach().clone() for p in model.parameters()]
        torch.manual_seed(20 + step)
        out = fn(model, optimizer, x, y)
        torch.manual_seed(20 + step)
        ref_loss = reference_train_step(ref_model, ref_optimizer, x, y)
        torch.manual_seed(20 + step)
        _step_without_zero_grad(acc_model, acc_optimizer, x, y)
        if step == 2 and not _same_params(model, ref_model) and _same_params(model, acc_model):
            raise Mistake("the second step used the first step's gradients too",
                          "call optimizer.zero_grad() before loss.backward(): PyTorch adds "
                          "new gradients to the old ones")
        _check_returned_loss(out, ref_loss, x.shape[0])
        _check_step_params(model, ref_model, initial)


def check_train_step(fn: Callable) -> Callable:
    """Check ``fn(model, optimizer, x, y) -> float``: one Adam step on ``loss_function``.

    Exercise of ``05_training.ipynb``. The check trains fresh copies of the lab
    model side by side (same weights, same noise) and compares the returned
    loss and the updated weights; reference :func:`reference_train_step`.
    """
    cases = [
        ("one step", _train_one_step_case),
        ("two steps in a row", _train_two_steps_case),
    ]
    hints = [
        ("has no attribute 'backward'", "call loss.backward() on the tensor, then return loss.item()"),
        ("does not require grad", "compute the loss from model(x, y) without torch.no_grad() or .detach()"),
        ("Trying to backward through the graph a second time",
         "call loss.backward() once per step, on a loss computed in this step"),
    ]
    return _run_check("check_train_step", fn, cases, reference_train_step,
                      "lab_utils.train.train_step", hints)
