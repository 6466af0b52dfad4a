"""The analytic FLOP and byte model of the operators and of the whole Terminator.

Counting rules (documented in docs/benchmarks.md, "The cost model"):

* a matrix product (m×k)·(k×n) costs 2·m·n·k FLOPs; a point-wise linear on (B, I, N) → (B, O, N)
  costs 2·B·O·I·N (+ B·O·N for the bias); the global product Ẑ @ Y costs 2·B·C·H·W²;
* a depth-wise k×k convolution costs 2·k²·B·C·H·W; in training on inputs of at most
  ``DENSE_MAX_POSITIONS`` positions N, the dense path's (C, B, N) @ (C, N, N) products cost
  2·B·C·N² (forward) and its per-channel matrix 2·k²·C·N² (counted with the slow networks);
* element-wise operations cost a few FLOPs per element: 1 for add/sub/mul, 4 for the sigmoid,
  5 for SiLU, 8 for GELU, sin and the other transcendental functions (nominal: they do not
  dominate); a standardisation costs 5 per element forward (mean, subtract, square, mean,
  scale) and 8 backward; a mean costs 1 per element read;
* bytes: every operator reads each of its inputs once and writes its output once (parameters
  included), in the dtype's item size; concatenation and tiling move bytes without FLOPs;
  reshapes and views are free. Fused, cache-resident or in-place execution can beat this count:
  it is the traffic of an unfused, operator-by-operator execution;
* backward: a product-type operator (linear, global product, convolution) costs twice its
  forward FLOPs (input and weight gradients) and reads its output gradient and saved inputs,
  writing the input gradients; an element-wise operator reads the output gradient and its saved
  inputs and writes one gradient per input; sums (add, concat) pass gradients through for free;
  a broadcast's gradient is a reduction.

The roofline bound of a measurement is max(FLOPs / peak FLOP/s, bytes / peak bytes/s), the peaks
being the same run's large-matmul and large-copy measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hyperzzw_core.backends import DENSE_MAX_POSITIONS
from hyperzzw_core.reference import TerminatorConfig

#: nominal FLOPs per element (see the module docstring)
ADD, SIGMOID, SILU, GELU, SIN = 1, 4, 5, 8, 8
STD_FWD, STD_BWD = 5, 8

CATEGORIES = ("gemm", "global", "conv", "norm", "elementwise", "copy", "slow")


@dataclass
class Cost:
    """FLOPs and bytes of one operator or of a sum of them."""

    flops: float = 0.0
    bytes: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.bytes + other.bytes)

    def scaled(self, f: float) -> Cost:
        return Cost(self.flops * f, self.bytes * f)


@dataclass
class Tally:
    """Forward and backward costs per category."""

    fwd: dict[str, Cost] = field(default_factory=lambda: {c: Cost() for c in CATEGORIES})
    bwd: dict[str, Cost] = field(default_factory=lambda: {c: Cost() for c in CATEGORIES})

    def add(self, cat: str, fwd: Cost, bwd: Cost) -> None:
        self.fwd[cat] = self.fwd[cat] + fwd
        self.bwd[cat] = self.bwd[cat] + bwd

    def backward(self) -> Cost:
        """The backward pass alone."""
        out = Cost()
        for c in CATEGORIES:
            out = out + self.bwd[c]
        return out

    def total(self, backward: bool) -> Cost:
        out = Cost()
        for c in CATEGORIES:
            out = out + self.fwd[c]
            if backward:
                out = out + self.bwd[c]
        return out

    def merge(self, other: Tally, times: int = 1) -> None:
        for c in CATEGORIES:
            self.fwd[c] = self.fwd[c] + other.fwd[c].scaled(times)
            self.bwd[c] = self.bwd[c] + other.bwd[c].scaled(times)


# ------------------------------------------------------------------------------ primitives


class Model:
    """Accumulates the costs of a computation, operator by operator (item size ``s`` bytes)."""

    def __init__(self, itemsize: int) -> None:
        self.s = itemsize
        self.t = Tally()

    # product-type ----------------------------------------------------------------------
    def linear(self, b: int, i: int, o: int, n: int, cat: str = "gemm") -> None:
        s = self.s
        f = 2.0 * b * o * i * n + b * o * n
        self.t.add(
            cat,
            Cost(f, s * (b * i * n + b * o * n + o * i + o)),
            Cost(2.0 * (2.0 * b * o * i * n) + b * o * n, s * (b * o * n + 2 * b * i * n + 2 * o * i + o)),
        )

    def dense(self, i: int, o: int, n: int, cat: str = "slow") -> None:
        """(O, I) @ (I, N) + bias: the slow networks' layers (no batch)."""
        self.linear(1, i, o, n, cat)

    def global_product(self, b: int, c: int, h: int, w: int) -> None:
        s, n = self.s, b * c * h * w
        f = 2.0 * b * c * h * w * w
        self.t.add("global", Cost(f, 3 * s * n), Cost(2 * f, 5 * s * n))

    def depthwise(self, b: int, c: int, n_sp: int, taps: int, dense: bool = False) -> None:
        """The direct convolution; or (``dense``, torch's CPU training path on small inputs) the
        per-channel matrix T = k_l @ S (C, N, N), counted as kernel construction ("slow"), and the
        products (C, B, N) @ T forward, with T's and the input's gradients backward ("conv")."""
        s, n = self.s, b * c * n_sp
        if dense:
            self.linear(1, taps, c, n_sp * n_sp, cat="slow")  # T (C, N·N) = k_l (C, K) @ S (K, N·N)
            f = 2.0 * n * n_sp
            self.t.add("conv", Cost(f, s * (2 * n + c * n_sp * n_sp)), Cost(2 * f, s * (3 * n + 2 * c * n_sp * n_sp)))
            return
        f = 2.0 * taps * n
        self.t.add("conv", Cost(f, s * (2 * n + c * taps)), Cost(2 * f, s * (3 * n + 2 * c * taps)))

    # element-wise ----------------------------------------------------------------------
    def unary(self, n: int, fl: float, cat: str = "elementwise") -> None:
        """y = f(x), x saved for backward."""
        self.t.add(cat, Cost(fl * n, 2 * self.s * n), Cost(2 * fl * n, 3 * self.s * n))

    def binary(self, n: int, n_small: int = -1, product: bool = True, cat: str = "elementwise") -> None:
        """y = a ∘ b, b possibly broadcast (``n_small`` elements; -1: full size)."""
        nb = n if n_small < 0 else n_small
        if product:
            self.t.add(cat, Cost(n, self.s * (2 * n + nb)), Cost(2 * n, self.s * (3 * n + nb + nb)))
        else:  # add: the gradient passes through (a broadcast operand's is a reduction)
            self.t.add(cat, Cost(n, self.s * (2 * n + nb)), Cost(0 if nb == n else n, 0 if nb == n else self.s * n))

    def standardize(self, n: int) -> None:
        self.t.add("norm", Cost(STD_FWD * n, 2 * self.s * n), Cost(STD_BWD * n, 3 * self.s * n))

    def mean(self, n: int, n_out: int) -> None:
        self.t.add("elementwise", Cost(n, self.s * (n + n_out)), Cost(n, self.s * (n + n_out)))

    def copy(self, n_in: int, n_out: int, reduce_back: bool = False) -> None:
        """Concatenation (n_in = n_out; the gradient is views) or tiling (gradient: a reduction)."""
        bwd = Cost(n_out, self.s * (n_out + n_in)) if reduce_back else Cost()
        self.t.add("copy", Cost(0, self.s * (n_in + n_out)), bwd)

    # slow networks -----------------------------------------------------------------------
    def mfn(self, n_pts: int, d: int, hidden: int, layers: int, c_out: int, ctx: bool = False) -> None:
        """A MAGNet on ``n_pts`` grid points (``ctx``: MAGNet_L's renormalised, gated layers)."""
        hn = hidden * n_pts
        for _ in range(layers + 1):
            self.dense(d, hidden, n_pts)
            self.unary(hn, SIN, "slow")
        for _ in range(layers):
            self.dense(hidden, hidden, n_pts)
            self.binary(hn, cat="slow")
            self.binary(hn, n_pts, product=False, cat="slow")
            if ctx:
                self.unary(hn, 2 * ADD, "slow")  # norm
                self.binary(hn, hidden, cat="slow")  # u / ‖u‖ and the weighted sum
                self.binary(hn, hidden, cat="slow")  # ⊙ X_i(g)
        self.dense(hidden, c_out, n_pts)


# -------------------------------------------------------------------------------- network


def block_costs(config: TerminatorConfig, i: int, batch: int, itemsize: int, train: bool) -> Tally:
    """Costs of SFNE block ``i`` (spec §1.3), operator by operator."""
    cfg = config
    m = Model(itemsize)
    b, c = batch, cfg.block_channels[i]
    sp = cfg.spatial_shape
    npts = 1
    for v in sp:
        npts *= v
    n = b * c * npts
    d = cfg.data_dim
    if d == 2:
        h, w = sp
    else:
        assert cfg.grid is not None, "a sequence config's costs need its (h, w) grid"
        h, w = cfg.grid
    # slow kernels: K_g, K_c, K_cc, K_ss
    m.mfn(npts, d, cfg.global_hidden, cfg.global_layers[i], c)
    m.mfn(c, 1, cfg.channel_hidden, cfg.channel_layers, 1)
    m.mfn(c, 1, cfg.hi_channel_hidden, cfg.hi_layers, 1)
    m.mfn(npts, d, cfg.hi_spatial_hidden, cfg.hi_layers, 1)
    m.binary(n, c * npts)  # Ẑ = Z ⊙ K_g
    for _ in range(2):  # RGU_slow(Ẑ), RGU_fast(Z)
        for _ in range(3):
            m.linear(b, c, c, npts)  # W_K Z, W_V Z, W_Q(W_V Z)
        m.binary(n)  # ⊙
        m.standardize(n)
        m.unary(n, GELU)
        m.binary(n, npts, product=False)  # + bias_p
        m.linear(b, c, c, npts)  # W_Y (both RGUs accumulate into one output: no separate sum)
    m.standardize(n)  # fast = IS(·)
    m.linear(b, c, c, npts)  # mixer
    m.standardize(n)  # M = IS(·)
    m.mean(n, b * c)  # HCI: GAP
    m.binary(n, b * c)  # Z ⊙ σ(score)
    m.standardize(n)  # Hc = IS(·)
    for _ in range(3):
        m.global_product(b, c, h, w)  # G1, G2, G3
    m.unary(n, SILU)  # S
    m.mean(n, b * c)  # HI: GAP(G1)
    m.mean(n, b * npts)  # HI: channel mean
    m.binary(n, b * npts)  # outer product of the scores
    m.unary(n, SIGMOID)
    m.binary(n)  # X ⊙ σ
    for k in cfg.local_kernel_sizes:  # local branches
        taps = k**d
        if d == 1:  # adaptive pooling: x @ P_Lᵀ
            m.linear(1, npts, k, b * c, cat="slow")
        else:  # (P_H @ x) @ P_Wᵀ
            m.linear(1, h, k, b * c * w, cat="slow")
            m.linear(1, w, k, b * c * k, cat="slow")
        m.linear(b, c, cfg.local_hidden, taps, cat="slow")  # reduce
        m.mfn(taps, d, cfg.local_hidden, cfg.local_layers, c, ctx=True)
        m.depthwise(b, c, npts, taps, dense=train and npts <= DENSE_MAX_POSITIONS)
        m.linear(b, c, c, npts)  # mixer
        m.standardize(n)  # BS
        m.unary(n, GELU)  # (+ b_i is folded into the bottleneck's bias)
    n_pre = cfg.num_concat_pre[i]
    # bottleneck: Σ over the branches of W_i·x_i, no concatenation; tiled x_pre / x_pre_pre enter
    # through their folded (O, C_pre) weight blocks (hyperzzw_core._linear._bottleneck_branches)
    width = (cfg.num_branches[i] - n_pre) * c + sum(cfg.out_channels[i - 2 - j] for j in range(n_pre))
    out = cfg.out_channels[i]
    n_out = b * out * npts
    m.linear(b, width, out, npts)  # bottleneck
    m.standardize(n_out)  # G-IBS
    m.unary(n_out, GELU)
    m.binary(n_out, 1, product=False)  # + b
    if train and cfg.dropout[i] > 0:
        m.binary(n_out, b * out)  # Dropout2d mask
    return m.t


def network_costs(config: TerminatorConfig, batch: int, itemsize: int, train: bool) -> Tally:
    """Costs of the whole network: every block, the head and (train) the losses."""
    total = Tally()
    for i in range(config.num_blocks):
        total.merge(block_costs(config, i, batch, itemsize, train))
    m = Model(itemsize)
    npts = 1
    for v in config.spatial_shape:
        npts *= v
    c_last = config.out_channels[-1]
    m.mean(batch * c_last * npts, batch * c_last)  # GAP
    m.linear(batch, c_last, config.num_classes, 1)  # head
    m.unary(batch * config.num_classes, 3 * SIGMOID)  # log-softmax, CE
    if train and config.slow_loss != "none":
        for i in range(1, config.num_blocks):
            for _ in range(i):
                ki = config.block_channels[i] * npts
                m.copy(ki, ki, reduce_back=True)
                m.binary(ki, product=False)
                m.unary(ki, 2 * ADD)
    total.merge(m.t)
    return total


def step_cost(config: TerminatorConfig, batch: int, itemsize: int, kind: str) -> Cost:
    """Total cost of ``kind``: "forward" (eval forward) or "train" (train forward + backward)."""
    t = network_costs(config, batch, itemsize, train=kind == "train")
    return t.total(backward=kind == "train")


def roofline_seconds(cost: Cost, peak_flops: float, peak_bytes: float) -> float:
    """The roofline bound max(FLOPs / peak, bytes / bandwidth) in seconds."""
    return max(cost.flops / peak_flops, cost.bytes / peak_bytes)
