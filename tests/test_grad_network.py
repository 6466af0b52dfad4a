"""Whole-network gradient of the Terminator reference against finite differences.

``terminator_loss_and_grad`` (hand-written backprop through every block) is compared, tensor by
tensor, with 4th-order central differences of the training loss (CE with label smoothing plus the
slow loss, spec §2.12-2.13) for the ``tiny()`` (B, 1, 8, 8) and ``tiny_1d()`` (B, 1, 64)
configurations. MAGNet_L's stop-gradient terms are frozen at the test point
(``terminator_stop_gradient_values``, spec §2.1): the frozen loss has the same value there
and its exact derivative is what the hand-written backprop must return.

Cost control: one forward costs ~10-30 ms. A parameter of block i cannot change the outputs of
blocks 0..i-1, so finite differences of block-i parameters re-run only blocks i.. (the cached
composition is itself checked against ``terminator_loss``). The default run checks EVERY tensor
with a directional derivative along a random unit direction (4 evaluations per tensor; for a
scalar tensor that is the element itself), plus every element of the tensors with at most
``SMALL_ALL_ELEMENTS`` elements. ``test_every_element_exhaustive`` (marked slow) checks every
element of every tensor.
"""

from __future__ import annotations

import numpy as np
import pytest

from hyperzzw_core import reference as R

CONFIGS = {"tiny_2d": R.tiny, "tiny_1d": R.tiny_1d, "tiny_1d_L23": lambda: R.tiny_1d(length=23)}
BATCH = 2

#: finite-difference step (absolute; directions are unit vectors; the checker's max_step). Measured
#: on both configs: the FD noise of the loss (|L| ~ 2.5) is <= ~6e-12 at this step; a step of 1e-3
#: is quieter (~3e-13) but its truncation error reaches 1e-5 relative (the loss is strongly curved
#: in K_g and in the local slow nets' outputs).
STEP = 1e-4
#: relative tolerance of a directional or element derivative
RTOL = 1e-6
#: absolute floor, ~10x the measured FD noise: derivatives below it are only checked to be ~0
FLOOR = 5e-11
#: tensors with at most this many elements are also checked element by element in the default run
SMALL_ALL_ELEMENTS = 2


# ------------------------------------------------------------------------------ test points


def _with_leaf(tree, parts, value):
    """A copy of ``tree`` (shallow along the path) with the leaf at ``parts`` replaced."""
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(tree, list):
        new = list(tree)
        new[int(head)] = _with_leaf(tree[int(head)], rest, value)
        return new
    new = dict(tree)
    new[head] = _with_leaf(tree[head], rest, value)
    return new


def _test_point(config, seed: int):
    """Parameters at a generic point, inputs and labels.

    From ``init_params``: every leaf of magnitude < 10 gets N(0, 0.02²) noise (so zero-initialised
    biases are not at zero), and the output layers of the interaction slow nets (hi, hci) are
    scaled by 30: at init their kernels are ~0.03, which makes the loss's derivatives in those
    nets ~1e-11, below what finite differences of the whole network can resolve.
    """
    rng = np.random.default_rng(seed)
    flat = R.flatten(R.init_params(config, seed=seed))
    for key, v in flat.items():
        if (".hi." in key or ".hci." in key) and ".output." in key:
            v = 30.0 * v
        if np.abs(v).max() < 10.0:
            v = v + 0.02 * rng.standard_normal(np.shape(v))
        flat[key] = np.asarray(v, dtype=np.float64)
    params = R.unflatten(flat)
    x = rng.standard_normal((BATCH,) + config.input_shape)
    labels = rng.integers(0, config.num_classes, size=BATCH)
    return params, x, labels


class CachedLoss:
    """The frozen training loss, re-running only the blocks a parameter can influence.

    Composition per spec §1.2: out_i, K_i = SFNE_i(out_{i-1}, out_{i-2}, out_{i-3}) as
    ``num_concat_pre`` says; logits = head(GAP(out_last)); loss = CE_ls + w·slow_loss(K_0..).
    """

    def __init__(self, params, x, labels, config, frozen, train=True, masks=None):
        self.x, self.labels, self.config, self.frozen = x, labels, config, frozen
        self.train = train
        self.masks = masks if masks is not None else [None] * config.num_blocks
        self.outs, self.kernels = [], []
        self.outs, self.kernels = self._blocks(params, 0)

    def _blocks(self, params, start):
        cfg = self.config
        outs, kernels = list(self.outs[:start]), list(self.kernels[:start])
        h = self.x if start == 0 else outs[start - 1]
        for i in range(start, cfg.num_blocks):
            n_pre = cfg.num_concat_pre[i]
            x_pre = outs[i - 2] if n_pre >= 1 else None
            x_pp = outs[i - 3] if n_pre >= 2 else None
            h, k_g = R.sfne_block(
                params["blocks"][i],
                h,
                x_pre,
                x_pp,
                groups=cfg.ibs_groups,
                eps=cfg.eps,
                grid=cfg.grid,
                dropout_mask=self.masks[i] if self.train else None,
                stop_gradient_values=self.frozen[i],
                check_finite=False,
            )
            outs.append(h)
            kernels.append(k_g)
        return outs, kernels

    def loss(self, params, start: int = 0) -> float:
        cfg = self.config
        outs, kernels = self._blocks(params, start)
        last = outs[-1]
        feats = last.mean(axis=tuple(range(2, last.ndim)))
        logits = feats @ params["head"]["weight"].T + params["head"]["bias"]
        loss = float(R.label_smoothing_cross_entropy(logits, self.labels, cfg.label_smoothing))
        if self.train and cfg.slow_loss != "none":
            loss += cfg.slow_loss_weight * float(R.slow_loss(kernels, cfg.bottleneck_factors, kind=cfg.slow_loss))
        return loss

    def of_leaf(self, params, key: str):
        """f(value) = loss with leaf ``key`` set to ``value`` (re-running only what it touches)."""
        parts = key.split(".")
        start = int(parts[1]) if parts[0] == "blocks" else self.config.num_blocks

        def f(value):
            return self.loss(_with_leaf(params, parts, np.asarray(value, dtype=np.float64)), start)

        return f


class Setup:
    def __init__(self, name: str, seed: int = 3):
        self.name = name
        self.config = CONFIGS[name]()
        self.params, self.x, self.labels = _test_point(self.config, seed)
        self.frozen = R.terminator_stop_gradient_values(self.params, self.x, self.config)
        self.loss, self.grads = R.terminator_loss_and_grad(self.params, self.x, self.labels, self.config)
        self.cached = CachedLoss(self.params, self.x, self.labels, self.config, self.frozen)
        self.flat_params = R.flatten(self.params)
        self.flat_grads = R.flatten(self.grads)


_SETUPS: dict[str, Setup] = {}


def _setup(name: str) -> Setup:
    if name not in _SETUPS:
        _SETUPS[name] = Setup(name)
    return _SETUPS[name]


def _parts(config) -> list[str]:
    return [f"blocks.{i}." for i in range(config.num_blocks)] + ["head."]


PART_IDS = [(name, part) for name, make in CONFIGS.items() for part in _parts(make())]


# ------------------------------------------------------------------------------ derivatives


def _directional(f, v0: np.ndarray, direction: np.ndarray) -> float:
    """d/dt f(v0 + t·direction) at t = 0 by the checker's 4th-order stencil (step STEP)."""
    return float(R.numerical_gradient(lambda t: f(v0 + t[0] * direction), np.zeros(1), rel_step=STEP, max_step=STEP)[0])


def _unit(rng: np.random.Generator, shape) -> np.ndarray:
    d = rng.standard_normal(shape)
    return d / np.linalg.norm(d)


def _direction_failure(key, analytic, numeric, scale):
    tol = RTOL * max(abs(numeric), scale) + FLOOR
    if abs(analytic - numeric) <= tol:
        return None
    return (
        f"{key}: analytic {analytic:.12g} vs finite differences {numeric:.12g} "
        f"(|diff| {abs(analytic - numeric):.3g} > tol {tol:.3g})"
    )


def _element_failures(key, analytic: np.ndarray, numeric: np.ndarray, indices):
    scale = float(np.abs(numeric).max()) if numeric.size else 0.0
    out = []
    for a, n, idx in zip(analytic, numeric, indices, strict=True):
        tol = RTOL * max(abs(n), scale) + FLOOR
        if abs(a - n) > tol:
            out.append(
                f"{key}{list(idx)}: analytic {a:.12g} vs finite differences {n:.12g} "
                f"(|diff| {abs(a - n):.3g} > tol {tol:.3g})"
            )
    return out


def _check_elements(s: Setup, key: str, indices) -> list[str]:
    v0 = s.flat_params[key]
    numeric = R.numerical_gradient(s.cached.of_leaf(s.params, key), v0, indices=indices, rel_step=STEP, max_step=STEP)
    analytic = np.array([s.flat_grads[key][i] for i in indices])
    return _element_failures(key, analytic, numeric, indices)


def _report(failures: list[str], checked: int) -> str:
    head = f"{len(failures)} of {checked} gradient checks failed"
    return head + ":\n" + "\n".join(failures[:25]) + ("\n..." if len(failures) > 25 else "")


# ------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_composition_equals_terminator_loss(name):
    """The cached FD function is the network's loss: same value as terminator_loss (frozen or not)
    and as the loss that terminator_loss_and_grad returns, and re-running from any block gives it too."""
    s = _setup(name)
    ref_frozen = float(R.terminator_loss(s.params, s.x, s.labels, s.config, stop_gradient_values=s.frozen))
    ref_plain = float(R.terminator_loss(s.params, s.x, s.labels, s.config))
    tol = 1e-13 * abs(ref_plain)
    assert abs(ref_frozen - ref_plain) <= tol
    assert abs(float(s.loss) - ref_plain) <= tol
    for start in range(s.config.num_blocks + 1):
        assert abs(s.cached.loss(s.params, start) - ref_plain) <= tol, start
    # and the frozen function really is a different function away from the point
    key = "blocks.1.local.0.slow_l.linears.0.weight"
    bumped = _with_leaf(s.params, key.split("."), s.flat_params[key] * 1.1)
    assert float(R.terminator_loss(bumped, s.x, s.labels, s.config, stop_gradient_values=s.frozen)) != float(
        R.terminator_loss(bumped, s.x, s.labels, s.config)
    )


def _assert_same_structure(grads, params, path="params"):
    assert type(grads) is type(params), f"{path}: {type(grads).__name__} vs {type(params).__name__}"
    if isinstance(params, dict):
        assert list(grads) == list(params), f"{path}: keys {list(grads)} vs {list(params)}"
        for k in params:
            _assert_same_structure(grads[k], params[k], f"{path}[{k!r}]")
    elif isinstance(params, list):
        assert len(grads) == len(params), f"{path}: list length {len(grads)} vs {len(params)}"
        for i, (g, p) in enumerate(zip(grads, params, strict=True)):
            _assert_same_structure(g, p, f"{path}[{i}]")
    else:
        assert isinstance(grads, np.ndarray), f"{path}: gradient is a {type(grads).__name__}, not an ndarray"
        assert grads.shape == params.shape, f"{path}: shape {grads.shape} vs {params.shape}"
        assert grads.dtype == params.dtype, f"{path}: dtype {grads.dtype} vs {params.dtype}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_grads_have_the_structure_of_params(name, dtype):
    config = CONFIGS[name]()
    params = R.init_params(config, seed=0, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((BATCH,) + config.input_shape).astype(dtype)
    loss, grads = R.terminator_loss_and_grad(params, x, np.array([1, 7]), config)
    assert loss.dtype == dtype and loss.shape == ()
    _assert_same_structure(grads, params)
    assert set(R.flatten(grads)) == set(R.param_shapes(config))


@pytest.mark.parametrize(("name", "part"), PART_IDS, ids=[f"{n}-{p.rstrip('.')}" for n, p in PART_IDS])
def test_every_tensor_directional_derivative(name, part):
    """Every parameter tensor: FD slope along a random unit direction == ⟨grad, direction⟩.

    Tensors with at most SMALL_ALL_ELEMENTS elements are checked element by element too.
    """
    s = _setup(name)
    keys = [k for k in s.flat_params if k.startswith(part)]
    assert keys
    failures, checked = [], 0
    for n, key in enumerate(keys):
        v0 = s.flat_params[key]
        g = np.asarray(s.flat_grads[key])
        rng = np.random.default_rng([PART_IDS.index((name, part)), n])
        direction = _unit(rng, v0.shape)
        numeric = _directional(s.cached.of_leaf(s.params, key), v0, direction)
        analytic = float(np.sum(g * direction))
        scale = float(np.linalg.norm(g)) / np.sqrt(g.size)  # typical size of ⟨g, v⟩ for a random v
        fail = _direction_failure(key, analytic, numeric, scale)
        checked += 1
        if fail:
            failures.append(fail)
        if 1 < v0.size <= SMALL_ALL_ELEMENTS:
            idx = list(np.ndindex(v0.shape))
            failures += _check_elements(s, key, idx)
            checked += len(idx)
    assert not failures, _report(failures, checked)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_sampled_elements(name):
    """A random element of each of a random sample of tensors (catches single-element errors
    that a random direction would dilute in a large tensor)."""
    s = _setup(name)
    rng = np.random.default_rng(11)
    big = [k for k, v in s.flat_params.items() if v.size > SMALL_ALL_ELEMENTS]
    picks = rng.choice(len(big), size=min(24, len(big)), replace=False)
    failures, checked = [], 0
    for p in sorted(picks):
        key = big[p]
        shape = s.flat_params[key].shape
        idx = [tuple(int(i) for i in np.unravel_index(rng.integers(np.prod(shape)), shape))]
        failures += _check_elements(s, key, idx)
        checked += 1
    assert not failures, _report(failures, checked)


STRUCTURALLY_ZERO = ("rgu_fast.w_y.bias", "rgu_slow.w_y.bias", "mixer.bias", "bottleneck.bias")


def _structurally_zero(key: str) -> bool:
    """Per-channel constants that the next standardisation removes (see test_grad_properties):
    RGU output biases (IS of the RGU sum), mixer biases (IS / BS after them), bottleneck biases
    (G-IBS) and the local branches' scalar biases b1..b4 (a per-channel constant after the bottleneck)."""
    return key.endswith(STRUCTURALLY_ZERO) or (".local." in key and key.endswith(".bias") and "slow_l" not in key)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_most_tensors_have_resolvable_gradients(name):
    """Guard against a vacuous check: apart from the tensors whose gradient is zero by construction,
    the test point gives at least 90% of the tensors an rms gradient 1000x above FLOOR (measured:
    96% in 2D, 98% in 1D; the rest are mostly block 0's, where one channel makes IS/BS after a
    1x1 layer scale invariant, so only eps gives them a gradient)."""
    s = _setup(name)
    rms = {k: float(np.linalg.norm(g)) / np.sqrt(g.size) for k, g in s.flat_grads.items()}
    zero = [k for k in rms if _structurally_zero(k)]
    assert len(zero) == 12 * s.config.num_blocks
    others = [k for k in rms if not _structurally_zero(k)]
    small = [k for k in others if rms[k] < 1e3 * FLOOR]
    assert len(small) <= 0.1 * len(others), small


VARIANTS = {
    "plain": {},
    "dropout": {"dropout": (0.0, 0.5, 0.3, 0.5)},
    # the paper's 9-branch block (3 local branches), the earlier slow loss, other weights
    "nine_branch": {
        "local_kernel_sizes": (9, 5, 7),
        "slow_loss": "channel_sum",
        "slow_loss_weight": 2.0,
        "label_smoothing": 0.1,
    },
}


@pytest.mark.parametrize(
    ("name", "batch", "train", "variant"),
    [
        ("tiny_2d", 1, True, "plain"),
        ("tiny_2d", 3, False, "plain"),
        ("tiny_2d", 2, True, "dropout"),
        ("tiny_1d", 1, True, "dropout"),
        ("tiny_1d", 3, False, "plain"),
        ("tiny_2d", 2, True, "nine_branch"),
        ("tiny_1d", 2, True, "nine_branch"),
    ],
)
def test_whole_parameter_vector_directional(name, batch, train, variant):
    """Other batch sizes, eval mode (no slow loss), Dropout2d masks, the 9-branch block and the
    channel-sum slow loss: the FD slope of the loss along one random unit direction in the space of
    ALL parameters == ⟨grads, direction⟩."""
    config = CONFIGS[name]().replace(**VARIANTS[variant])
    params, _, _ = _test_point(config, seed=5)
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch,) + config.input_shape)
    labels = rng.integers(0, config.num_classes, size=batch)
    masks = R.dropout_masks_for(config, batch, rng, np.float64) if train else None
    frozen = R.terminator_stop_gradient_values(params, x, config, train, dropout_masks=masks)
    _, grads = R.terminator_loss_and_grad(params, x, labels, config, train, dropout_masks=masks)
    flat_p, flat_g = R.flatten(params), R.flatten(grads)
    dirs = {k: rng.standard_normal(v.shape) for k, v in flat_p.items()}
    norm = np.sqrt(sum(float(np.sum(d * d)) for d in dirs.values()))
    dirs = {k: d / norm for k, d in dirs.items()}

    def f(t):
        moved = R.unflatten({k: np.asarray(flat_p[k] + t[0] * dirs[k]) for k in flat_p})
        return float(
            R.terminator_loss(
                moved, x, labels, config, train, dropout_masks=masks, stop_gradient_values=frozen, check_finite=False
            )
        )

    numeric = float(R.numerical_gradient(f, np.zeros(1), rel_step=STEP, max_step=STEP)[0])
    analytic = sum(float(np.sum(flat_g[k] * dirs[k])) for k in flat_p)
    assert abs(numeric) > 1e-4  # a meaningful slope
    assert abs(analytic - numeric) <= RTOL * abs(numeric) + FLOOR, (analytic, numeric)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "part"), PART_IDS, ids=[f"{n}-{p.rstrip('.')}" for n, p in PART_IDS])
def test_every_element_exhaustive(name, part):
    """Every element of every parameter tensor against finite differences (~10 min per config)."""
    s = _setup(name)
    failures, checked = [], 0
    for key, v0 in s.flat_params.items():
        if key.startswith(part):
            idx = list(np.ndindex(v0.shape))
            failures += _check_elements(s, key, idx)
            checked += len(idx)
    assert not failures, _report(failures, checked)
