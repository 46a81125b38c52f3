"""Ship a trained checkpoint into the package: ``python -m lab_utils.ship SRC DST``.

    python -m lab_utils.train --epochs 120 --out checkpoints/lab-shipped.pt
    python -m lab_utils.ship checkpoints/lab-shipped.pt lab_utils/pretrained/lab.pt

The command line of :func:`lab_utils.checkpoints.ship`: it drops the optimizer
state and stores float16 weights, so the shipped file is a sixth of the training
checkpoint. (A module of its own so that ``python -m`` does not re-import
``checkpoints``, which the package has already imported.)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .checkpoints import CheckpointError, ship


def main(argv=None) -> int:
    """``python -m lab_utils.ship SRC DST``: ship a trained checkpoint."""
    p = argparse.ArgumentParser(
        description="Ship a training checkpoint: drop the optimizer state, store float16 "
                    "weights (e.g. checkpoints/wide.pt -> lab_utils/pretrained/wide.pt).")
    p.add_argument("src", help="a checkpoint written by `python -m lab_utils.train --out`")
    p.add_argument("dst", help="where to write the shipped copy")
    p.add_argument("--float32", action="store_true", help="keep float32 weights")
    args = p.parse_args(argv)
    try:
        ckpt = ship(args.src, args.dst, half=not args.float32)
    except CheckpointError as exc:
        p.error(str(exc))
    size = Path(args.dst).stat().st_size / 1e6
    print(f"shipped {args.src} -> {args.dst} ({size:.2f} MB): {ckpt['epochs']} epochs, "
          f"metrics {ckpt['metrics']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
