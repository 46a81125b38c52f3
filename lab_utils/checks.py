"""Friendly checks for the "Your turn" exercises of notebooks 01-09.

Each ``check_*`` runs a student's function on a few small cases against the
``lab_utils`` reference, prints a short verdict (what passed, what failed, a
nudge that names the symptom and what to look at) and returns the function to
use from then on: the student's own if every case passed, else the reference.
So a notebook runs top to bottom even while an exercise is unsolved::

    my_expand_labels = checks.check_expand_labels(my_expand_labels)

Hints come in tiers, so a student chooses how much to be told: the verdict
shows the first tier (the symptom and a nudge, never solution code);
``hint(name, level=2)`` prints a precise hint (for the last failure, if any),
``hint(name, level=3)`` the solution line. ``passed(name)`` says whether the
most recent check of an exercise passed and ``grade(name)`` raises
``AssertionError`` with a one-line reason unless it did (nbgrader's autograded
cells call it). Exercise names: expand_labels (01), encoder_forward (02),
reparameterize and kl_divergence (03), decoder_forward (04), train_step (05),
slant (06), iwae_bound (07), active_units (08), center_of_mass (09).

The checks touch nothing outside themselves: they build their own small
tensors and models on the CPU, and run inside ``torch.random.fork_rng`` so the
notebook's random stream is the same whether or not a check ran (and a
correct function always prints the same text, which nbval compares).
The convention is in the README ("For instructors").
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .evaluation import active_from_means as reference_active_units
from .evaluation import slant as reference_slant
from .handwriting import center_of_mass as reference_center_of_mass
from .labels import NUM_CLASSES, expand_labels, one_hot
from .losses import bce, iwae_from_log_weights, kl_divergence, loss_function
from .model import CONFIGS, CVAE, Decoder, Encoder
from .train import train_step as reference_train_step  # the one implementation

__all__ = [
    "check_expand_labels", "check_encoder_forward", "check_reparameterize",
    "check_kl_divergence", "check_decoder_forward", "check_train_step",
    "check_slant", "check_iwae_bound", "check_center_of_mass",
    "hint", "passed", "grade", "EXERCISES",
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
# Hints in tiers: (1) a nudge, (2) a precise hint, (3) the solution line.
# --------------------------------------------------------------------------

# exercise: (notebook, level 1 nudge, level 2 precise hint, level 3 solution)
EXERCISES: dict[str, tuple[str, str, str, str]] = {
    "expand_labels": (
        "01",
        "start from the one-hot matrix (B, 10); give it two size-1 axes, then let them grow "
        "to 28 x 28 without copying any numbers",
        "reshape the one-hot to (B, 10, 1, 1), then expand (not repeat) its size-1 axes to "
        "(B, 10, 28, 28): a view with stride 0 on the 28 x 28 axes",
        "return one_hot(y).view(-1, 10, 1, 1).expand(-1, 10, 28, 28)",
    ),
    "encoder_forward": (
        "02",
        "the encoder's layers are given (conv, fc, fc_mu, fc_logvar); the image and the label "
        "maps go in together, and every image is flattened on its own",
        "labels = expand_labels(y); join with torch.cat([x, labels], dim=1) (image first); "
        "encoder.conv; h.flatten(1); encoder.fc; then the two heads from the same h",
        "h = encoder.fc(encoder.conv(torch.cat([x, expand_labels(y)], dim=1)).flatten(1)); "
        "return encoder.fc_mu(h), encoder.fc_logvar(h)",
    ),
    "reparameterize": (
        "03",
        "z is mu moved by a random amount: the noise is standard normal, one draw per number "
        "of mu, scaled by the standard deviation, which comes from logvar",
        "std = torch.exp(0.5 * logvar) (logvar is log sigma^2); eps = torch.randn_like(std), "
        "fresh on every call, one per image and dimension; z = mu + std * eps",
        "std = torch.exp(0.5 * logvar); eps = torch.randn_like(std); return mu + std * eps",
    ),
    "kl_divergence": (
        "03",
        "the closed form of KL(N(mu, sigma^2) || N(0, 1)) per latent dimension, in terms of "
        "mu and logvar = log sigma^2, added up over the dimensions of each image",
        "KL = -0.5 * sum over the latent dims of (1 + log sigma^2 - mu^2 - sigma^2), with "
        "sigma^2 = exp(logvar); sum with dim=1 to keep one number per image",
        "return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)",
    ),
    "decoder_forward": (
        "04",
        "the decoder's layers are given (fc, conv); z and the label go in side by side, and the "
        "fc's 392 features are reshaped into small feature maps before the convolutions",
        "h = decoder.fc(torch.cat([z, one_hot(y)], dim=1)) (z first); reshape to (B, 2, 14, 14), "
        "channels first; decoder.conv ends with the Sigmoid",
        "h = decoder.fc(torch.cat([z, one_hot(y)], dim=1)); "
        "return decoder.conv(h.view(-1, 2, 14, 14))",
    ),
    "train_step": (
        "05",
        "one step: forward pass, the batch's loss (the summed negative ELBO), clear the old "
        "gradients, compute the new ones, update the weights, return the loss as a number",
        "x_hat, mu, logvar = model(x, y); loss = loss_function(x_hat, x, mu, logvar) (BCE and KL "
        "both summed); optimizer.zero_grad(); loss.backward(); optimizer.step()",
        "x_hat, mu, logvar = model(x, y); loss = loss_function(x_hat, x, mu, logvar); "
        "optimizer.zero_grad(); loss.backward(); optimizer.step(); return loss.item()",
    ),
    "slant": (
        "06",
        "both moments use r and c measured from each image's own centre of ink (a "
        "brightness-weighted mean); rows count downwards, and one row up is r = -1",
        "mass = x.sum((1, 2)); r and c from torch.arange(28.0) minus their weighted means; "
        "mu11 = sum of x * r * c, mu02 = sum of x * r * r, per image; slant = -mu11 / mu02",
        "r = r - (x * r).sum((1, 2), keepdim=True) / mass (same for c); "
        "return -(x * r * c).sum((1, 2)) / (x * r * r).sum((1, 2))",
    ),
    "iwae_bound": (
        "07",
        "the bound is the log of the mean of the K importance weights w_k = exp(log_w[k]); "
        "log weights near -100 make exp underflow, so never leave log space",
        "log mean_k exp(log_w_k) = logsumexp over K (dim=0) minus log K; torch.logsumexp "
        "subtracts the largest log weight before it exponentiates",
        "return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])",
    ),
    "active_units": (
        "08",
        "a unit is active when its posterior mean moves with the image: the spread of column j "
        "of mu over the N images (the first axis), measured as a variance, above the threshold; "
        "return the indices j, not their count",
        "activity = the variance over dim 0 with correction=0 (one number per dimension, shape "
        "(D,)); keep the j with activity[j] > threshold, as a list of ints in increasing order",
        "activity = mu.var(dim=0, correction=0); "
        "return [j for j, a in enumerate(activity.tolist()) if a > threshold]",
    ),
    "center_of_mass": (
        "09",
        "the brightness-weighted mean of the row indices and of the column indices: each "
        "pixel counts as much as its ink; indices start at 0; answer (row, column)",
        "row = sum over pixels of image * row index / image.sum(), the same for the column, "
        "with torch.arange(H) and torch.arange(W); no threshold",
        "rows, cols = torch.arange(H), torch.arange(W); "
        "return float((image.sum(1) * rows).sum() / image.sum()), "
        "float((image.sum(0) * cols).sum() / image.sum())",
    ),
}

_RESULTS: dict[str, dict] = {}  # exercise -> the most recent check's outcome


def _exercise(name: str) -> str:
    """``"check_kl_divergence"`` or ``"kl_divergence"`` -> ``"kl_divergence"``."""
    key = name[len("check_"):] if name.startswith("check_") else name
    if key not in EXERCISES:
        raise ValueError(f"no exercise called {name!r}; the exercises are {', '.join(EXERCISES)}")
    return key


def hint(name: str, level: int = 1) -> None:
    """Print a hint for an exercise: 1 a nudge, 2 a precise hint, 3 the solution line.

    Levels 1 and 2 add what fits the last failed check of that exercise, if any.
    """
    key = _exercise(name)
    if level not in (1, 2, 3):
        raise ValueError(f"level is 1 (a nudge), 2 (a precise hint) or 3 (the solution), got {level!r}")
    notebook, nudge, precise, solution = EXERCISES[key]
    last = _RESULTS.get(key, {})
    if level == 1:
        print(f"Hint 1 for {key} (notebook {notebook}): {nudge}")
        for h in last.get("nudges", []):
            print(f"  For your last attempt: {h}")
        print(f'  More: checks.hint("{key}", level=2)')
    elif level == 2:
        print(f"Hint 2 for {key} (notebook {notebook}): {precise}")
        for h in last.get("more", []):
            print(f"  For your last attempt: {h}")
        print(f'  The solution line: checks.hint("{key}", level=3)')
    else:
        print(f"Solution for {key} (notebook {notebook}): {solution}")


def passed(name: str) -> bool:
    """Did the most recent check of this exercise pass (every case)? False if never run."""
    return bool(_RESULTS.get(_exercise(name), {}).get("passed", False))


def grade(name: str) -> None:
    """Raise ``AssertionError`` with a one-line reason unless the exercise's last check passed.

    For nbgrader's autograded test cells: ``checks.grade("kl_divergence")``.
    """
    key = _exercise(name)
    last = _RESULTS.get(key)
    if last is None:
        raise AssertionError(f"{key}: its check has not run; run the check cell "
                             f"(checks.check_{key}) first")
    if not last["passed"]:
        raise AssertionError(f"{key}: {last['reason']}")


# --------------------------------------------------------------------------
# The machinery shared by all checks.
# --------------------------------------------------------------------------

class Mistake(Exception):
    """A case found a wrong result: ``problem`` says what, ``hint`` nudges (tier 1),
    ``more`` says precisely what to change (tier 2, shown by ``hint(name, 2)``)."""

    def __init__(self, problem: str, hint: str = "", more: str = ""):
        super().__init__(problem)
        self.problem = problem
        self.hint = hint
        self.more = more


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


_READ_THE_ERROR = ("read the error message above; run your function on a small input "
                   "to see where it fails", "")


def _hint_for_exception(exc: BaseException, hints) -> tuple[str, str]:
    """(nudge, more) of the first hint whose key occurs in the exception's message."""
    message = str(exc)
    for key, nudge, more in hints:
        if key in message:
            return nudge, more
    return _READ_THE_ERROR


def _record(key: str, ok: bool, reason: str = "", nudges=(), more=()) -> None:
    _RESULTS[key] = {"passed": ok, "reason": reason, "nudges": list(nudges), "more": list(more)}


def _run_check(
    name: str,
    fn: Callable,
    cases: list[tuple[str, Callable]],
    reference: Callable,
    reference_name: str,
    exception_hints: list[tuple[str, str, str]] = (),
) -> Callable:
    """Run ``cases`` on ``fn``, print the verdict, return ``fn`` or ``reference``.

    A case is ``(label, run)``; ``run(fn)`` raises :class:`Mistake` when the
    result is wrong. NotImplementedError means "not implemented yet"; any
    other exception becomes a one-line failure, never a traceback. The outcome
    is recorded for :func:`passed`, :func:`grade` and :func:`hint`.
    """
    key = _exercise(name)
    fallback = (f"  → not your function: using the lab_utils reference for the rest of this "
                f"notebook ({reference_name}).")
    more_help = f'  More help: checks.hint("{key}", level=2); level=3 shows the solution.'
    if not callable(fn):
        print(f"{FAIL} {name}: expected your function, got a {type(fn).__name__}.")
        print(f"  Hint: pass the function itself, e.g. {name}(my_function), without calling it.")
        print(fallback)
        _record(key, False, f"the check got a {type(fn).__name__}, not a function")
        return reference
    passed_labels: list[str] = []
    failures: list[tuple[str, str, str, str]] = []
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
                _record(key, False, "not implemented yet")
                return reference
            except Mistake as m:
                failures.append((label, m.problem, m.hint, m.more))
            except Exception as exc:  # the student's code failed: one line, no traceback
                nudge, more = _hint_for_exception(exc, list(exception_hints))
                failures.append((label, f"raised {type(exc).__name__}: {_first_line(exc)}",
                                 nudge, more))
            else:
                passed_labels.append(label)
    if not failures:
        print(f"{PASS} {name}: all {len(cases)} cases passed ({'; '.join(passed_labels)}).")
        print("  Well done! Your function is used for the rest of this notebook.")
        _record(key, True)
        return fn
    done = f" ({'; '.join(passed_labels)})" if passed_labels else ""
    print(f"{FAIL} {name}: {len(passed_labels)} of {len(cases)} cases passed{done}.")
    grouped: dict[str, list[str]] = {}  # the same problem in several cases: one line
    for label, problem, _, _ in failures:
        grouped.setdefault(problem, []).append(label)
    for problem, labels in list(grouped.items())[:MAX_FAILURES_SHOWN]:
        print(f"  {FAIL} {', '.join(labels)}: {problem}")
    hidden = sum(len(labels) for labels in list(grouped.values())[MAX_FAILURES_SHOWN:])
    if hidden:
        print(f"  ... and {hidden} more failed.")
    nudges = list(dict.fromkeys(h for _, _, h, _ in failures if h))
    for h in nudges[:MAX_HINTS_SHOWN]:
        print(f"  Hint: {h}")
    print(more_help)
    print(fallback)
    first_label, first_problem = failures[0][0], failures[0][1]
    reason = (f"{len(passed_labels)} of {len(cases)} cases passed; "
              f"{first_label}: {first_problem}")
    _record(key, False, reason, nudges, dict.fromkeys(m for *_, m in failures if m))
    return reference


def _tensor(out, what: str, hint: str, more: str = "") -> torch.Tensor:
    """``out`` if it is a tensor, else a Mistake saying what came back instead."""
    if isinstance(out, torch.Tensor):
        return out
    raise Mistake(f"{what} is a {type(out).__name__}, not a torch.Tensor", hint, more)


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


def _no_grad_more(what: str) -> str:
    return (f"compute the result from {what} with tensor operations only, inside the autograd "
            f"graph: nothing detached, nothing converted to Python numbers or NumPy")


# --------------------------------------------------------------------------
# 01: expand_labels
# --------------------------------------------------------------------------

def _expand_labels_case(labels: list[int], view: bool = False):
    def run(fn):
        y = torch.tensor(labels)
        out = _tensor(fn(y.clone()), "the result",
                      "return the label maps as one tensor of shape (B, 10, 28, 28)")
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
        more = ""
        if got == (B, NUM_CLASSES):
            hint = ("that is the one-hot matrix: it still needs two size-1 axes, which then "
                    "grow to 28 x 28")
            more = "reshape it with .view(B, 10, 1, 1), then .expand(-1, 10, 28, 28)"
        elif got == (B, NUM_CLASSES, 1, 1):
            hint = "the size-1 axes are there; they still have to grow to 28 x 28, without a copy"
            more = "add .expand(-1, 10, 28, 28) after the .view(B, 10, 1, 1)"
        elif got == (NUM_CLASSES, B, 28, 28):
            hint = "images and classes are swapped: which axis of the one-hot is the batch?"
            more = ".view(B, 10, 1, 1), not .view(10, B, 1, 1)"
        elif got == (B, 28, 28, NUM_CLASSES):
            hint = "the class axis comes second: (B, 10, 28, 28), as PyTorch images are (B, C, H, W)"
        else:
            hint = "one 28x28 map per class and image: shape (B, 10, 28, 28)"
        raise Mistake(f"shape {got}, expected {want}", hint, more)
    if not out.dtype.is_floating_point:
        raise Mistake(
            f"dtype {out.dtype}, expected a float tensor",
            "the label maps are concatenated with float images, so they must be float too "
            "(F.one_hot gives integers)",
            "add .float() to F.one_hot's result, or use lab_utils' one_hot")
    ref = expand_labels(y)
    if not _close(out, ref):
        if B == NUM_CLASSES and _close(out, ref.transpose(0, 1)):
            raise Mistake("shape right, values wrong: images and classes are swapped",
                          "which axis of the one-hot is the batch, which the class?",
                          ".view(B, 10, 1, 1), not .view(10, B, 1, 1)")
        raise Mistake("shape right, values wrong",
                      "for image b, channel y[b] must be all ones and the other 9 channels "
                      "all zeros")


def _check_is_view(out: torch.Tensor) -> None:
    """A Mistake unless ``out`` stores fewer numbers than it shows (a view made by expand)."""
    stored = out.untyped_storage().nbytes()
    if stored >= out.numel() * out.element_size():
        raise Mistake(
            f"a copy, not a view: {stored:,} bytes stored, strides {tuple(out.stride())}",
            "`.repeat(...)` (or `* torch.ones(...)`, `.clone()`, `.contiguous()`) copies the "
            "one-hot into every pixel; which operation grows size-1 axes with stride 0, "
            "storing nothing new?",
            "`.expand(-1, 10, 28, 28)` makes a view with stride 0 on the 28x28 axes: no copy")


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
        ("shape '[", "the reshape's sizes must multiply to B * 10: derive B from y, "
                     "never a fixed number", "use .view(-1, 10, 1, 1) (or .view(B, 10, 1, 1) "
                     "with B = y.shape[0])"),
        ("expanded size", "expand grows only axes of size 1 and keeps the others",
         ".view(B, 10, 1, 1).expand(-1, 10, 28, 28)"),
        ("scatter", "one_hot needs integer labels of shape (B,)", ""),
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
                           "return the pair (mu, logvar), the outputs of the two heads")
        want = (B, encoder.config.latent_dim)
        for name, t in (("mu", mu), ("logvar", logvar)):
            if _shape(t) != want:
                raise Mistake(
                    f"{name} has shape {_shape(t)}, expected {want}",
                    "flatten each image on its own, keeping the batch axis; never a fixed "
                    "batch size",
                    "h.flatten(1) or h.view(B, -1) with B = x.shape[0], never h.view(-1)")
        with torch.no_grad():
            ref_mu, ref_logvar = encoder(x, y)
            alt_mu, alt_logvar = _encoder_swapped_labels(encoder, x, y)
        if _close(mu, ref_mu) and _close(logvar, ref_logvar):
            return
        if _close(mu, ref_logvar) and _close(logvar, ref_mu):
            raise Mistake("mu and logvar are swapped",
                          "look at which head gives which output, and the order you return them",
                          "mu = encoder.fc_mu(h), logvar = encoder.fc_logvar(h)")
        if _close(mu, ref_mu):
            raise Mistake("mu is right, logvar is wrong",
                          "logvar has a head of its own, fed the same h as mu",
                          "logvar = encoder.fc_logvar(h), from the same h as mu")
        if _close(logvar, ref_logvar):
            raise Mistake("logvar is right, mu is wrong", "mu has a head of its own",
                          "mu = encoder.fc_mu(h)")
        if _close(mu, alt_mu) and _close(logvar, alt_logvar):
            raise Mistake("values wrong: the label channels come before the image",
                          "the encoder was built for the image channel first, then the 10 "
                          "label channels",
                          "torch.cat([x, labels], dim=1): the image first")
        raise Mistake(
            f"values differ from the encoder's own forward (max difference {_max_diff(mu, ref_mu)})",
            "use the encoder's own layers in order: label maps joined to the image, the "
            "convolutions, one flat row per image, the hidden layer, the two heads",
            "expand_labels(y) -> torch.cat([x, labels], dim=1) -> encoder.conv "
            "-> h.flatten(1) -> encoder.fc -> encoder.fc_mu and encoder.fc_logvar")
    return run


def _encoder_grad_case(fn):
    encoder = _new_encoder(1)
    x = torch.rand(3, 1, 28, 28)
    y = torch.tensor([0, 5, 9])
    mu, logvar = _pair(fn(encoder, x, y), "mu, logvar",
                       "return the pair (mu, logvar), the outputs of the two heads")
    if not (mu.requires_grad and logvar.requires_grad):
        raise Mistake("mu or logvar carries no gradient", _no_grad_hint("the encoder"),
                      _no_grad_more("x, y and the encoder's layers"))
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
        ("channels", "the first conv wants 11 channels: the image (1) and its 10 label maps; "
                     "look at what goes into encoder.conv",
         "labels = expand_labels(y), joined with torch.cat([x, labels], dim=1)"),
        ("Sizes of tensors must match", "image and label maps are joined along one axis only: "
                                        "which axis holds the channels?",
         "torch.cat([x, labels], dim=1)"),
        ("mat1 and mat2", "encoder.fc wants one flat row of 784 numbers per image: look at the "
                          "shape of what you feed it",
         "flatten each feature map to (B, 784) with h.flatten(1) before encoder.fc"),
        ("shape '[", "flatten each image on its own; the batch size comes from x",
         "h.flatten(1) or h.view(x.shape[0], -1)"),
    ]
    return _run_check("check_encoder_forward", fn, cases, Encoder.forward,
                      "lab_utils.model.Encoder.forward", hints)


# --------------------------------------------------------------------------
# 03: reparameterize and the KL term
# --------------------------------------------------------------------------

_STD_NUDGE = ("z = mu + (standard deviation) * (standard normal noise); logvar is the log of "
              "the variance, not the standard deviation")
_STD_MORE = "z = mu + std * eps with std = torch.exp(0.5 * logvar) and eps = torch.randn_like(std)"


def _shared_noise(noise: torch.Tensor) -> bool:
    """True if every row (image) of ``noise`` (B, D) is the same non-zero row."""
    return (noise.shape[0] > 1 and bool((noise.abs() > 1e-6).any())
            and bool(torch.allclose(noise, noise[:1].expand_as(noise), atol=1e-6, rtol=1e-5)))


_SHARED = ("the same noise for every image: one eps row is shared by the whole batch",
           "each image needs a noise draw of its own: draw eps with the full shape of mu, "
           "(B, D), not (D,) or (1, D) broadcast over the batch",
           "eps = torch.randn_like(std): one number per image and dimension")


def _reparam_shape_case(fn):
    mu, logvar = torch.randn(4, 20), 0.5 * torch.randn(4, 20)
    z = _tensor(fn(mu, logvar), "z", "return z, a tensor of the shape of mu", _STD_MORE)
    if _shape(z) != (4, 20):
        raise Mistake(f"z has shape {_shape(z)}, expected (4, 20)",
                      "z has the shape of mu: so does the noise", _STD_MORE)
    if z.dtype != mu.dtype:
        raise Mistake(f"z has dtype {z.dtype}, expected {mu.dtype}",
                      "draw the noise with the dtype (and device) of mu",
                      "torch.randn_like(std) gives eps the dtype (and device) of std")


def _reparam_noise_case(fn):
    mu, logvar = torch.randn(4, 20), 0.5 * torch.randn(4, 20)
    z1 = _tensor(fn(mu, logvar), "z", _STD_NUDGE, _STD_MORE)
    z2 = _tensor(fn(mu, logvar), "z", _STD_NUDGE, _STD_MORE)
    if _shape(z1) != _shape(mu):
        raise Mistake(f"z has shape {_shape(z1)}, expected {_shape(mu)}", _STD_NUDGE, _STD_MORE)
    if _close(z1, mu, atol=1e-7, rtol=0):
        raise Mistake("z equals mu: no noise was added",
                      f"a deterministic z is not a sample; {_STD_NUDGE}", _STD_MORE)
    if _close(z1, z2, atol=0, rtol=0):
        raise Mistake("z is the same on every call",
                      "draw fresh noise inside the function on every call; don't seed the "
                      "generator or reuse a fixed eps",
                      "eps = torch.randn_like(std), inside the function")
    if _shared_noise(((z1 - mu) / torch.exp(0.5 * logvar)).detach()):
        raise Mistake(*_SHARED)


def _reparam_stats_case(fn):
    n = 20_000
    mu = torch.tensor([2.0, -1.0]).repeat(n, 1)  # (2,) -> (n, 2)
    logvar = torch.log(torch.tensor([0.25, 4.0])).repeat(n, 1)  # (2,) -> (n, 2)
    want_std = torch.tensor([0.5, 2.0])
    z = _tensor(fn(mu, logvar), "z", _STD_NUDGE, _STD_MORE)
    if _shape(z) != (n, 2):
        raise Mistake(f"z has shape {_shape(z)}, expected {(n, 2)}", _STD_NUDGE, _STD_MORE)
    noise = (z - mu).detach().float()  # (n, 2): should be std * eps
    std, mean = noise.std(0), noise.mean(0)

    def std_is(target) -> bool:
        return bool(((std / torch.as_tensor(target) - 1).abs() < 0.05).all())

    def fmt(t) -> str:
        return "[" + ", ".join(f"{v:.2f}" for v in t.tolist()) + "]"

    if (std < 1e-6).all():
        if (noise.abs() > 1e-6).any():
            raise Mistake(*_SHARED)
        raise Mistake("z - mu is 0: no noise was added",
                      f"a deterministic z is not a sample; {_STD_NUDGE}", _STD_MORE)
    if (noise >= 0).all():
        raise Mistake("z is never below mu: eps is not a standard normal",
                      "the noise must be standard normal, centred at 0; which random function "
                      "gives that?",
                      "torch.rand_like is uniform on [0, 1); use torch.randn_like (normal)")
    if not std_is(want_std):
        got = f"std of z - mu is {fmt(std)} for sigma = {fmt(want_std)}"
        if std_is([1.0, 1.0]):
            raise Mistake(got, "eps is not scaled by the std: the spread of z - mu must be sigma",
                          _STD_MORE)
        if std_is([0.25, 4.0]):
            raise Mistake(got, "that spread is sigma^2, the variance; the noise is scaled by "
                               "sigma, the square root",
                          "exp(logvar) is the variance sigma^2; the std is exp(0.5 * logvar)")
        if std_is(torch.log(torch.tensor([0.25, 4.0])).abs()):
            raise Mistake(got, "logvar is not the std: it is the log of the variance sigma^2",
                          "std = torch.exp(0.5 * logvar)")
        raise Mistake(got, _STD_NUDGE, _STD_MORE)
    mu_row = torch.tensor([2.0, -1.0])
    if (mean.abs() > 0.1).any():
        if ((mean + mu_row).abs() < 0.1).all() or ((mean - mu_row).abs() < 0.1).all():
            raise Mistake(f"mean of z - mu is {fmt(mean)}, expected [0.00, 0.00]",
                          "z is centred at mu: add mu, once",
                          "z = mu + std * eps")
        raise Mistake(f"mean of z - mu is {fmt(mean)}, expected [0.00, 0.00]", _STD_NUDGE, _STD_MORE)


def _reparam_grad_case(fn):
    mu = torch.randn(3, 5, requires_grad=True)
    logvar = (0.5 * torch.randn(3, 5)).requires_grad_()
    z = _tensor(fn(mu, logvar), "z", _STD_NUDGE, _STD_MORE)
    if not z.requires_grad:
        raise Mistake("z carries no gradient",
                      _no_grad_hint("mu and logvar") + " (Normal(...).sample() is also cut off; "
                      "the trick is to keep the randomness outside the graph)",
                      "eps outside, mu + std * eps inside the graph")
    z.sum().backward()
    if mu.grad is None and logvar.grad is None:
        raise Mistake("no gradient reached mu or logvar", _no_grad_hint("mu and logvar"),
                      _no_grad_more("mu and logvar"))
    if mu.grad is None:
        raise Mistake("z does not depend on mu", "z is centred at mu", _STD_MORE)
    if logvar.grad is None:
        raise Mistake("z does not depend on logvar", "logvar sets the spread of z", _STD_MORE)
    if not _close(mu.grad, torch.ones_like(mu)):
        raise Mistake("the gradient with respect to mu is not 1",
                      "torch.normal(mu, std) passes no gradient to mu and logvar: the "
                      "randomness has to be a separate standard-normal input",
                      "sample eps = torch.randn_like(std), then z = mu + std * eps")


def check_reparameterize(fn: Callable) -> Callable:
    """Check ``fn(mu, logvar) -> z``: z = mu + exp(0.5 * logvar) * eps, eps ~ N(0, I).

    Exercise of ``03_reparameterization.ipynb``. Samples are random, so the check
    looks at their shape, their freshness (on every call and for every image),
    their mean and standard deviation over 20,000 draws, and the gradients;
    reference ``CVAE.reparameterize``.
    """
    cases = [
        ("shape (4, 20)", _reparam_shape_case),
        ("fresh noise on every call", _reparam_noise_case),
        ("mean mu, std exp(logvar / 2)", _reparam_stats_case),
        ("gradients reach mu and logvar", _reparam_grad_case),
    ]
    hints = [
        ("must match the size", "the noise must have the shape of mu, whatever the batch size",
         "eps must have the shape of mu: torch.randn_like(std)"),
        ("exp(): argument 'input'", "torch.exp needs a tensor, not a Python number",
         "torch.exp(0.5 * logvar)"),
    ]
    return _run_check("check_reparameterize", fn, cases, reference_reparameterize,
                      "lab_utils.model.CVAE.reparameterize", hints)


_KL_FORMULA = "KL = -0.5 * sum over dims of (1 + logvar - mu^2 - exp(logvar))"
_KL_NUDGE = ("compare your formula with the closed form of KL(N(mu, sigma^2) || N(0, 1)) "
             "(Kingma & Welling 2014, Appendix B), term by term")


def _kl_variants(mu: torch.Tensor, logvar: torch.Tensor) -> list[tuple[torch.Tensor, str, str, str]]:
    """Typical wrong KL formulas, each (value (B,), what it is, nudge, precise hint)."""
    D = mu.shape[1]
    ref = kl_divergence(mu, logvar)  # (B,)
    f = _KL_FORMULA
    reverse = 0.5 * torch.sum(logvar + (1 + mu.pow(2)) / logvar.exp() - 1, dim=1)  # KL(p || q)
    return [
        (-ref, "the sign is flipped", "a KL is never negative: look at the sign in front", f),
        (2 * ref, "twice the KL: the factor 0.5 is missing", "look at the factor in front", f),
        (-2 * ref, "minus twice the KL: the sign and the factor 0.5",
         "look at the factor and the sign in front", f),
        (reverse, "this is KL(p || q) = KL(N(0, I) || N(mu, sigma^2)), the reverse direction",
         "the ELBO's KL is KL(q || p): the encoder's Gaussian q = N(mu, sigma^2) comes first, "
         "the prior p = N(0, I) second; the KL is not symmetric",
         f"KL(q || p): {f}; KL(p || q) = 0.5 * sum(log sigma^2 + (1 + mu^2) / sigma^2 - 1)"),
        (-0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar, dim=1),
         "sigma^2 is taken as logvar", "logvar is the log of sigma^2, not sigma^2",
         f"sigma^2 = exp(logvar): {f}"),
        (-0.5 * torch.sum(1 + logvar - mu.pow(2) - torch.exp(0.5 * logvar), dim=1),
         "sigma^2 is taken as exp(0.5 * logvar)",
         "that is sigma, the standard deviation; the formula wants the variance",
         f"sigma^2 = exp(logvar), the std is exp(0.5 * logvar): {f}"),
        (-0.5 * torch.sum(1 + logvar - mu - logvar.exp(), dim=1),
         "mu appears where mu^2 should", "look at the power of the mean", f),
        (-0.5 * torch.sum(logvar - mu.pow(2) - logvar.exp(), dim=1),
         "the 1 + is missing", "a constant term is missing", f),
        (ref / D, "averaged over the latent dimensions",
         "the KL of independent dimensions adds up: don't average them",
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
            more = "sum over the latent dims only: .sum(dim=1)"
            if out.dim() == 0 and _close(out, ref.sum()) and not _close(out, ref.mean()):
                hint = "you summed over the batch too: keep one KL per image"
            elif out.dim() == 0 and _close(out, ref.mean()) and not _close(out, ref.sum()):
                hint = "you averaged over the batch: keep one KL per image"
            elif out.dim() == 0:
                hint = "one KL per image, not one number for the batch"
            elif got == (B, D):
                hint = "one KL per image: the latent dims still have to be added up"
            elif got == (B, 1):
                hint = "drop keepdim=True: the result has shape (B,)"
            elif got == (D,):
                hint = "you summed over the batch (dim=0); the latent dims are the other axis"
            else:
                hint = "one KL per image: shape (B,)"
            raise Mistake(f"shape {got}, expected ({B},)", hint, more)
        if _close(out, ref):
            return
        for value, what, nudge, more in _kl_variants(mu, logvar):
            if _close(out, value):
                raise Mistake(f"values wrong: {what}", nudge, more)
        raise Mistake(f"values wrong (max difference {_max_diff(out, ref)})", _KL_NUDGE, _KL_FORMULA)
    return run


def _kl_grad_case(fn):
    mu = torch.randn(4, 6, requires_grad=True)
    logvar = (0.8 * torch.randn(4, 6)).requires_grad_()
    out = fn(mu, logvar)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise Mistake("the result carries no gradient", _no_grad_hint("mu and logvar"),
                      _no_grad_more("mu and logvar"))
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
        ("exp(): argument 'input'", "torch.exp needs a tensor, not a Python number",
         "logvar.exp() or torch.exp(logvar)"),
        ("Dimension out of range", "mu and logvar are (B, D): which axis holds the latent dims?",
         "sum over dim=1"),
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
_DECODER_NUDGE = ("use the decoder's own layers in order: z and the label side by side, the "
                  "hidden layer, small channels-first feature maps, the convolutions")


def _new_decoder(seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(CONFIGS["lab"])


def _decoder_case(B: int, seed: int):
    def run(fn):
        decoder = _new_decoder(seed)
        z = torch.randn(B, decoder.config.latent_dim)
        y = torch.randint(0, NUM_CLASSES, (B,))
        x_hat = _tensor(fn(decoder, z, y), "x_hat", "return the image batch", _DECODER_STEPS)
        want = (B, 1, 28, 28)
        if _shape(x_hat) != want:
            got = _shape(x_hat)
            if got == (B, 784):
                hint = "return the images as (B, 1, 28, 28): decoder.conv already gives that shape"
            elif got == (B, 392):
                hint = "the hidden features still have to go through the convolutions"
            else:
                hint = _DECODER_NUDGE
            raise Mistake(f"shape {got}, expected {want}", hint, _DECODER_STEPS)
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
                                 "the decoder was built for z first, then the label"),
                "channels last": ("the 392 features are reshaped channels-last",
                                  "PyTorch images are channels first: (B, C, H, W)"),
                "no relu": ("the ReLU after the Linear layer is missing",
                            "call decoder.fc(h), all of it: it is Linear then ReLU"),
            }
            for kind, (what, hint) in variants.items():
                if _close(x_hat, _decoder_variant(decoder, z, y, kind)):
                    raise Mistake(f"values wrong: {what}", hint)
        raise Mistake(f"values differ from the decoder's own forward (max difference "
                      f"{_max_diff(x_hat, ref)})", _DECODER_NUDGE, _DECODER_STEPS)
    return run


def _decoder_grad_case(fn):
    decoder = _new_decoder(1)
    z = torch.randn(3, decoder.config.latent_dim, requires_grad=True)
    y = torch.tensor([2, 7, 7])
    x_hat = _tensor(fn(decoder, z, y), "x_hat", "return the image batch", _DECODER_STEPS)
    if not x_hat.requires_grad:
        raise Mistake("x_hat carries no gradient", _no_grad_hint("z and the decoder"),
                      _no_grad_more("z, y and the decoder's layers"))
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
                          "numbers per image", "torch.cat([z, one_hot(y)], dim=1)"),
        ("channels", "decoder.conv wants (B, 2, 14, 14), channels first",
         "reshape with .view(B, 2, 14, 14)"),
        ("shape '[", "the batch size comes from z, never a fixed number",
         "reshape the 392 features with .view(-1, 2, 14, 14)"),
        ("Sizes of tensors must match", "z and the label go side by side, one row per image",
         "torch.cat([z, one_hot(y)], dim=1)"),
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


_LOSS_MORE = "loss = loss_function(x_hat, x, mu, logvar) with x_hat, mu, logvar = model(x, y)"


def _loss_terms(seed: int, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(summed BCE, summed KL) of a fresh lab model's forward pass with noise ``seed``."""
    model, _ = _new_model_and_optimizer()
    torch.manual_seed(seed)
    with torch.no_grad():
        x_hat, mu, logvar = model(x, y)
        return bce(x_hat, x).sum().item(), kl_divergence(mu, logvar).sum().item()


def _check_returned_loss(out, ref_loss: float, B: int, terms: tuple[float, float] | None = None) -> None:
    if isinstance(out, torch.Tensor):
        raise Mistake("returned a tensor, expected a Python float",
                      "return a plain number (a tensor keeps the whole graph in memory)",
                      "return loss.item()")
    if out is None:
        raise Mistake("returned None, expected the batch's loss as a float",
                      "the function must return the batch's loss as a Python number", "return loss.item()")
    if isinstance(out, bool) or not isinstance(out, float):
        raise Mistake(f"returned a {type(out).__name__}, expected a float",
                      "the function must return the batch's loss as a Python number", "return loss.item()")
    if math.isclose(out, ref_loss, rel_tol=1e-4):
        return
    if math.isclose(out, ref_loss / B, rel_tol=1e-4):
        raise Mistake(f"returned {out:.2f}, the mean per image; expected the batch's sum {ref_loss:.2f}",
                      "the loss of a batch is the sum over its images: don't divide by the batch size",
                      "return the summed loss that loss_function gives")
    if terms is not None:
        rec, kl = terms  # both summed over the batch (and the pixels, the latent dims)
        n_pix = B * 784
        if any(math.isclose(out, v, rel_tol=1e-4) for v in (rec / n_pix + kl, rec / n_pix + kl / B)):
            raise Mistake(
                f"returned {out:.2f}, expected {ref_loss:.2f}: the BCE is averaged over the pixels "
                f"(F.binary_cross_entropy's default reduction, \"mean\")",
                f"averaging the reconstruction over 784 pixels weights the KL term 784 times more "
                f"relative to it ({n_pix} times here, where the KL is summed over the batch too): "
                f"the model learns to ignore z; the BCE must be summed like the KL",
                "reduction=\"sum\" (or lab_utils.losses.loss_function, which sums both terms)")
        if math.isclose(out, rec, rel_tol=1e-4) or math.isclose(out, rec / n_pix, rel_tol=1e-4):
            raise Mistake(f"returned {out:.2f}, expected {ref_loss:.2f}: the KL term is missing",
                          "the loss is the negative ELBO, reconstruction plus KL; without the KL "
                          "the model is a plain autoencoder and sampling from the prior fails",
                          _LOSS_MORE)
    raise Mistake(f"returned {out:.2f}, expected {ref_loss:.2f}",
                  "the loss is the batch's summed negative ELBO (reconstruction + KL) of this "
                  "forward pass", _LOSS_MORE)


def _check_step_params(model: CVAE, ref_model: CVAE, initial: list[torch.Tensor]) -> None:
    if _same_params(model, ref_model):
        return
    if all(torch.equal(p, q) for p, q in zip(model.parameters(), initial)):
        grads = [p.grad for p in model.parameters()]
        if all(g is None for g in grads):
            raise Mistake("the parameters did not change and have no gradients",
                          "the optimizer's step needs the gradients that backward computes",
                          "the order is optimizer.zero_grad(), loss.backward(), optimizer.step()")
        if all(g is None or not g.any() for g in grads):
            raise Mistake("the parameters did not change: the gradients are all zero",
                          "clearing the gradients after backward wipes them before the update: "
                          "look at the order",
                          "the order is optimizer.zero_grad(), loss.backward(), optimizer.step()")
        raise Mistake("the parameters did not change",
                      "the gradients are there but the weights were never updated",
                      "call optimizer.step() after loss.backward()")
    raise Mistake("the parameters differ from one Adam step on loss_function",
                  "clear, backward and update once each, on this step's summed negative ELBO",
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
    _check_returned_loss(out, ref_loss, x.shape[0], _loss_terms(11, x, y))
    if not _same_params(model, ref_model):
        bce_model, bce_optimizer = _new_model_and_optimizer()
        torch.manual_seed(11)
        x_hat, _, _ = bce_model(x, y)
        bce_optimizer.zero_grad()
        bce(x_hat, x).sum().backward()
        bce_optimizer.step()
        if _same_params(model, bce_model):
            raise Mistake("the KL term is missing: the weights took a step on the BCE alone",
                          "the loss is the negative ELBO, reconstruction plus KL; without the KL "
                          "the model is a plain autoencoder and sampling from the prior fails "
                          "(the KL of a fresh model is tiny, so the returned loss looks right)",
                          _LOSS_MORE)
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
                          "PyTorch adds each backward's gradients to those already stored: what "
                          "clears them, and when?",
                          "call optimizer.zero_grad() before loss.backward()")
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
        ("has no attribute 'backward'", "backward is a method of the loss tensor, not of a "
                                        "Python number", "call loss.backward(), then return loss.item()"),
        ("does not require grad", "the loss must come from the model's forward pass with "
                                  "gradients on", "no torch.no_grad() or .detach()"),
        ("Trying to backward through the graph a second time",
         "backward once per step, on a loss computed in this step", ""),
    ]
    return _run_check("check_train_step", fn, cases, reference_train_step,
                      "lab_utils.train.train_step", hints)


# --------------------------------------------------------------------------
# 06: the slant of a digit
# --------------------------------------------------------------------------

def _slant_images() -> torch.Tensor:
    """(6, 1, 28, 28): slanted and upright strokes and a few blobs of grey ink."""
    x = torch.zeros(6, 1, 28, 28)
    for row in range(4, 24):
        x[0, 0, row, 13:16] = 1  # upright
        x[1, 0, row, 8 + (24 - row) // 2: 11 + (24 - row) // 2] = 1  # leans right
        x[2, 0, row, 18 - (24 - row) // 3: 21 - (24 - row) // 3] = 0.7  # leans left
    g = torch.Generator().manual_seed(3)
    x[3:] = torch.rand(3, 1, 28, 28, generator=g) * (torch.rand(3, 1, 28, 28, generator=g) > 0.8)
    x[3:, :, :4] = 0
    return x


def _slant_case(fn):
    x = _slant_images()
    out = _tensor(fn(x.clone()), "the result", "return one slant per image, a tensor of shape (N,)")
    ref = reference_slant(x)  # (N,)
    N = x.shape[0]
    if _shape(out) != (N,):
        more = "sum over both pixel axes, (1, 2), and drop the size-1 channel axis first"
        if _shape(out) in ((N, 1), (N, 1, 1)):
            raise Mistake(f"shape {_shape(out)}, expected ({N},)",
                          "one number per image: drop the extra axis", more)
        if _shape(out) in ((N, 28), (N, 1, 28)):
            raise Mistake(f"shape {_shape(out)}, expected ({N},): one slant per column",
                          "the moments are sums over every pixel of the image, rows and columns",
                          more)
        raise Mistake(f"shape {_shape(out)}, expected ({N},)", "one slant per image: shape (N,)", more)
    if _close(out, ref, atol=1e-4, rtol=1e-3):
        return
    i, j = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    xs = x[:, 0]
    mass = xs.sum((1, 2))
    r = i - (xs * i).sum((1, 2)).view(-1, 1, 1) / mass.view(-1, 1, 1)
    c = j - (xs * j).sum((1, 2)).view(-1, 1, 1) / mass.view(-1, 1, 1)
    mu11, mu02 = (xs * r * c).sum((1, 2)), (xs * r * r).sum((1, 2))
    mu20 = (xs * c * c).sum((1, 2))
    variants = [
        (-ref, "the sign is flipped: right-leaning digits come out negative",
         "rows count downwards, so one row up is r = -1: mind the sign",
         "slant = -mu11 / mu02"),
        (-mu11, "the moment mu11 is not divided by mu02 (not normalised)",
         "the slope of a least-squares line is a ratio of two moments",
         "slant = -mu11 / mu02, mu02 = sum of x * r * r"),
        (-mu11 / mass, "mu11 is divided by the mass, not by mu02",
         "the slope of the line c = beta * r divides by the spread of the rows",
         "slant = -mu11 / mu02, mu02 = sum of x * r * r"),
        (-mu11 / mu20, "mu11 is divided by the spread of the columns, not of the rows",
         "the line is c = beta * r: the denominator is about r",
         "slant = -mu11 / mu02, mu02 = sum of x * r * r"),
    ]
    for value, what, nudge, more in variants:
        if _close(out, value, atol=1e-4, rtol=1e-3):
            raise Mistake(f"values wrong: {what}", nudge, more)
    raise Mistake(f"values wrong (max difference {_max_diff(out, ref)})", EXERCISES["slant"][1],
                  EXERCISES["slant"][2])


def check_slant(fn: Callable) -> Callable:
    """Check ``fn(x: (N, 1, 28, 28)) -> (N,)``, the slant from the image moments.

    Exercise of ``06_exploring.ipynb``; reference ``lab_utils.evaluation.slant``.
    """
    def real_sign(fn):
        x = _slant_images()[:3]
        out = fn(x.clone())
        if isinstance(out, torch.Tensor) and out.numel() == 3:
            s = out.detach().flatten()
            if not (abs(s[0]) < 1e-3 and s[1] > 0 and s[2] < 0):
                raise Mistake("an upright stroke must give 0, a right-leaning one > 0, a "
                              "left-leaning one < 0", EXERCISES["slant"][1], "slant = -mu11 / mu02")
    cases = [("strokes and blobs", _slant_case), ("upright 0, right > 0, left < 0", real_sign)]
    return _run_check("check_slant", fn, cases, reference_slant, "lab_utils.evaluation.slant",
                      [("must match the size", "r is (28, 1) and c is (1, 28) against x (N, 28, 28): "
                        "look at which axes broadcast", "r = torch.arange(28.0).view(1, 28, 1)")])


# --------------------------------------------------------------------------
# 07: the IWAE bound from log weights
# --------------------------------------------------------------------------

def _iwae_case(K: int, B: int, centre: float, spread: float):
    def run(fn):
        g = torch.Generator().manual_seed(K * 100 + B)
        log_w = centre + spread * torch.randn(K, B, generator=g)  # (K, B)
        out = _tensor(fn(log_w.clone()), "the result", "return one bound per image, shape (B,)")
        ref = iwae_from_log_weights(log_w)  # (B,)
        if _shape(out) != (B,):
            if _shape(out) == (K,):
                raise Mistake(f"shape {_shape(out)}, expected ({B},): reduced over the images",
                              "log_w is (K, B): the K samples are the first axis",
                              "torch.logsumexp(log_w, dim=0)")
            raise Mistake(f"shape {_shape(out)}, expected ({B},)", "one bound per image: shape (B,)")
        if _close(out, ref, atol=1e-3):
            return
        if not torch.isfinite(out).all():
            raise Mistake("inf or nan: exp of log weights near -100 underflows to 0 in float32",
                          "never leave log space: a log of a mean of exps needs the largest "
                          "log weight taken out first",
                          "torch.logsumexp(log_w, dim=0) - math.log(K)")
        variants = [
            (log_w.mean(0), "the mean of log_w: that is the ELBO estimate, not the IWAE bound",
             "the bound is the log of the mean of the weights, not the mean of their logs",
             "torch.logsumexp(log_w, dim=0) - math.log(K)"),
            (torch.logsumexp(log_w, 0), "the - log K is missing: that is the log of the sum",
             "a mean is a sum divided by K", "subtract math.log(K)"),
            (log_w.max(0).values, "the largest log weight, not the logsumexp",
             "the max is only the largest term of the sum", "torch.logsumexp(log_w, dim=0) - math.log(K)"),
            (log_w.max(0).values - math.log(K), "the max minus log K, not the logsumexp",
             "the max is only the largest term of the sum", "torch.logsumexp(log_w, dim=0) - math.log(K)"),
        ]
        for value, what, nudge, more in variants:
            if _close(out, value, atol=1e-3):
                raise Mistake(f"values wrong: {what}", nudge, more)
        raise Mistake(f"values wrong (max difference {_max_diff(out, ref)})",
                      EXERCISES["iwae_bound"][1], EXERCISES["iwae_bound"][2])
    return run


def _iwae_square_case(fn):
    """K = B, so the wrong axis keeps the shape; only the values tell."""
    g = torch.Generator().manual_seed(9)
    log_w = -100 + 3 * torch.randn(6, 6, generator=g)  # (K, B)
    out = _tensor(fn(log_w.clone()), "the result", "return one bound per image, shape (B,)")
    if _close(out, iwae_from_log_weights(log_w), atol=1e-3):
        return
    if _close(out, torch.logsumexp(log_w, 1) - math.log(6), atol=1e-3):
        raise Mistake("values wrong: the logsumexp runs over the images (dim=1), not the samples",
                      "log_w is (K, B): the K samples are the first axis",
                      "torch.logsumexp(log_w, dim=0)")
    raise Mistake(f"values wrong (max difference {_max_diff(out, iwae_from_log_weights(log_w))})",
                  EXERCISES["iwae_bound"][1], EXERCISES["iwae_bound"][2])


def check_iwae_bound(fn: Callable) -> Callable:
    """Check ``fn(log_w: (K, B)) -> (B,)``: log (1/K) sum_k exp(log_w[k]), in log space.

    Exercise of ``07_likelihood.ipynb``; reference ``lab_utils.losses.iwae_from_log_weights``.
    The log weights of real digits lie around -100 nats, where exp underflows in float32.
    """
    cases = [
        ("K = 5, log weights near 0", _iwae_case(5, 3, 0.0, 1.0)),
        ("K = 50, log weights near -120 (exp underflows)", _iwae_case(50, 4, -120.0, 5.0)),
        ("K = B = 6", _iwae_square_case),
    ]
    return _run_check("check_iwae_bound", fn, cases, iwae_from_log_weights,
                      "lab_utils.losses.iwae_from_log_weights")


# --------------------------------------------------------------------------
# 08: the active units of a code
# --------------------------------------------------------------------------

def _units_list(out, D: int) -> list[int]:
    """The student's answer as a sorted list of ints, or a Mistake saying what it was."""
    if isinstance(out, (bool, int, float)):
        raise Mistake(f"returned the number {out}, expected the list of active dimensions",
                      "return the indices j of the active units, not their count",
                      "a list comprehension over enumerate(activity.tolist())")
    if isinstance(out, torch.Tensor):
        if out.dtype == torch.bool or (out.dim() == 1 and out.numel() == D and out.dtype.is_floating_point):
            raise Mistake(f"returned a tensor of {out.numel()} {'booleans' if out.dtype == torch.bool else 'values'}"
                          ", one per dimension, not the indices of the active ones",
                          "return the indices j where the test holds",
                          "mask.nonzero().flatten().tolist() turns a boolean mask into indices")
        out = out.flatten().tolist()
    if not isinstance(out, (list, tuple)):
        raise Mistake(f"returned a {type(out).__name__}, expected a list of ints",
                      "return the indices j of the active units as a list")
    if any(isinstance(v, bool) for v in out):
        raise Mistake(f"returned {len(out)} booleans, one per dimension, not the indices of the active ones",
                      "return the indices j where the test holds",
                      "[j for j, a in enumerate(...) if a > threshold]")
    try:
        return sorted(int(v) for v in out)
    except (TypeError, ValueError):
        raise Mistake("the list holds something other than whole numbers",
                      "return the indices j (ints) of the active units") from None


def _units_case(make: Callable[[], torch.Tensor]):
    def run(fn):
        mu = make()  # (N, D)
        N, D = mu.shape
        got = _units_list(fn(mu.clone()), D)
        ref = reference_active_units(mu)
        if got == ref:
            return
        if any(j < 0 or j >= D for j in got):
            raise Mistake(f"{len(got)} indices, up to {max(got)}, for D = {D} dimensions: computed "
                          f"per image (over dim 1) instead of per dimension?",
                          "mu is (N, D): the N images are the first axis, reduce over it",
                          "mu.var(dim=0, correction=0)")
        variants = [
            (mu.std(0) > 0.01, "the standard deviation compared with 0.01, not the variance",
             "Burda et al.'s test is on the variance Cov_x(E[z_j]); compare the variance itself",
             "mu.var(dim=0, correction=0) > threshold"),
            (mu.pow(2).mean(0) > 0.01, "the mean square of mu, not its variance: a unit that sits "
             "away from 0 without moving counts as active",
             "a variance measures spread around each dimension's own mean: subtract it first",
             "mu.var(dim=0, correction=0)"),
            (mu.mean(0).abs() > 0.01, "the mean of mu, not its variance",
             "an active unit moves with the image: measure the spread, not the position",
             "mu.var(dim=0, correction=0)"),
        ]
        if N == D:  # only then does a reduction over the wrong axis keep the length
            variants.append((mu.var(1, correction=0) > 0.01,
                             "the variance over the dimensions (dim 1), not over the images",
                             "mu is (N, D): the N images are the first axis, reduce over it",
                             "mu.var(dim=0, correction=0)"))
        for mask, what, nudge, more in variants:
            if got == mask.nonzero().flatten().tolist() and got != ref:
                raise Mistake(f"units {got}, expected {ref}: {what}", nudge, more)
        raise Mistake(f"units {got}, expected {ref}",
                      EXERCISES["active_units"][1], EXERCISES["active_units"][2])
    return run


def _units_spread() -> torch.Tensor:
    """Eight dimensions whose spreads straddle the cut: std 0.05 and 0.02 are
    above 0.01 but their variances (0.0025, 0.0004) are below it."""
    g = torch.Generator().manual_seed(11)
    scale = torch.tensor([1.0, 0.5, 0.2, 0.05, 0.001, 0.3, 0.0, 0.02])
    return torch.randn(500, 8, generator=g) * scale  # (500, 8)


def _units_offset() -> torch.Tensor:
    """Collapsed units that do not sit at 0: a constant 1.5 with a 0.01 sd."""
    g = torch.Generator().manual_seed(12)
    mu = torch.randn(300, 5, generator=g) * torch.tensor([0.8, 0.01, 0.01, 0.6, 0.01])  # (300, 5)
    return mu + torch.tensor([0.0, 1.5, -1.5, 0.3, 0.0])


def _units_square() -> torch.Tensor:
    """N = D = 6: the wrong axis keeps the length; only the values tell."""
    g = torch.Generator().manual_seed(13)
    return torch.randn(6, 6, generator=g) * torch.tensor([0.6, 0.0, 0.4, 0.01, 0.9, 0.0])  # (6, 6)


def check_active_units(fn: Callable) -> Callable:
    """Check ``fn(mu: (N, D)) -> list of ints``: the dimensions j whose variance over
    the N images exceeds 0.01 (Burda et al. 2016's count of active units).

    Exercise of ``08_sample_quality.ipynb``; reference
    ``lab_utils.evaluation.active_from_means``.
    """
    cases = [
        ("N = 500, D = 8, spreads on both sides of the cut", _units_case(_units_spread)),
        ("collapsed units away from 0", _units_case(_units_offset)),
        ("N = D = 6", _units_case(_units_square)),
    ]
    return _run_check("check_active_units", fn, cases, reference_active_units,
                      "lab_utils.evaluation.active_from_means")


# --------------------------------------------------------------------------
# 09: the centre of mass of a drawing
# --------------------------------------------------------------------------

def _com_block() -> torch.Tensor:
    a = torch.zeros(28, 28)
    a[3:9, 15:24] = 1.0  # up and to the right: row != column
    a[5, 16] = 0.2
    return a


def _com_grey() -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    b = torch.rand(28, 28, generator=g) * (torch.rand(28, 28, generator=g) > 0.85)  # grey ink
    b[:, :6] = 0
    return b


def _com_tall() -> torch.Tensor:
    # to_mnist centres the digit after fitting it into 20 px, so the image it
    # gets is rarely square: here (20, 11), a tall digit's size
    g = torch.Generator().manual_seed(5)
    return torch.rand(20, 11, generator=g) * (torch.linspace(0, 1, 11) ** 2)  # (20, 11)


def _com_case(make: Callable[[], torch.Tensor]):
    def run(fn):
        _com_one(fn, make())
    return run


def _com_one(fn, image: torch.Tensor) -> None:
    """One image: the pair must be (row, column) of its brightness-weighted centre."""
    out = fn(image.clone())
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mistake(f"returned a {type(out).__name__}, expected a pair (row, column)",
                      "return two numbers, the row first")
    row, col = (float(v) for v in out)
    ref_row, ref_col = reference_center_of_mass(image)
    if abs(row - ref_row) < 1e-3 and abs(col - ref_col) < 1e-3:
        return
    if abs(row - ref_col) < 1e-3 and abs(col - ref_row) < 1e-3:
        raise Mistake("(column, row) instead of (row, column)",
                      "the first index of an image is its row (y), the second its column (x)",
                      "return row, column")
    if (abs(abs(row - ref_row) - 1) < 1e-3 and abs(col - ref_col) < 1e-3 + 1) or \
            (abs(abs(col - ref_col) - 1) < 1e-3 and abs(row - ref_row) < 1e-3 + 1):
        raise Mistake("off by one pixel", "pixel indices start at 0",
                      "torch.arange(H), not torch.arange(1, H + 1)")
    ink = (image > 0.5).float() if image.max() > 0.5 else (image > 0).float()
    for mask in ((image > 0).float(), (image > 0.5).float(), ink):
        if mask.sum() > 0:
            rr, cc = reference_center_of_mass(mask)
            if abs(row - rr) < 1e-3 and abs(col - cc) < 1e-3:
                raise Mistake("the unweighted mean of the inked pixels (thresholded)",
                              "each pixel counts as much as its ink: weight by brightness, "
                              "no threshold",
                              EXERCISES["center_of_mass"][2])
    raise Mistake(f"({row:.2f}, {col:.2f}), expected ({ref_row:.2f}, {ref_col:.2f})",
                  EXERCISES["center_of_mass"][1], EXERCISES["center_of_mass"][2])


def check_center_of_mass(fn: Callable) -> Callable:
    """Check ``fn(image: (H, W)) -> (row, column)``, the brightness-weighted centre.

    Exercise of ``09_your_handwriting.ipynb``; reference ``lab_utils.handwriting.center_of_mass``.
    """
    cases = [
        ("a block up and to the right", _com_case(_com_block)),
        ("grey ink", _com_case(_com_grey)),
        ("a (20, 11) image, not square", _com_case(_com_tall)),
    ]
    return _run_check("check_center_of_mass", fn, cases,
                      reference_center_of_mass, "lab_utils.handwriting.center_of_mass")
