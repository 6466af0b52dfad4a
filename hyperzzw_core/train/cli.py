"""Argument parsing of ``hyperzzw train`` and ``hyperzzw show-kernels`` (no torch import here)."""

from __future__ import annotations

import argparse
import sys


def _train(a: argparse.Namespace) -> int:
    from .loop import TrainSettings, train

    settings = TrainSettings(
        dataset=a.dataset, data=a.data, mode=a.mode, permute=a.permute, config=a.config, optimizer=a.optimizer,
        lr=a.lr, betas=tuple(a.betas), weight_decay=a.weight_decay, l2_reg=a.l2_reg, epochs=a.epochs,
        batch_size=a.batch_size, eval_batch_size=a.eval_batch_size, warmup_epochs=a.warmup_epochs,
        val_fraction=a.val_fraction, seed=a.seed, dtype=a.dtype, device=a.device,
        out=a.out or f"runs/{a.dataset if a.data is None else 'data'}-{a.mode}", stop_after=a.stop_after,
        resume=a.resume, train_limit=a.train_limit, layout=a.layout)
    try:
        train(settings)
    except (ValueError, FileNotFoundError) as exc:
        print(f"hyperzzw train: {exc}", file=sys.stderr)
        return 2
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a Terminator (PyTorch adapter) on digits or your .npz data",
                       description="Train a Terminator end to end: validation split from the training data, "
                                   "test accuracy at the end, metrics.json, checkpoint.pt (atomic, every epoch), "
                                   "curves.png and kernels.png in --out. Runs under torchrun for several processes.")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="digits", choices=["digits", "mnist1d"],
                   help="embedded data set: digits (scikit-learn's 8x8 handwritten digits, the default) or "
                        "mnist1d (MNIST-1D's 40-step sequences, generated offline by the mnist1d package; --mode 1d)")
    d.add_argument("--data", help="FILE.npz with x_train, y_train, x_test, y_test: images (N,[C,]H,W) or "
                                  "sequences (N,[C,]L) for --mode 1d")
    d.add_argument("--layout", choices=["auto", "images", "sequences"], default="auto",
                   help="how to read 3-D --data arrays: auto = images (N,H,W) if H == W, else sequences (N,C,L)")
    d.add_argument("--mode", choices=["2d", "1d"], default="2d", help="images, or pixel sequences (1d)")
    d.add_argument("--permute", type=int, metavar="SEED", help="1d only: a fixed pixel permutation (pMNIST-style)")
    d.add_argument("--val-fraction", type=float, default=0.1)
    d.add_argument("--train-limit", type=int, metavar="N", help="use only the first N training samples")
    m = p.add_argument_group("model and optimisation")
    m.add_argument("--config", help="preset name (digits, digits_1d, tiny, cifar10, …) or a TOML file; "
                                    "input shape and class count follow the data")
    m.add_argument("--optimizer", choices=["kar3", "adamw", "sgd"], default="kar3",
                   help="Kar3 is the author's (§2.14); sgd (momentum 0.9) for round-off-level comparisons")
    m.add_argument("--lr", type=float, help="peak learning rate (default 2e-3 Kar3, 3e-3 AdamW, 0.05 SGD)")
    m.add_argument("--betas", type=float, nargs=2, default=(0.5, 0.95), help="Kar3 betas")
    m.add_argument("--weight-decay", type=float, default=0.0, help="AdamW only")
    m.add_argument("--l2-reg", type=float, default=5e-5, help="weight of the §2.13 regulariser")
    m.add_argument("--epochs", type=int, help="default 30 (digits, --data); mnist1d: 10, or 20 with --permute")
    m.add_argument("--warmup-epochs", type=int, default=3)
    m.add_argument("--batch-size", type=int, default=64, help="global batch size")
    m.add_argument("--eval-batch-size", type=int, default=64)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    m.add_argument("--device", default="cpu", help="cpu or cuda")
    r = p.add_argument_group("run")
    r.add_argument("--out", help="output directory (default runs/digits-<mode>)")
    r.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    r.add_argument("--stop-after", type=int, metavar="N", help="stop after N epochs of this invocation")
    p.set_defaults(func=_train)


def _show_kernels(a: argparse.Namespace) -> int:
    import numpy as np

    from ..reference._config import TerminatorConfig
    from . import checkpoint, plots

    state = checkpoint.load(a.checkpoint)
    config = TerminatorConfig.from_dict(state["config"])
    import torch

    from ..adapters.torch import Terminator

    model = Terminator(config)
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        x = torch.zeros((1,) + tuple(config.input_shape), dtype=next(model.parameters()).dtype)
        _, kernels = model.forward_with_kernels(x)
    path = plots.global_kernels([np.asarray(k.cpu()) for k in kernels], a.output, config.grid, a.channels,
                                title=f"global hyper-kernels K_g, {a.checkpoint} (epoch {int(state['epoch']) + 1})")
    print(f"wrote {path}")
    return 0


def add_show_kernels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show-kernels", help="plot the global hyper-kernels of a checkpoint (paper Fig. 4)")
    p.add_argument("checkpoint", help="a checkpoint.pt written by hyperzzw train")
    p.add_argument("-o", "--output", default="kernels.png")
    p.add_argument("--channels", type=int, default=8, help="channels shown per block")
    p.set_defaults(func=_show_kernels)
