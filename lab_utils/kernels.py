"""Compiled CPU kernels for the lab CVAE's two narrow convolution stacks.

``lab_utils.fast`` computes the training loss through these kernels when they
load, and through its PyTorch route when they do not. Both are the same
function of the weights as the plain model (``tests/test_kernels.py`` compares
losses and gradients on real batches).

Why hand-written kernels: the lab model's convolutions have 1 to 11 channels.
A library convolution vectorises along the channels, so with 3 channels most
of a 16-float vector register is idle, and each of the step's dozen small
convolutions, ReLUs, reshapes and their backward passes reads and writes its
whole activation tensor through memory. ``kernels.cpp`` instead vectorises along
the *batch* (16 images side by side, one per vector lane, so every
multiply-add does useful work whatever the channel count) and takes a chunk of
16 images through a whole stack while it is in the CPU's cache, applying the
label's bias map, the ReLUs, the folded upsampling, the sigmoid and the binary
cross-entropy in the same pass. What stays in PyTorch: the Linear
layers (large matrix products, which PyTorch already runs well), the
reparameterization and the KL term.

The two stacks, as ``torch.autograd.Function``\\ s (forward and backward by hand):

* :func:`encoder_convs`: image (B, 1, 28, 28) and label -> conv 1->3 plus the
  label's bias map (``fast.label_bias_maps`` derives it; here it is 9 numbers per
  class and channel: inside, the four border rows and columns, the four corners),
  ReLU -> conv 3->1, ReLU -> (B, 784), the input of the encoder's ``Linear(784, 400)``.
* :func:`decoder_bce`: the decoder's (B, 392) start maps (after its Linear and
  ReLU) -> conv 2->11, ReLU -> 2x upsampling -> conv 11->3, ReLU -> conv 3->1 ->
  sigmoid -> binary cross-entropy against the image, summed per image: (B,),
  ``losses.bce`` of the decoded image.

The source is compiled on first use with the system's C++ compiler (``g++``, or
``$CXX``), which takes a few seconds; the library is cached (:func:`cache_dir`),
written atomically, and named by a hash of the source, the compiler, the flags,
the CPU and the PyTorch version, so a change of any of them builds its own. Without a compiler (or with ``CVAE_LAB_KERNELS=0``)
:func:`load` returns None, :func:`why_not` says why, and training takes the
PyTorch route at its old speed. Taught in ``05_training.ipynb``.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from .model import CVAEConfig

SOURCE = Path(__file__).with_name("kernels.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
LANES = 16  # images per chunk (kernels.cpp's L): the vector length

_lock = threading.Lock()
_state: dict = {}  # "lib": the loaded library or None, "why": the reason it is None


def cache_dir() -> Path:
    """Where the compiled library is kept: ``$CVAE_LAB_CACHE``, else
    ``$XDG_CACHE_HOME/cvae_lab``, else ``~/.cache/cvae_lab``."""
    if os.environ.get("CVAE_LAB_CACHE"):
        return Path(os.environ["CVAE_LAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cvae_lab"


def _cpu_signature() -> str:
    """The CPU's model and instruction-set flags: ``-march=native`` code is only
    valid on a CPU with the same flags, so they are part of the library's name."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return platform.processor() or platform.machine()


def compiler() -> str:
    """The C++ compiler the kernels are built with: ``$CXX``, else ``g++``
    (``$CXX`` may carry arguments, e.g. ``ccache g++``)."""
    return os.environ.get("CXX") or "g++"


def library_path(compiler: str, source: bytes | None = None) -> Path:
    """The cached library's path: a hash of the source, compiler, flags, CPU and PyTorch."""
    key = hashlib.sha256()
    source = SOURCE.read_bytes() if source is None else source
    for part in (source, compiler.encode(), " ".join(FLAGS).encode(),
                 _cpu_signature().encode(), torch.__version__.encode()):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"


def build(compiler: str, path: Path, source: bytes | None = None) -> None:
    """Compile ``source`` (``kernels.cpp``'s bytes, the ones its name was hashed
    from) into ``path``: into a temporary file beside it, flushed to disk, then
    renamed over it, so a reader never sees half a library (two processes that
    build at once both end with a whole one)."""
    source = SOURCE.read_bytes() if source is None else source
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        done = subprocess.run([*shlex.split(compiler), *FLAGS, "-x", "c++", "-o", tmp, "-"],
                              input=source, capture_output=True, timeout=300)
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"{compiler} failed on {SOURCE.name}:\n{err}")
        os.chmod(tmp, 0o755)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_VOID, _INT = ctypes.c_void_p, ctypes.c_int
_SIGNATURES = {
    "cvae_enc_forward": [_INT, _VOID, _VOID, _INT] + [_VOID] * 6 + [_INT],
    "cvae_enc_backward": [_INT, _VOID, _VOID, _INT] + [_VOID] * 8 + [_INT],
    "cvae_dec_forward": [_INT] + [_VOID] * 11 + [_INT],
    "cvae_dec_backward": [_INT] + [_VOID] * 14 + [_INT],
}


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, args in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, None
    for name in ("cvae_enc_saved_floats", "cvae_enc_scratch_floats",
                 "cvae_dec_saved_floats", "cvae_dec_scratch_floats"):
        getattr(lib, name).restype = ctypes.c_long
    return lib


def load() -> ctypes.CDLL | None:
    """The compiled kernels (built on first use), or None where they cannot be
    had: ``CVAE_LAB_KERNELS=0``, no C++ compiler, a failed build, or a CPU other
    than x86-64 or ARM64. :func:`why_not` says which."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        lib, why = None, ""
        cxx = compiler()
        if os.environ.get("CVAE_LAB_KERNELS", "1") == "0":
            why = "switched off by CVAE_LAB_KERNELS=0"
        elif platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"):
            why = f"kernels.cpp targets x86-64 and ARM64 CPUs, not {platform.machine()}"
        elif not shlex.split(cxx) or shutil.which(shlex.split(cxx)[0]) is None:
            why = (f"no C++ compiler: '{cxx}' is not on PATH (install g++, e.g. "
                   f"`apt install g++`, or point $CXX at one)")
        else:
            try:
                source = SOURCE.read_bytes()
                path = library_path(cxx, source)
                if not path.exists():
                    build(cxx, path, source)
                try:
                    lib = _open(path)
                except (OSError, AttributeError):  # a damaged cached file: build it again, once
                    path.unlink(missing_ok=True)
                    build(cxx, path, source)
                    lib = _open(path)
            except (OSError, AttributeError, RuntimeError, subprocess.SubprocessError) as e:
                why = f"could not build or load the kernels: {e}"
        _state.update(lib=lib, why=why)
        return lib


def why_not() -> str:
    """Why :func:`load` returned None ('' when the kernels loaded)."""
    load()
    return _state["why"]


def _reset() -> None:
    """Forget the loaded library, so that :func:`load` looks again (for tests)."""
    with _lock:
        _state.clear()


@contextmanager
def switched(on: bool):
    """A block run with the kernels on or off (``CVAE_LAB_KERNELS``), the variable
    and the loaded state restored after: both routes compared in one process
    (``benchmarks/train_speed.py``, ``tests/test_kernels.py``)."""
    before = os.environ.get("CVAE_LAB_KERNELS")
    os.environ["CVAE_LAB_KERNELS"] = "1" if on else "0"
    _reset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["CVAE_LAB_KERNELS"]
        else:
            os.environ["CVAE_LAB_KERNELS"] = before
        _reset()


def supports(config: CVAEConfig) -> bool:
    """True for the lab architecture, the one shape ``kernels.cpp`` is written for
    (conditional or not: the lab-vae model passes no label maps)."""
    return (config.image_size == 28 and config.num_classes == 10
            and tuple(config.enc_channels) == (3, 1) and tuple(config.enc_strides) == (1, 1)
            and config.dec_start_channels == 2 and config.dec_start_size == 14
            and tuple(config.dec_channels) == (11, 3)
            and tuple(config.dec_upsample) == (True, False))


def usable(x: torch.Tensor) -> bool:
    """Whether a batch can go through the kernels: float32 on the CPU, kernels loaded."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and load() is not None


def _p(t: torch.Tensor) -> int:
    return t.data_ptr()


def _empty(*shape: int) -> torch.Tensor:
    """A float32 buffer for the C code, whatever torch's default dtype."""
    return torch.empty(*shape, dtype=torch.float32)


def _chunks(batch: int) -> int:
    return -(-batch // LANES)


class _EncoderConvs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, w1, b1, w2, b2):
        lib = load()
        batch, in_channels = x.shape[0], w1.shape[1]
        saved = _empty(_chunks(batch) * lib.cvae_enc_saved_floats())
        h2 = _empty(batch, 28 * 28)
        lib.cvae_enc_forward(batch, _p(x), _p(y), in_channels, _p(w1), _p(b1), _p(w2), _p(b2),
                             _p(saved), _p(h2), torch.get_num_threads())
        ctx.saved, ctx.in_channels = saved, in_channels
        ctx.save_for_backward(y, w2)
        return h2

    @staticmethod
    @once_differentiable
    def backward(ctx, dh2):
        lib = load()
        y, w2 = ctx.saved_tensors
        dh2 = dh2.contiguous()  # kept in a name: a temporary's memory is freed before the call
        batch, chunks, c_in = y.shape[0], _chunks(y.shape[0]), ctx.in_channels
        scratch = _empty(chunks * lib.cvae_enc_scratch_floats())
        partial = _empty(chunks * (27 * c_in + 31))
        dw1, db1, dw2, db2 = _empty(3, c_in, 3, 3), _empty(3), _empty(1, 3, 3, 3), _empty(1)
        lib.cvae_enc_backward(batch, _p(dh2), _p(y), c_in, _p(w2), _p(ctx.saved), _p(scratch),
                              _p(partial), _p(dw1), _p(db1), _p(dw2), _p(db2), torch.get_num_threads())
        return None, None, dw1, db1, dw2, db2


class _DecoderBCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h0, x, wa, ba, wb, bb, wc, bc):
        lib = load()
        batch, chunks = h0.shape[0], _chunks(h0.shape[0])
        saved = _empty(chunks * lib.cvae_dec_saved_floats())
        scratch = _empty(chunks * lib.cvae_dec_scratch_floats())
        out = _empty(batch)
        lib.cvae_dec_forward(batch, _p(h0), _p(x), _p(wa), _p(ba), _p(wb), _p(bb), _p(wc), _p(bc),
                             _p(saved), _p(scratch), _p(out), torch.get_num_threads())
        ctx.saved, ctx.scratch, ctx.batch = saved, scratch, batch  # the scratch keeps the images
        ctx.save_for_backward(wa, wb, wc)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        lib = load()
        wa, wb, wc = ctx.saved_tensors
        dout = dout.contiguous()  # (B,); a sum's gradient arrives expanded (stride 0)
        batch, chunks = ctx.batch, _chunks(ctx.batch)
        partial = _empty(chunks * (198 + 11 + 297 + 3 + 27 + 1))
        dh0 = _empty(batch, 392)
        grads = [_empty(11, 2, 3, 3), _empty(11), _empty(3, 11, 3, 3), _empty(3),
                 _empty(1, 3, 3, 3), _empty(1)]
        lib.cvae_dec_backward(batch, _p(dout), _p(wa), _p(wb), _p(wc),
                              _p(ctx.saved), _p(ctx.scratch), _p(partial), _p(dh0),
                              *[_p(g) for g in grads], torch.get_num_threads())
        return (dh0, None, *grads)


def _f32(t: torch.Tensor) -> torch.Tensor:
    """``t`` as the kernels read it: contiguous float32 on the CPU (anything else is refused:
    the C code would read its bytes as float32)."""
    if t.dtype != torch.float32 or t.device.type != "cpu":
        raise TypeError(f"lab_utils.kernels takes float32 tensors on the CPU, got {t.dtype} on "
                        f"{t.device}: use lab_utils.fast.loss_terms, which picks a route that fits")
    return t.contiguous()


def encoder_convs(x: torch.Tensor, y: torch.Tensor | None, conv1: torch.nn.Conv2d,
                  conv2: torch.nn.Conv2d) -> torch.Tensor:
    """The encoder's convolutions: (B, 1, 28, 28) images and (B,) labels -> (B, 784) features.

    ``conv1`` sees the image and, in the CVAE, the ten one-hot label maps
    (11 input channels); the kernel adds their contribution as each class's
    bias map (``fast.label_bias_maps`` derives it) instead of convolving ten
    constant channels. For a model without labels (1 input channel) ``y`` is None.
    """
    batch = x.shape[0]
    if tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must be (B, 1, 28, 28), got {tuple(x.shape)}")
    if y is None:
        if conv1.weight.shape[1] != 1:
            raise ValueError(f"a first convolution with {conv1.weight.shape[1]} input channels needs labels y")
        y = torch.zeros(batch, dtype=torch.int64)
    elif conv1.weight.shape[1] != 11:
        raise ValueError(f"kernels.cpp takes 1 (no labels) or 11 input channels, got {conv1.weight.shape[1]}")
    elif tuple(y.shape) != (batch,) or (batch and not (0 <= int(y.min()) and int(y.max()) < 10)):
        raise ValueError(f"labels must be ({batch},) class indices in 0..9, got shape {tuple(y.shape)}"
                         + (f", values {int(y.min())}..{int(y.max())}" if y.numel() else ""))
    return _EncoderConvs.apply(_f32(x.reshape(batch, 784)), y.to(torch.int64).contiguous(),
                               _f32(conv1.weight), _f32(conv1.bias), _f32(conv2.weight),
                               _f32(conv2.bias))


def decoder_bce(h0: torch.Tensor, x: torch.Tensor, convs: list[torch.nn.Conv2d]) -> torch.Tensor:
    """The decoder's convolutions and its reconstruction term: the (B, 392) start maps
    and the (B, 1, 28, 28) images -> (B,), ``losses.bce(decoder output, x)``."""
    batch = x.shape[0]
    if tuple(h0.shape) != (batch, 392) or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"decoder_bce takes (B, 392) start maps and (B, 1, 28, 28) images, got "
                         f"{tuple(h0.shape)} and {tuple(x.shape)}")
    args = [_f32(t) for conv in convs for t in (conv.weight, conv.bias)]
    return _DecoderBCE.apply(_f32(h0), _f32(x.reshape(batch, 784)), *args)
