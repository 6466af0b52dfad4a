"""``TerminatorConfig``: the validated, frozen description of a Terminator network (spec §3.1)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._hyperzzw import square_grid

SLOW_LOSSES = ("tiled", "channel_sum", "none")
_FLOAT_FIELDS = ("omega_0", "alpha", "beta", "eps", "label_smoothing", "slow_loss_weight")
_INT_FIELDS = (
    "num_classes",
    "global_hidden",
    "local_hidden",
    "local_layers",
    "channel_hidden",
    "channel_layers",
    "hi_channel_hidden",
    "hi_spatial_hidden",
    "hi_layers",
    "ibs_groups",
)


def _is_int(x: Any) -> bool:
    """True for integers (Python or NumPy), False for bools, floats (even 2.0), strings, …."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _ints(v: Any) -> tuple[int, ...]:
    """A sequence of integers as a tuple; a non-integer entry (2.9, 2.0, "2", True) raises ``ValueError``.

    Truncating would silently change the network (``bottleneck_factors`` 2.9 → 2), so nothing is
    converted except exact integer types.
    """
    items = tuple(v)
    for i, x in enumerate(items):
        if not _is_int(x):
            raise ValueError(f"entry {i} is {x!r} ({type(x).__name__}), not an integer")
    return tuple(int(x) for x in items)


def check_seed(name: str, value: Any) -> int:
    """A random seed: a non-negative integer (NumPy's generators reject negative ones); else ``ValueError``."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name}: expected a non-negative integer seed, got {value!r} ({type(value).__name__})")
    return int(value)


@dataclass(frozen=True)
class TerminatorConfig:
    """Hyper-parameters of a Terminator network; every field is validated on construction.

    Channel widths follow from the input: block i takes C_i channels and emits C_i·bf_i, with
    C_0 = input channels and C_{i+1} = C_i·bf_i. Per-block tuples have one entry per block.
    A bad value raises ``ValueError`` naming the field and the rule.
    """

    input_shape: tuple[int, ...] = (3, 32, 32)
    """(C, H, W) for images (H == W) or (C, L) for sequences."""
    num_classes: int = 10
    bottleneck_factors: tuple[int, ...] = (4, 3, 2, 2, 2)
    num_concat_pre: tuple[int, ...] = (0, 0, 1, 1, 2)
    """0: none; 1: x_pre = out_{i−2}; 2: also x_pre_pre = out_{i−3} (spec §1.2)."""
    dropout: tuple[float, ...] = (0.0, 0.05, 0.05, 0.05, 0.05)
    """Dropout2d probability after each block (train mode only)."""
    global_hidden: int = 64
    global_layers: tuple[int, ...] = (3, 2, 2, 2, 2)
    local_kernel_sizes: tuple[int, ...] = (3, 9, 5, 7)
    """Kernel sizes of L1..L4 (4 entries), or of L2..L4 (3 entries: the paper's 9-branch block)."""
    local_hidden: int = 32
    local_layers: int = 2
    channel_hidden: int = 32
    """MAGNet_GC hidden width of the hyper-channel interaction."""
    channel_layers: int = 2
    hi_channel_hidden: int = 16
    hi_spatial_hidden: int = 64
    hi_layers: int = 2
    omega_0: float = 2000.0
    """MAGNet filter frequency scale ω₀ (the author's code default; in no config, §5 Q3)."""
    alpha: float = 6.0
    beta: float = 1.0
    ibs_groups: int = 12
    eps: float = 1e-5
    label_smoothing: float = 0.09
    slow_loss: str = "tiled"
    """"tiled" (final code), "channel_sum" (earlier variant) or "none"."""
    slow_loss_weight: float = 1.0
    grid: tuple[int, int] | None = None
    """1D only: (h, w) with h == w and h·w ≥ L; the global product runs on the sequence laid
    row-major on that grid, zero-padded after position L (§5 Q1, docs/spec-1d.md).
    ``square_grid(L)`` gives the smallest; the 1D presets take a length and use it."""

    # ----------------------------------------------------------------------------- derived
    @property
    def num_blocks(self) -> int:
        return len(self.bottleneck_factors)

    @property
    def data_dim(self) -> int:
        """Number of spatial axes: 2 for images, 1 for sequences."""
        return len(self.input_shape) - 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.input_shape[1:])

    @property
    def block_channels(self) -> tuple[int, ...]:
        """Input channels C_i of each block."""
        chans = [self.input_shape[0]]
        for bf in self.bottleneck_factors[:-1]:
            chans.append(chans[-1] * bf)
        return tuple(chans)

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Output channels C_i·bf_i of each block."""
        return tuple(c * bf for c, bf in zip(self.block_channels, self.bottleneck_factors, strict=True))

    @property
    def num_branches(self) -> tuple[int, ...]:
        """Concatenated branches per block: 6 + number of local branches + num_concat_pre."""
        return tuple(6 + len(self.local_kernel_sizes) + n for n in self.num_concat_pre)

    # -------------------------------------------------------------------------- validation
    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("input_shape", "bottleneck_factors", "num_concat_pre", "global_layers", "local_kernel_sizes"):
            try:
                set_(self, name, _ints(getattr(self, name)))
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"TerminatorConfig.{name}: expected a sequence of integers, got {getattr(self, name)!r} ({err})"
                ) from None
        try:
            if any(isinstance(p, (bool, str)) for p in self.dropout):
                raise TypeError
            set_(self, "dropout", tuple(float(p) for p in self.dropout))
        except (TypeError, ValueError):
            raise ValueError(
                f"TerminatorConfig.dropout: expected a sequence of numbers, got {self.dropout!r}"
            ) from None
        if self.grid is not None:
            try:
                set_(self, "grid", _ints(self.grid))
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"TerminatorConfig.grid: expected (h, w) integers, got {self.grid!r} ({err})"
                ) from None
        for name in _FLOAT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise ValueError(f"TerminatorConfig.{name}: expected a number, got {v!r} ({type(v).__name__})")
            if not math.isfinite(float(v)):
                raise ValueError(f"TerminatorConfig.{name}: expected a finite number, got {v!r}")
            set_(self, name, float(v))
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if not _is_int(v):
                raise ValueError(f"TerminatorConfig.{name}: expected an integer, got {v!r} ({type(v).__name__})")
            set_(self, name, int(v))
        if any(not math.isfinite(p) for p in self.dropout):
            self._fail("dropout", "probabilities must be finite numbers in [0, 1)")
        if not isinstance(self.slow_loss, str):
            raise ValueError(f"TerminatorConfig.slow_loss: expected one of {SLOW_LOSSES}, got {self.slow_loss!r}")
        self._validate()

    def _fail(self, name: str, rule: str) -> None:
        raise ValueError(f"TerminatorConfig.{name}: {rule}, got {getattr(self, name)!r}")

    def _validate(self) -> None:
        shape = self.input_shape
        if len(shape) not in (2, 3) or any(s < 1 for s in shape):
            self._fail("input_shape", "expected (C, H, W) or (C, L) with positive sizes")
        if len(shape) == 3 and shape[1] != shape[2]:
            self._fail("input_shape", "the global product needs square images, H == W")
        if len(shape) == 3 and self.grid is not None:
            self._fail("grid", "is for 1D inputs only; leave it None for images")
        if len(shape) == 2:
            g = self.grid
            if g is None or len(g) != 2 or g[0] * g[1] < shape[1] or g[0] != g[1]:
                self._fail(
                    "grid",
                    f"a 1D input of length {shape[1]} needs grid=(h, w) with h == w and "
                    f"h·w ≥ L, e.g. square_grid({shape[1]}) = {square_grid(shape[1])}",
                )
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            self._fail("num_classes", "expected an integer >= 2")
        n = self.num_blocks
        if n < 1:
            self._fail("bottleneck_factors", "expected at least one block")
        if any(b < 1 for b in self.bottleneck_factors):
            self._fail("bottleneck_factors", "expected positive integers")
        for name in ("num_concat_pre", "dropout", "global_layers"):
            if len(getattr(self, name)) != n:
                self._fail(name, f"expected one entry per block ({n}, the length of bottleneck_factors)")
        for i, m in enumerate(self.num_concat_pre):
            if m not in (0, 1, 2):
                self._fail("num_concat_pre", "entries must be 0, 1 or 2")
            if (m >= 1 and i < 2) or (m == 2 and i < 3):
                self._fail(
                    "num_concat_pre", f"block {i} cannot take out_(i-2) / out_(i-3): it has too few predecessors"
                )
        if any(not 0.0 <= p < 1.0 for p in self.dropout):
            self._fail("dropout", "probabilities must lie in [0, 1)")
        if len(self.local_kernel_sizes) not in (3, 4):
            self._fail("local_kernel_sizes", "expected 4 sizes (L1..L4) or 3 (L2..L4)")
        if any(k < 1 or k % 2 == 0 for k in self.local_kernel_sizes):
            self._fail("local_kernel_sizes", "kernel sizes must be positive odd integers ('same' padding)")
        for name in (
            "global_hidden",
            "local_hidden",
            "channel_hidden",
            "hi_channel_hidden",
            "hi_spatial_hidden",
            "local_layers",
            "channel_layers",
            "hi_layers",
            "ibs_groups",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                self._fail(name, "expected a positive integer")
        if any(layers < 1 for layers in self.global_layers):
            self._fail("global_layers", "expected positive integers")
        for i, c in enumerate(self.out_channels):
            if c % self.ibs_groups:
                self._fail(
                    "ibs_groups",
                    f"must divide every block's output channels; block {i} has {c} (outputs {self.out_channels})",
                )
        if self.slow_loss not in SLOW_LOSSES:
            self._fail("slow_loss", f"expected one of {SLOW_LOSSES}")
        for name in ("omega_0", "alpha", "beta", "eps"):
            if not float(getattr(self, name)) > 0:
                self._fail(name, "expected a positive number")
        if not 0.0 <= self.label_smoothing <= 1.0:
            self._fail("label_smoothing", "expected a value in [0, 1]")
        if self.slow_loss_weight < 0:
            self._fail("slow_loss_weight", "expected a non-negative number")

    # ----------------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists for tuples), suitable for JSON or TOML."""
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TerminatorConfig:
        """Build a config from a mapping; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TerminatorConfig: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> TerminatorConfig:
        """A copy with some fields changed (validated; unknown names raise)."""
        return self.from_dict({**self.to_dict(), **changes})


# ------------------------------------------------------------------------------------ presets


def cifar10(num_classes: int = 10) -> TerminatorConfig:
    """The author's CIFAR10 network (spec §3.1): 5 blocks, 3→288 channels, 32×32."""
    return TerminatorConfig(input_shape=(3, 32, 32), num_classes=num_classes)


def cifar100() -> TerminatorConfig:
    """The author's CIFAR100 network: ``cifar10()`` with a 100-class head."""
    return cifar10(num_classes=100)


def tiny(num_classes: int = 10) -> TerminatorConfig:
    """Smallest network that exercises every branch (x_pre and x_pre_pre too) on 1×8×8 inputs.

    Four blocks (1→2→4→8→16 channels), G-IBS with 2 groups (one BS and one IS group), all four
    local branches with the author's kernel sizes, no dropout (deterministic in train mode).
    """
    return TerminatorConfig(
        input_shape=(1, 8, 8),
        num_classes=num_classes,
        bottleneck_factors=(2, 2, 2, 2),
        num_concat_pre=(0, 0, 1, 2),
        dropout=(0.0, 0.0, 0.0, 0.0),
        global_hidden=8,
        global_layers=(2, 1, 1, 1),
        local_hidden=4,
        local_layers=1,
        channel_hidden=4,
        channel_layers=1,
        hi_channel_hidden=4,
        hi_spatial_hidden=8,
        hi_layers=1,
        ibs_groups=2,
    )


def tiny_1d(num_classes: int = 10, length: int = 64, channels: int = 1) -> TerminatorConfig:
    """``tiny()`` for sequences (B, channels, length) on ``square_grid(length)`` (64 steps: 8×8)."""
    return tiny(num_classes).replace(input_shape=(channels, length), grid=square_grid(length))


def sequence(
    length: int = 1024, channels: int = 1, num_classes: int = 10, grid: tuple[int, int] | None = None
) -> TerminatorConfig:
    """The author's 5-block network for pixel sequences (B, channels, length) (spec §5 Q1).

    The first bottleneck factor is 12 // channels so that the widths from block 1 on are the
    CIFAR ones (12, 36, 72, 144, 288) and every width is divisible by the 12 G-IBS groups.
    ``grid`` defaults to ``square_grid(length)``, the smallest square holding the sequence.
    """
    if grid is None:
        grid = square_grid(length)
    if 12 % channels:
        raise ValueError(f"channels: the sequence preset needs 12 divisible by channels, got {channels}")
    return TerminatorConfig(
        input_shape=(channels, length),
        num_classes=num_classes,
        bottleneck_factors=(12 // channels, 3, 2, 2, 2),
        grid=grid,
    )


def smnist() -> TerminatorConfig:
    """Sequential MNIST: (B, 1, 784) on a 28×28 grid."""
    return sequence(784, 1, 10, (28, 28))


def scifar10() -> TerminatorConfig:
    """Sequential CIFAR10: (B, 3, 1024) on a 32×32 grid."""
    return sequence(1024, 3, 10, (32, 32))


def digits(num_classes: int = 10) -> TerminatorConfig:
    """A 4-block Terminator for 1×8×8 images (scikit-learn's digits; ``hyperzzw train``'s default).

    Widths 1→12→24→48→96 (every one divisible by the 12 G-IBS groups), x_pre in block 2 and
    x_pre_pre in block 3, the author's local kernel sizes and ω₀, narrower slow networks.
    """
    return TerminatorConfig(
        input_shape=(1, 8, 8),
        num_classes=num_classes,
        bottleneck_factors=(12, 2, 2, 2),
        num_concat_pre=(0, 0, 1, 2),
        dropout=(0.0, 0.05, 0.05, 0.05),
        global_hidden=32,
        global_layers=(2, 2, 2, 2),
        local_hidden=16,
        local_layers=2,
        channel_hidden=16,
        channel_layers=2,
        hi_channel_hidden=8,
        hi_spatial_hidden=32,
        hi_layers=2,
    )


def digits_1d(num_classes: int = 10, length: int = 64, channels: int = 1) -> TerminatorConfig:
    """``digits()`` for sequences (B, channels, length) on ``square_grid(length)``: 64-step pixel
    sequences on the 8×8 grid by default, MNIST-1D's 40 steps on 7×7 (``hyperzzw train``)."""
    return digits(num_classes).replace(input_shape=(channels, length), grid=square_grid(length))


PRESETS = {
    "cifar10": cifar10,
    "cifar100": cifar100,
    "tiny": tiny,
    "tiny_1d": tiny_1d,
    "sequence": sequence,
    "smnist": smnist,
    "scifar10": scifar10,
    "digits": digits,
    "digits_1d": digits_1d,
}


def preset(name: str) -> TerminatorConfig:
    """A preset by name (see ``PRESETS``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
