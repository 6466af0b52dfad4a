"""Argument parsing of ``hyperzzw train`` and ``hyperzzw show-kernels`` (no torch import here)."""

from __future__ import annotations

import argparse

# The defaults live in TrainSettings alone: every option below defaults to None ("not given"), so
# that --resume can tell the settings named on the command line from those to take from the checkpoint.
_DEFAULTS = {
    "dataset": "digits",
    "layout": "auto",
    "mode": "2d",
    "val_fraction": 0.1,
    "optimizer": "kar3",
    "betas": (0.5, 0.95),
    "weight_decay": 0.0,
    "l2_reg": 5e-5,
    "warmup_epochs": 3,
    "batch_size": 64,
    "eval_batch_size": 64,
    "seed": 0,
    "dtype": "float32",
    "device": "cpu",
}


def _train(a: argparse.Namespace) -> int:
    from .loop import TrainSettings, train

    if a.malloc == "keep":
        from .memory import keep_freed_memory

        keep_freed_memory()
    fields = [f for f in vars(a) if f not in ("func", "command", "debug", "malloc")]
    given = {f for f in fields if getattr(a, f) is not None and getattr(a, f) is not False}
    values = {f: getattr(a, f) for f in given}
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    values.setdefault("out", f"runs/{(a.dataset or 'digits') if a.data is None else 'data'}-{a.mode or '2d'}")
    train(TrainSettings(**values), given=given)
    return 0


def _d(name: str) -> str:
    return f" (default {_DEFAULTS[name]})"


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a Terminator (PyTorch adapter) on digits or your .npz data",
        description="Train a Terminator end to end: validation split from the training data, "
        "test accuracy at the end, metrics.json, checkpoint.pt (atomic, with a content "
        "digest, every epoch), curves.png and kernels.png in --out. Runs under torchrun "
        "for several processes. Exit status: 0 done, 2 refused (bad arguments, data, "
        "checkpoint, or --out in use), 3 diverged (NaN/Inf loss), 1 other errors.",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        choices=["digits", "mnist1d"],
        help="embedded data set: digits (scikit-learn's 8x8 handwritten digits, the default) or "
        "mnist1d (MNIST-1D's 40-step sequences, generated offline by the mnist1d package; --mode 1d)",
    )
    d.add_argument(
        "--data",
        help="FILE.npz with x_train, y_train, x_test, y_test: images (N,[C,]H,W) or sequences (N,[C,]L) for --mode 1d",
    )
    d.add_argument(
        "--layout",
        choices=["auto", "images", "sequences"],
        help="how to read 3-D --data arrays: auto = images (N,H,W) if H == W, else sequences (N,C,L)" + _d("layout"),
    )
    d.add_argument("--mode", choices=["2d", "1d"], help="images, or pixel sequences (1d)" + _d("mode"))
    d.add_argument("--permute", type=int, metavar="SEED", help="1d only: a fixed pixel permutation (pMNIST-style)")
    d.add_argument("--val-fraction", type=float, help="share of the training data held out" + _d("val_fraction"))
    d.add_argument("--train-limit", type=int, metavar="N", help="use only the first N training samples")
    d.add_argument(
        "--num-classes",
        type=int,
        metavar="K",
        help="number of classes (default: largest label + 1); labels >= K are refused",
    )
    m = p.add_argument_group("model and optimisation")
    m.add_argument(
        "--config",
        help="preset name (digits, digits_1d, tiny, cifar10, …) or a TOML file; "
        "input shape and class count follow the data",
    )
    m.add_argument(
        "--optimizer",
        choices=["kar3", "adamw", "sgd"],
        help="Kar3 is the author's (§2.14); sgd (momentum 0.9) for round-off-level comparisons" + _d("optimizer"),
    )
    m.add_argument("--lr", type=float, help="peak learning rate (default 2e-3 Kar3, 3e-3 AdamW, 0.05 SGD)")
    m.add_argument("--betas", type=float, nargs=2, help="Kar3 betas" + _d("betas"))
    m.add_argument("--weight-decay", type=float, help="AdamW and SGD" + _d("weight_decay"))
    m.add_argument("--l2-reg", type=float, help="weight of the §2.13 regulariser" + _d("l2_reg"))
    m.add_argument(
        "--epochs", type=int, help="total epochs (default 30 for digits and --data; mnist1d: 10, or 20 with --permute)"
    )
    m.add_argument("--warmup-epochs", type=int, help=_d("warmup_epochs").strip(" ()"))
    m.add_argument("--batch-size", type=int, help="global batch size" + _d("batch_size"))
    m.add_argument("--eval-batch-size", type=int, help=_d("eval_batch_size").strip(" ()"))
    m.add_argument("--seed", type=int, help="a non-negative integer" + _d("seed"))
    m.add_argument("--dtype", choices=["float32", "float64"], help=_d("dtype").strip(" ()"))
    m.add_argument("--device", help="cpu or cuda" + _d("device"))
    r = p.add_argument_group("run")
    r.add_argument("--out", help="output directory (default runs/digits-<mode>); one run at a time holds it")
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt; settings not given are the checkpoint's, and changing "
        "one that defines the model, data or optimiser is refused",
    )
    r.add_argument("--overwrite", action="store_true", help="start a new run in an --out that holds one")
    r.add_argument("--stop-after", type=int, metavar="N", help="stop after N epochs of this invocation")
    r.add_argument(
        "--malloc",
        choices=["keep", "system"],
        default="keep",
        help="keep: on glibc, this process serves large blocks from its heap and keeps freed memory "
        "for reuse (no fresh pages every step: the cifar10 step at batch 32 takes 0.84x the time, "
        "peak memory +8%%); system: the C library's defaults. Not a run setting: not stored, "
        "not checked on --resume (default keep)",
    )
    p.set_defaults(func=_train)


def _show_kernels(a: argparse.Namespace) -> int:
    import numpy as np

    from ..reference import TerminatorConfig
    from . import checkpoint, plots

    if a.channels < 1:
        raise ValueError(f"--channels: expected an integer >= 1, got {a.channels}")
    state = checkpoint.load(a.checkpoint)  # digest verified
    try:
        config = TerminatorConfig.from_dict(state["config"])
        epoch = int(state["epoch"])
    except (KeyError, TypeError) as exc:
        raise checkpoint.CheckpointError(
            f"checkpoint {a.checkpoint}: not written by hyperzzw train (no {exc} entry)"
        ) from None
    import torch

    from ..adapters.torch import Terminator

    model = Terminator(config)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise checkpoint.CheckpointError(
            f"checkpoint {a.checkpoint}: its weights do not fit its config ({type(exc).__name__})"
        ) from None
    model.eval()
    with torch.no_grad():
        x = torch.zeros((1,) + tuple(config.input_shape), dtype=next(model.parameters()).dtype)
        _, kernels = model.forward_with_kernels(x)
    try:
        path = plots.global_kernels(
            [np.asarray(k.cpu()) for k in kernels],
            a.output,
            config.grid,
            a.channels,
            title=f"global hyper-kernels K_g, {a.checkpoint} (epoch {epoch + 1})",
        )
    except OSError as exc:
        raise ValueError(f"-o {a.output}: cannot write it ({exc.strerror or exc})") from None
    print(f"wrote {path}")
    return 0


def add_show_kernels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show-kernels", help="plot the global hyper-kernels of a checkpoint (paper Fig. 4)")
    p.add_argument("checkpoint", help="a checkpoint.pt written by hyperzzw train")
    p.add_argument("-o", "--output", default="kernels.png")
    p.add_argument("--channels", type=int, default=8, help="channels shown per block")
    p.set_defaults(func=_show_kernels)
