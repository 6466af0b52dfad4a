"""``hyperzzw train``: train a Terminator end to end with the PyTorch adapter (issue 6).

Imported only by the ``train`` subcommand (it imports torch).

One run = one output directory holding ``checkpoint.pt`` (atomic, every epoch, with optimiser,
scheduler and RNG state), ``metrics.json``, ``curves.png`` and ``kernels.png``. ``--resume``
continues a killed run and reaches the same final weights on CPU as an uninterrupted one.

Multi-process: under ``torchrun --nproc_per_node=N`` each process takes an equal, contiguous share
of every global batch, gradients are averaged by DistributedDataParallel (gloo on CPU, nccl on
GPU), and every statistic over the batch axis (batch standardisation, inside G-IBS and the local
branch, and MAGNet_L's batch-mean context) is taken over the global batch, forward and backward,
as SyncBatchNorm does: the processes compute the single-process model on the global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hyperzzw_core as core

from ..adapters.torch import Kar3, Terminator, global_batch_namespace
from ..reference import PRESETS, TerminatorConfig, check_seed
from . import checkpoint as ckpt
from . import data as data_mod
from . import plots
from .schedule import lr_factor

OPTIMIZERS = ("kar3", "adamw", "sgd")
DATASET_EPOCHS = {"mnist1d": 10, "mnist1d-permuted": 20}
"""Default epochs per embedded data set (30 otherwise), chosen on the validation split
(docs/results.md): MNIST-1D reaches its plateau in 10; shuffled (``permute``), 20 beat 10 and
15 epochs at a higher learning rate."""


@dataclass
class TrainSettings:
    """Everything a run depends on; stored in the checkpoint and in metrics.json."""

    dataset: str = "digits"
    data: str | None = None
    mode: str = "2d"
    permute: int | None = None
    config: str | None = None
    """A preset name or a TOML file; default: "digits" (2d) or "digits_1d" (1d)."""
    optimizer: str = "kar3"
    """kar3 (the author's, §2.14), adamw, or sgd (momentum 0.9). Kar3 and AdamW turn round-off in
    gradients that are zero in exact arithmetic into lr-sized steps; sgd does not, which makes it
    the optimiser for comparisons to round-off (e.g. multi- against single-process)."""
    lr: float | None = None
    """Default: 2e-3 for Kar3, 3e-3 for AdamW, 0.05 for SGD."""
    betas: tuple[float, float] = (0.5, 0.95)
    weight_decay: float = 0.0
    l2_reg: float = 5e-5
    epochs: int | None = None
    """Default: 30; for ``dataset="mnist1d"`` 10, or 20 with ``permute`` (see ``DATASET_EPOCHS``)."""
    batch_size: int = 64
    eval_batch_size: int = 64
    warmup_epochs: int = 3
    val_fraction: float = 0.1
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    out: str = "runs/digits"
    stop_after: int | None = None
    """Stop after this many epochs of this invocation, as if killed; ``--resume`` continues."""
    resume: bool = False
    """Continue from ``out/checkpoint.pt``."""

    train_limit: int | None = None
    """Use only the first N training samples (quick experiments and tests)."""
    num_classes: int | None = None
    """K; default: the largest label + 1. Labels ≥ K and classes missing from training are refused."""
    overwrite: bool = False
    """Start a new run in an ``out`` that already holds a checkpoint (otherwise refused)."""
    layout: str = "auto"
    """How 3-D ``data`` arrays are read: "auto", "images" or "sequences" (``data.as_channels_first``)."""

    def resolved_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        if self.data is not None:
            return 30
        return DATASET_EPOCHS.get(self.dataset + ("-permuted" if self.permute is not None else ""), 30)

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else {"kar3": 2e-3, "adamw": 3e-3, "sgd": 0.05}[self.optimizer]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf: the run stops, the last checkpoint stays (CLI exit 3)."""

    exit_code = 3


RESUME_MUST_MATCH = (
    "dataset",
    "mode",
    "layout",
    "permute",
    "config",
    "optimizer",
    "lr",
    "betas",
    "weight_decay",
    "l2_reg",
    "batch_size",
    "warmup_epochs",
    "val_fraction",
    "seed",
    "dtype",
    "train_limit",
    "num_classes",
)
"""Settings that define the model, the data or the optimiser: ``--resume`` refuses to change them."""
RESUME_MAY_CHANGE = ("data", "epochs", "eval_batch_size", "device")
"""Settings ``--resume`` applies and records (``data`` only as another path to identical arrays;
more ``epochs`` stretch the rest of the cosine schedule over the new total)."""


PER_INVOCATION = ("out", "resume", "overwrite", "stop_after")
"""Settings of one invocation only: never taken from the checkpoint."""


def _positive_int(name: str, v: Any, minimum: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v!r}")


def _finite(name: str, v: Any, lo: float = 0.0, lo_open: bool = False, hi: float | None = None) -> None:
    ok = (
        not isinstance(v, bool)
        and isinstance(v, (int, float))
        and math.isfinite(v)
        and (v > lo if lo_open else v >= lo)
        and (hi is None or v < hi)
    )
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'})"
        raise ValueError(f"{name}: expected a finite number in {rng}, got {v!r}")


def validate_settings(s: TrainSettings) -> None:
    """Refuse impossible settings before anything is loaded (``ValueError`` naming the option)."""
    if s.optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer: expected one of {OPTIMIZERS}, got {s.optimizer!r}")
    if s.mode not in ("2d", "1d"):
        raise ValueError(f"--mode: expected '2d' or '1d', got {s.mode!r}")
    if s.data is None and s.dataset not in data_mod.DATASETS:
        raise ValueError(f"--dataset: expected one of {data_mod.DATASETS}, got {s.dataset!r}")
    if s.layout not in data_mod.LAYOUTS:
        raise ValueError(f"--layout: expected one of {data_mod.LAYOUTS}, got {s.layout!r}")
    if s.dtype not in ("float32", "float64"):
        raise ValueError(f"--dtype: expected float32 or float64, got {s.dtype!r}")
    for name in ("epochs", "batch_size", "eval_batch_size"):
        _positive_int("--" + name.replace("_", "-"), getattr(s, name))
    _positive_int("--warmup-epochs", s.warmup_epochs, 0)
    for name in ("train_limit", "stop_after", "num_classes"):
        if getattr(s, name) is not None:
            _positive_int("--" + name.replace("_", "-"), getattr(s, name), 2 if name == "num_classes" else 1)
    check_seed("--seed", s.seed)
    if s.permute is not None:
        check_seed("--permute", s.permute)
    _finite("--val-fraction", s.val_fraction, 0.0, True, 1.0)
    if s.lr is not None:
        _finite("--lr", s.lr, 0.0, True)
    if len(s.betas) != 2:
        raise ValueError(f"--betas: expected two numbers, got {s.betas!r}")
    for b in s.betas:
        _finite("--betas", b, 0.0, False, 1.0)
    _finite("--weight-decay", s.weight_decay)
    _finite("--l2-reg", s.l2_reg)
    try:
        device = torch.device(s.device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device: not a device, got {s.device!r} ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {s.device}: CUDA is not available here (torch {torch.__version__}); use --device cpu"
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device: expected cpu or cuda, got {s.device!r}")


def resume_settings(s: TrainSettings, stored: dict, given: set[str] | None) -> tuple[TrainSettings, dict]:
    """The settings of a resumed run and the safe changes applied, as {name: [old, new]}.

    Settings not ``given`` (None: all given, the Python API) come from the checkpoint. A given one
    in :data:`RESUME_MUST_MATCH` that differs from the checkpoint's is refused, every difference
    named with both values; one in :data:`RESUME_MAY_CHANGE` is applied.
    """
    fields = [f.name for f in dataclasses.fields(TrainSettings)]
    given = set(fields) if given is None else set(given)
    mine = _settings_dict(s)
    merged, refused, changed = {}, [], {}
    for name in fields:
        old = stored.get(name)
        if name not in stored or name in PER_INVOCATION:
            merged[name] = getattr(s, name)
            continue
        if name not in given:
            merged[name] = old
            continue
        new = mine[name]
        merged[name] = getattr(s, name)
        if _same(old, new):
            continue
        if name in RESUME_MAY_CHANGE:
            changed[name] = [old, new]
        else:
            refused.append(f"{_flag(name)} {_show(old)} in the checkpoint, {_show(new)} now")
    if refused:
        raise ValueError(
            "--resume: the checkpoint was trained with other settings, which would change the model, "
            "data or optimiser: " + "; ".join(refused) + " (drop them to use the checkpoint's, "
            "or start a new run in another --out)"
        )
    merged["betas"] = tuple(merged["betas"])
    return TrainSettings(**merged), changed


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _flag(name: str) -> str:
    return name if name.startswith("config.") or name == "data arrays" else "--" + name.replace("_", "-")


def _show(v: Any) -> str:
    return "(unset)" if v is None else repr(list(v) if isinstance(v, tuple) else v)


def _check_resume_fits(stored: dict, config: TerminatorConfig, dataset: data_mod.Dataset) -> None:
    """Refuse a resume whose resolved config or data arrays differ from the checkpoint's."""
    diffs = []
    old_cfg, new_cfg = stored.get("config", {}), config.to_dict()
    for k in sorted(set(old_cfg) | set(new_cfg)):
        if not _same(old_cfg.get(k), new_cfg.get(k)):
            diffs.append(f"config.{k} {_show(old_cfg.get(k))} in the checkpoint, {_show(new_cfg.get(k))} now")
    old_fp = stored.get("settings", {}).get("data_sha256")
    if old_fp != dataset.fingerprint:
        diffs.append(f"data arrays sha256 {str(old_fp)[:16]}… in the checkpoint, {dataset.fingerprint[:16]}… now")
    if diffs:
        raise ValueError("--resume: the checkpoint does not fit this run: " + "; ".join(diffs))


def write_metrics(out: Path, summary: dict) -> None:
    """metrics.json as strict JSON (a NaN or Inf raises instead of writing bare ``NaN``), atomically."""
    text = json.dumps(summary, indent=1, allow_nan=False) + "\n"
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "metrics.json")


# ------------------------------------------------------------------------------ configs


def load_config(spec: str | None, mode: str) -> TerminatorConfig:
    """A preset by name or a TOML file (unknown keys raise); default digits / digits_1d."""
    name = spec or ("digits" if mode == "2d" else "digits_1d")
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise FileNotFoundError(f"--config: no such file {path}")
        import tomllib

        with path.open("rb") as f:
            table = tomllib.load(f)
        return TerminatorConfig.from_dict(table.get("terminator", table))
    if name not in PRESETS:
        raise ValueError(f"--config: unknown preset {name!r}; choose one of {sorted(PRESETS)} or pass a .toml file")
    return PRESETS[name]()


def fit_config(config: TerminatorConfig, dataset: data_mod.Dataset) -> TerminatorConfig:
    """The config with input shape, grid and class count taken from the data."""
    return config.replace(
        input_shape=list(dataset.input_shape),
        num_classes=dataset.num_classes,
        grid=list(dataset.grid) if dataset.grid else None,
    )


# -------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    group: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), dist.group.WORLD)


# -------------------------------------------------------------------------------- running


def _batches(n: int, size: int, order: np.ndarray) -> list[np.ndarray]:
    return [order[i : i + size] for i in range(0, n - size + 1, size)] or [order]


def evaluate(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int, device: Any, dtype: Any) -> float:
    """Accuracy in eval mode, in fixed batches (batch standardisation uses batch statistics, §5 Q5)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i : i + batch_size], dtype=dtype, device=device)
            pred = model(xb).argmax(dim=1).cpu().numpy()
            correct += int((pred == y[i : i + batch_size]).sum())
    model.train()
    return correct / max(len(x), 1)


def train(settings: TrainSettings, given: set[str] | None = None) -> dict:
    """Run (or resume) one training run; returns the final summary written to metrics.json.

    ``given``: the settings named on the command line (None: all of them). With ``resume``, the
    others are taken from the checkpoint (see :func:`resume_settings`). Bad settings, data or
    checkpoints raise ``ValueError`` before any training; a NaN/Inf loss raises
    :class:`TrainingDiverged`; the output folder is locked for the whole run (rank 0).
    """
    settings = dataclasses.replace(settings, epochs=settings.resolved_epochs())
    validate_settings(settings)
    dist = init_distributed(settings.device)
    out = Path(settings.out)
    lock: contextlib.AbstractContextManager[list[str]] = ckpt.run_lock(out) if dist.main else contextlib.nullcontext([])
    with lock as notes:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return _train_locked(settings, given, dist, out)


def _train_locked(s: TrainSettings, given: set[str] | None, dist: Dist, out: Path) -> dict:
    path = out / "checkpoint.pt"
    state: dict[str, Any] | None = None
    changed: dict[str, Any] = {}
    if s.resume:
        state = ckpt.load(path)
        if not isinstance(state.get("settings"), dict):
            raise ckpt.CheckpointError(f"checkpoint {path}: records no run settings; cannot resume it")
        s, changed = resume_settings(s, state["settings"], given)
        validate_settings(s)
        assert s.epochs is not None  # recorded resolved in the checkpoint, or given
        if int(state["epoch"]) + 1 > s.epochs:
            raise ValueError(
                f"--epochs {s.epochs}: the checkpoint has already completed {int(state['epoch']) + 1} "
                f"epochs; pass --epochs >= {int(state['epoch']) + 1}"
            )
    elif path.exists() and not s.overwrite:
        raise ValueError(
            f"--out {out}: already holds a run (checkpoint.pt); pass --resume to continue it, "
            f"--overwrite to start over, or choose another --out"
        )
    assert s.epochs is not None  # train() resolves it (and the checkpoint records it resolved)
    if s.batch_size % dist.world:
        raise ValueError(f"--batch-size {s.batch_size} must be divisible by the {dist.world} processes")
    dtype = {"float32": torch.float32, "float64": torch.float64}[s.dtype]
    device = torch.device(s.device if s.device != "cuda" or dist.world == 1 else f"cuda:{dist.rank}")

    dataset = data_mod.load(
        s.dataset, s.data, s.mode, s.permute, s.val_fraction, num_classes=s.num_classes, layout=s.layout
    )
    if s.train_limit is not None:
        dataset.x_train, dataset.y_train = dataset.x_train[: s.train_limit], dataset.y_train[: s.train_limit]
        data_mod.check_classes_present(
            dataset.y_train, dataset.num_classes, f"the first {s.train_limit} training samples (--train-limit)"
        )
    config = fit_config(load_config(s.config, s.mode), dataset)
    if state is not None:
        _check_resume_fits(state, config, dataset)
    torch.manual_seed(s.seed)
    model = Terminator(config, seed=s.seed, device=device, dtype=dtype)
    if dist.world > 1:
        model.batch_namespace = global_batch_namespace(dist.group)
    n_params = sum(p.numel() for p in model.parameters())
    lr = s.resolved_lr()
    opt: torch.optim.Optimizer
    if s.optimizer == "kar3":
        beta1, beta2 = s.betas
        opt = Kar3(model.parameters(), lr=lr, betas=(beta1, beta2))
    elif s.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=s.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=s.weight_decay)
    n_train = len(dataset.x_train)
    steps_per_epoch = len(_batches(n_train, s.batch_size, np.arange(n_train)))
    total = steps_per_epoch * s.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, s.warmup_epochs * steps_per_epoch, total)
    )
    shuffler = torch.Generator().manual_seed(s.seed)
    history: list[dict] = []
    resumes: list[dict] = []
    start_epoch, wall = 0, 0.0

    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            shuffler.set_state(state["shuffler"])
            torch.set_rng_state(state["torch_rng"])
            history, start_epoch, wall = state["history"], int(state["epoch"]) + 1, float(state["wall"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ckpt.CheckpointError(
                f"checkpoint {path}: does not fit this run ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"
            ) from None
        resumes = list(state.get("resumes", [])) + [{"at_epoch": start_epoch, "changed": changed}]
        if dist.main:
            what = "; ".join(f"{_flag(k)} {_show(a)} -> {_show(b)}" for k, (a, b) in changed.items())
            print(
                f"resuming {path} at epoch {start_epoch + 1}/{s.epochs}" + (f" (changed: {what})" if what else ""),
                file=sys.stderr,
            )
    record = {**_settings_dict(s), "data_sha256": dataset.fingerprint}

    step: torch.nn.Module = TrainStep(model)
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step = DistributedDataParallel(step)
    x_all = torch.as_tensor(dataset.x_train, dtype=dtype)
    y_all = torch.as_tensor(dataset.y_train, dtype=torch.int64)
    share = s.batch_size // dist.world

    def summarize(diverged: str | None = None) -> dict:
        summary = {
            "dataset": dataset.name,
            "settings": record,
            "config": config.to_dict(),
            "parameters": n_params,
            "processes": dist.world,
            "finished": len(history) == s.epochs,
            "max_parameter_difference_across_processes": 0.0,
            "resumes": resumes,
            "epochs": history,
            "final": history[-1] if history else None,
        }
        if diverged:
            summary["finished"], summary["diverged"] = False, diverged
        if history:
            best = max(history, key=lambda h: h["val_acc"])
            summary["best_val"] = {"epoch": best["epoch"], "val_acc": best["val_acc"], "test_acc": best["test_acc"]}
        return summary

    run_epochs = 0
    for epoch in range(start_epoch, s.epochs):
        if s.stop_after is not None and run_epochs >= s.stop_after:
            break
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, generator=shuffler).numpy()
        sums = {"loss": 0.0, "slow": 0.0}
        batches = _batches(n_train, s.batch_size, order)
        bar = _progress(batches, epoch, s.epochs, dist.main)
        for i, idx in enumerate(bar):
            mine = idx[dist.rank * share : (dist.rank + 1) * share] if dist.world > 1 else idx
            xb, yb = x_all[mine].to(device), y_all[mine].to(device)
            ce, slow = step(xb, yb)
            loss = ce + slow + model.l2_regularizer(s.l2_reg)
            value = float(loss.detach())
            if not math.isfinite(value):
                message = (
                    f"training diverged: the loss is {value} at epoch {epoch + 1}, step {i + 1}/{len(batches)} "
                    f"(lr {sched.get_last_lr()[0]:.3g}); stopped without saving this epoch"
                    + (f"; {path} still holds epoch {len(history)}" if history else "")
                    + " (try a lower --lr)"
                )
                if dist.main:
                    write_metrics(out, summarize(message))
                raise TrainingDiverged(message)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums["loss"] += value
            sums["slow"] += float(slow.detach())
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        val_acc = evaluate(model, dataset.x_val, dataset.y_val, s.eval_batch_size, device, dtype)
        test_acc = evaluate(model, dataset.x_test, dataset.y_test, s.eval_batch_size, device, dtype)
        dt = time.perf_counter() - t0
        wall += dt
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": sums["loss"] / len(batches),
                "slow_loss": sums["slow"] / len(batches),
                "val_acc": val_acc,
                "test_acc": test_acc,
                "lr": sched.get_last_lr()[0],
                "epoch_seconds": dt,
                "wall_seconds": wall,
            }
        )
        if dist.main:
            print(
                f"epoch {epoch + 1}/{s.epochs}: loss {history[-1]['train_loss']:.4f} "
                f"(slow {history[-1]['slow_loss']:.2e}), val {100 * val_acc:.2f}%, test {100 * test_acc:.2f}%, "
                f"{dt:.1f}s",
                file=sys.stderr,
            )
            ckpt.save(
                path,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "shuffler": shuffler.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "epoch": epoch,
                    "wall": wall,
                    "config": config.to_dict(),
                    "settings": record,
                    "resumes": resumes,
                },
            )
        run_epochs += 1
    finished = len(history) == s.epochs
    spread = _parameter_spread(model, dist)
    model.batch_namespace = None  # what follows runs on the main process alone: no collectives
    summary = summarize()
    summary["max_parameter_difference_across_processes"] = spread
    if dist.main:
        write_metrics(out, summary)
        if history:
            plots.learning_curves(history, out / "curves.png")
            with torch.no_grad():
                _, kernels = model.eval().forward_with_kernels(
                    torch.as_tensor(dataset.x_val[:2], dtype=dtype, device=device)
                )
            plots.global_kernels([k.cpu().numpy() for k in kernels], out / "kernels.png", config.grid)
            final = history[-1]
            print(
                f"{'finished' if finished else 'stopped'} after epoch {final['epoch']}/{s.epochs}: test accuracy "
                f"{100 * final['test_acc']:.2f}% (validation {100 * final['val_acc']:.2f}%), "
                f"{n_params:,} parameters, {wall:.0f}s; wrote {out}/",
                file=sys.stderr,
            )
    return summary


def _parameter_spread(model: Any, dist: Dist) -> float:
    """max |p − p_rank0| over all parameters and processes (0 when the processes agree; DDP check)."""
    if dist.world == 1:
        return 0.0
    import torch.distributed as tdist

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    ref = flat.clone()
    tdist.broadcast(ref, src=0, group=dist.group)
    diff = (flat - ref).abs().max().reshape(1)
    tdist.all_reduce(diff, op=tdist.ReduceOp.MAX, group=dist.group)
    return float(diff)


class TrainStep(torch.nn.Module):
    """(CE, weighted slow loss) of one batch, as a module so DistributedDataParallel sees the forward."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.model.config
        logits, kernels = self.model.forward_with_kernels(x)
        # labels were validated once at load (data.validate_dataset): no per-batch read-back
        ce = core.label_smoothing_cross_entropy(logits, y, cfg.label_smoothing, check_finite=False, check_labels=False)
        if cfg.slow_loss == "none":
            return ce, torch.zeros((), dtype=ce.dtype, device=ce.device)
        slow = core.slow_loss(kernels, cfg.bottleneck_factors, kind=cfg.slow_loss, check_finite=False)
        return ce, cfg.slow_loss_weight * slow


def _progress(batches: list, epoch: int, epochs: int, enabled: bool):
    if not enabled:
        return batches
    try:
        from tqdm import tqdm
    except ImportError:
        return batches
    return tqdm(
        batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False, file=sys.stderr, disable=not sys.stderr.isatty()
    )


def _settings_dict(s: TrainSettings) -> dict:
    """The settings as used: defaults resolved (lr, config), JSON-ready."""
    d = dataclasses.asdict(s)
    d["betas"] = list(s.betas)
    d["lr"] = s.resolved_lr()
    d["config"] = s.config or ("digits" if s.mode == "2d" else "digits_1d")
    return d
