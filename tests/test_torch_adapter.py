"""The PyTorch adapter against the NumPy reference (values, gradients, formats, optimizers, compile)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backends import Backend  # noqa: E402

from hyperzzw_core import params as P  # noqa: E402
from hyperzzw_core import reference as R  # noqa: E402
from hyperzzw_core.adapters import torch as T  # noqa: E402
from hyperzzw_core.reference import flatten  # noqa: E402
from hyperzzw_core.testing import assert_close  # noqa: E402

CONFIGS = {"tiny": R.tiny, "tiny_1d": R.tiny_1d, "tiny_1d_L23": lambda: R.tiny_1d(length=23), "cifar10": R.cifar10}


def _batch(cfg: R.TerminatorConfig, seed: int = 7, b: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((b,) + cfg.input_shape), rng.integers(0, cfg.num_classes, size=b)


def _assert_tree_close(got: dict, want: dict, dtype: str, name: str, ref_low: dict | None = None) -> None:
    g, w = flatten(got), flatten(want)
    assert set(g) == set(w), f"{name}: keys differ: {sorted(set(g) ^ set(w))[:5]}"
    low = flatten(ref_low) if ref_low is not None else {}
    scale = max(float(np.abs(v).max()) for v in w.values())
    for k in w:
        assert_close(g[k], w[k], dtype=dtype, ref_low=low.get(k), scale=scale, name=f"{name}[{k}]")


# -------------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("preset", list(CONFIGS))
def test_terminator_matches_reference_float64(preset: str) -> None:
    """from_params(init_params(cfg, 0)) gives the reference's logits, loss and gradients (1e-10)."""
    cfg = CONFIGS[preset]()
    params = P.init_params(cfg, 0)
    x, labels = _batch(cfg)
    masks = R.dropout_masks_for(cfg, x.shape[0], np.random.default_rng(3), np.float64)
    model = T.Terminator.from_params(params, cfg)
    assert model.head.weight.dtype == torch.float64 and model.training
    tmasks = [None if m is None else torch.from_numpy(m) for m in masks]

    logits, kernels = model.forward_with_kernels(torch.from_numpy(x), tmasks)
    ref_logits, ref_kernels = R.terminator_forward(params, x, cfg, train=True, dropout_masks=masks)
    assert_close(logits, ref_logits, dtype="float64", name="logits")
    for i, (k, rk) in enumerate(zip(kernels, ref_kernels, strict=True)):
        assert_close(k, rk, dtype="float64", name=f"K_g[{i}]")

    loss = model.loss(torch.from_numpy(x), torch.from_numpy(labels), tmasks)
    loss.backward()
    ref_loss, ref_grads = R.terminator_loss_and_grad(params, x, labels, cfg, dropout_masks=masks)
    assert_close(loss, ref_loss, dtype="float64", name="loss")
    _assert_tree_close(model.to_params(grads=True, like=np), ref_grads, "float64", f"{preset} gradients")


def test_terminator_eval_mode_is_reference_without_train() -> None:
    """In .eval(): no dropout and no slow loss, like reference.terminator_loss(train=False)."""
    cfg = R.tiny().replace(dropout=(0.5, 0.5, 0.5, 0.5))
    params = P.init_params(cfg, 1)
    x, labels = _batch(cfg, b=3)
    model = T.Terminator.from_params(params, cfg).eval()
    loss = model.loss(torch.from_numpy(x), torch.from_numpy(labels))
    assert_close(loss, R.terminator_loss(params, x, labels, cfg, train=False), dtype="float64", name="eval loss")
    assert_close(
        model(torch.from_numpy(x)),
        R.terminator_forward(params, x, cfg, train=False)[0],
        dtype="float64",
        name="eval logits",
    )


def test_train_mode_dropout_uses_torch_rng() -> None:
    """Train mode draws Dropout2d masks from torch's RNG: reproducible under a seed, 0 or 1/(1-p)."""
    cfg = R.tiny().replace(dropout=(0.5, 0.5, 0.5, 0.5))
    model = T.Terminator(cfg, 0, dtype=torch.float64)
    x = torch.from_numpy(_batch(cfg, b=4)[0])
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(0)
    masks = model.dropout_masks(4)  # the draws the forward above made
    torch.manual_seed(0)
    assert torch.equal(model(x), a)
    assert all(set(torch.unique(m).tolist()) <= {0.0, 2.0} for m in masks)
    ref = R.terminator_forward(
        P.init_params(cfg, 0), x.numpy(), cfg, train=True, dropout_masks=[m.numpy() for m in masks]
    )[0]
    assert_close(a, ref, dtype="float64", name="logits with torch-drawn masks")


def test_terminator_float32() -> None:
    """Terminator(cfg) holds float32 init_params; values and gradients meet the float32 policy."""
    cfg = R.tiny()
    model = T.Terminator(cfg, seed=0)
    assert model.head.weight.dtype == torch.float32
    p32 = R.init_params(cfg, 0, dtype=np.float32)
    for k, v in model.state_dict().items():
        assert np.array_equal(v.numpy(), flatten(p32)[k]), k
    x, labels = _batch(cfg)
    x32 = x.astype(np.float32)
    loss = model.loss(torch.from_numpy(x32), torch.from_numpy(labels))
    loss.backward()
    p64 = R.tree_map(lambda a: a.astype(np.float64), p32)
    ref_loss, ref_grads = R.terminator_loss_and_grad(p64, x32.astype(np.float64), labels, cfg)
    low_loss, low_grads = R.terminator_loss_and_grad(p32, x32, labels, cfg)
    assert loss.dtype == torch.float32
    assert_close(loss, ref_loss, dtype="float32", ref_low=low_loss, name="float32 loss")
    _assert_tree_close(
        model.to_params(grads=True, like=np), ref_grads, "float32", "float32 gradients", ref_low=low_grads
    )


def test_terminator_on_each_torch_device(torch_backend: Backend) -> None:
    """The same logits on every torch device (CUDA where present) as the reference."""
    cfg = R.tiny_1d()
    params = P.init_params(cfg, 2)
    x, _ = _batch(cfg)
    model = T.Terminator.from_params(params, cfg, device=torch_backend.device).eval()
    out = model(torch_backend.from_numpy(x))
    assert out.device.type == torch.device(torch_backend.device).type
    assert_close(out, R.terminator_forward(params, x, cfg)[0], dtype="float64", name="logits")


def test_no_hard_coded_device() -> None:
    """A model on the 'meta' device runs: every tensor the forward creates follows the parameters."""
    cfg = R.tiny()
    model = T.Terminator(cfg, 0, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    x = torch.empty((2,) + cfg.input_shape, device="meta")
    loss = model.loss(x, torch.zeros(2, dtype=torch.int64, device="meta"))
    assert loss.device.type == "meta" and loss.shape == ()


def test_batch_namespace_hook() -> None:
    """Terminator.batch_namespace replaces the namespace of the forward (for global batch means)."""
    import array_api_compat.torch as xp

    class Counting:
        def __init__(self) -> None:
            self.batch_means = 0

        def __getattr__(self, name: str):
            return getattr(xp, name)

        def mean(self, x, /, *, axis=None, keepdims=False):
            axes = (axis,) if isinstance(axis, int) else tuple(axis or ())
            self.batch_means += 0 in axes
            return xp.mean(x, axis=axis, keepdims=keepdims)

    cfg = R.tiny()
    model = T.Terminator(cfg, 0, dtype=torch.float64)
    x = torch.from_numpy(_batch(cfg)[0])
    want = model(x)
    model.batch_namespace = ns = Counting()
    assert torch.equal(model(x), want) and ns.batch_means > 0


# --------------------------------------------------------------------------- formats


def test_state_dict_keys_are_the_flat_parameter_keys() -> None:
    cfg = R.tiny()
    params = P.init_params(cfg, 0)
    model = T.Terminator(cfg, 0, dtype=torch.float64)
    sd = model.state_dict()
    assert set(sd) == set(flatten(params))
    for k, v in flatten(params).items():
        assert np.array_equal(sd[k].numpy(), v), k
    assert [k for k, _ in model.named_parameters()] == list(sd)


def test_to_params_structure_and_grads() -> None:
    cfg = R.tiny_1d()
    params = P.init_params(cfg, 0)
    model = T.Terminator.from_params(params, cfg)
    exported = model.to_params()
    assert flatten(exported).keys() == flatten(params).keys()  # same tree, same order
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in flatten(exported).values())
    grads = model.to_params(grads=True)
    assert flatten(grads).keys() == flatten(params).keys()
    assert all(not torch.any(g) for g in flatten(grads).values())  # no backward yet: zeros
    x, labels = _batch(cfg)
    model.loss(torch.from_numpy(x), torch.from_numpy(labels)).backward()
    grads = flatten(model.to_params(grads=True, like=np))
    assert all(
        isinstance(g, np.ndarray) and g.shape == np.shape(params_leaf)
        for g, params_leaf in zip(grads.values(), flatten(params).values(), strict=True)
    )
    assert np.any(grads["head.weight"])


def test_save_load_round_trips(tmp_path) -> None:
    cfg = R.tiny()
    model = T.Terminator(cfg, 3, dtype=torch.float64).eval()
    x = torch.from_numpy(_batch(cfg)[0])
    want = model(x)
    # npz
    path = tmp_path / "params.npz"
    P.save_params(path, model.to_params())
    loaded = P.load_params(path)
    assert list(flatten(loaded)) == list(flatten(model.to_params()))
    again = T.Terminator.from_params(loaded, cfg).eval()
    assert torch.equal(again(x), want)
    # state_dict, both directions
    fresh = T.Terminator(cfg, 0, dtype=torch.float64).eval()
    fresh.load_state_dict(P.to_state_dict(loaded))
    assert torch.equal(fresh(x), want)
    tree = P.from_state_dict(model.state_dict(), like=np)
    for k, v in flatten(tree).items():
        assert np.array_equal(v, flatten(loaded)[k]), k


def test_from_params_validates_and_copies() -> None:
    cfg = R.tiny()
    params = P.init_params(cfg, 0)
    model = T.Terminator.from_params(params, cfg, dtype=torch.float32)
    assert model.head.weight.dtype == torch.float32
    with torch.no_grad():
        model.head.weight.add_(1.0)
    assert np.array_equal(params["head"]["weight"], R.init_params(cfg, 0)["head"]["weight"])  # copied
    bad = P.init_params(R.tiny_1d(), 0)
    with pytest.raises((KeyError, ValueError), match="params"):
        T.Terminator.from_params(bad, cfg)


def test_from_params_refuses_options_the_module_does_not_take() -> None:
    """Options reach the module's own ``_set_options`` (ChannelMixer keeps eps); a module without
    options (PointwiseLinear) and the Terminator (config only) refuse any other, naming it."""
    cfg = R.tiny()
    linear = {"weight": np.eye(3), "bias": np.zeros(3)}
    assert T.ChannelMixer.from_params(linear, eps=1e-3).eps == 1e-3
    with pytest.raises(TypeError, match=r"PointwiseLinear: unexpected options \['eps'\]"):
        T.PointwiseLinear.from_params(linear, eps=1e-3)
    with pytest.raises(TypeError, match=r"Terminator.from_params: unexpected options \['eps'\]"):
        T.Terminator.from_params(P.init_params(cfg, 0), cfg, eps=1e-3)
    with pytest.raises(TypeError, match="TerminatorConfig"):
        T.Terminator.from_params(P.init_params(cfg, 0))


# ------------------------------------------------------------------------ operator modules


def _case(name: str):
    from hyperzzw_core.testing import REGISTRY

    s = REGISTRY[name].samples("float64")[0]
    return s.args, s.kwargs


@pytest.mark.parametrize(
    "name, build, call",
    [
        ("magnet_g", lambda a, k: T.MAGNetG.from_params(a[0]), lambda m, a: m()),
        ("magnet_gc", lambda a, k: T.MAGNetGC.from_params(a[0]), lambda m, a: m()),
        ("magnet_l", lambda a, k: T.MAGNetL.from_params(a[0]), lambda m, a: m(a[1])),
        ("rgu", lambda a, k: T.RGU.from_params(a[0]), lambda m, a: m(a[1])),
        ("pointwise_linear", lambda a, k: T.PointwiseLinear.from_params(a[0]), lambda m, a: m(a[1])),
        ("channel_mixer", lambda a, k: T.ChannelMixer.from_params(a[0]), lambda m, a: m(a[1])),
        ("bottleneck", lambda a, k: T.Bottleneck.from_params(a[0]), lambda m, a: m(a[1])),
        ("local_conv", lambda a, k: T.LocalConv.from_params(a[0]), lambda m, a: m(a[1], a[2])),
        ("hyper_channel_interaction", lambda a, k: T.HyperChannelInteraction.from_params(a[0]), lambda m, a: m(a[1])),
        ("hyper_interaction", lambda a, k: T.HyperInteraction.from_params(a[0]), lambda m, a: m(a[1], a[2])),
        (
            "sfne_block",
            lambda a, k: T.SFNEBlock.from_params(a[0], groups=k["groups"], grid=k["grid"]),
            lambda m, a: m(*a[1:]),
        ),
        ("hyperzzw_global", lambda a, k: T.HyperZZWGlobal(k.get("grid")), lambda m, a: m(*a)),
        ("hyperzzw_2e", lambda a, k: T.HyperZZW2E(), lambda m, a: m(*a)),
        ("depthwise_conv", lambda a, k: T.DepthwiseConv(), lambda m, a: m(*a)),
        ("gelu", lambda a, k: T.GELU(), lambda m, a: m(*a)),
        ("si_glu", lambda a, k: T.SiGLU(), lambda m, a: m(*a)),
        ("instance_standardize", lambda a, k: T.InstanceStandardize(), lambda m, a: m(*a)),
        ("batch_standardize", lambda a, k: T.BatchStandardize(), lambda m, a: m(*a)),
        ("g_ibs", lambda a, k: T.GIBS(k["groups"]), lambda m, a: m(*a)),
        ("adaptive_avg_pool", lambda a, k: T.AdaptiveAvgPool(a[1]), lambda m, a: m(a[0])),
        ("tile_channels", lambda a, k: T.TileChannels(a[1]), lambda m, a: m(a[0])),
        ("slow_loss", lambda a, k: T.SlowLoss(a[1], k["kind"]), lambda m, a: m(a[0])),
        ("label_smoothing_cross_entropy", lambda a, k: T.LabelSmoothingCrossEntropy(k["eps"]), lambda m, a: m(*a)),
    ],
)
def test_operator_modules_match_reference(name, build, call) -> None:
    from hyperzzw_core.testing import REGISTRY

    args, kwargs = _case(name)
    module = build(args, kwargs)
    t_args = tuple(Backend("torch", "torch", lambda a: torch.from_numpy(np.array(a))).convert(args))
    out = call(module, t_args)
    want = REGISTRY[name].reference(*args, **kwargs)
    outs, wants = (list(out), list(want)) if isinstance(want, tuple) else ([out], [want])
    for o, w in zip(outs, wants, strict=True):
        assert_close(o, w, dtype="float64", name=name)
    if any(True for _ in module.parameters()):
        assert flatten(module.to_params(like=np)).keys() == flatten(args[0]).keys()
        assert set(module.state_dict()) == set(flatten(args[0]))


def test_module_constructors_use_the_reference_init() -> None:
    rng = np.random.default_rng(5)
    want = R.init_magnet_l(rng, 5, 2, 4, 3, 2)
    got = T.MAGNetL(5, 2, 4, 3, 2, seed=5, dtype=torch.float64).to_params(like=np)
    for k, v in flatten(want).items():
        assert np.array_equal(flatten(got)[k], v), k
    block = T.SFNEBlock(R.tiny(), 1, seed=4, dtype=torch.float64)
    want = R.init_block(np.random.default_rng(4), R.tiny(), 1)
    assert all(np.array_equal(flatten(block.to_params(like=np))[k], v) for k, v in flatten(want).items())


# ---------------------------------------------------------------------------- optimizers


P0 = [0.5, -1.0, 0.0, 2.0]
GRADS = [[1.0, -2.0, 0.0, 0.5], [-1.0, -1.0, 3.0, -0.5], [0.0, 2.0, -1.0, 0.0]]


def _run(opt_cls, **kw):
    p = torch.nn.Parameter(torch.tensor(P0, dtype=torch.float64))
    opt = opt_cls([p], lr=0.25, **kw)
    seen = []
    for g in GRADS:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        seen.append(p.detach().clone().tolist())
    return seen, opt.state[p]


def test_kar3_hand_computed_sequence() -> None:
    """§2.14: p ← p − lr·(sign g + sign m1 + sign m2) with the PREVIOUS EMAs, then the EMAs.

    lr = 1/4, β = (1/2, 3/4); every value below is exact in binary and was worked out by hand:
      step 1: signs (g) [1,-1,0,1]; m1 = m2 = 0 contribute 0          → p = [1/4, -3/4, 0, 7/4]
              m1 = g1/2 = [1/2, -1, 0, 1/4];  m2 = g1/4 = [1/4, -1/2, 0, 1/8]
      step 2: sign g2 [-1,-1,1,-1] + sign m1 [1,-1,0,1] + sign m2 [1,-1,0,1] = [1,-3,1,1]
                                                                       → p = [0, 0, -1/4, 3/2]
              m1 = [-1/4, -1, 3/2, -1/8];  m2 = [-1/16, -5/8, 3/4, -1/32]
      step 3: sign g3 [0,1,-1,0] + [-1,-1,1,-1] + [-1,-1,1,-1] = [-2,-1,1,-2]
                                                                       → p = [1/2, 1/4, -1/2, 2]
              m1 = [-1/8, 1/2, 1/4, -1/16];  m2 = [-3/64, 1/32, 5/16, -3/128]
    """
    seen, state = _run(T.Kar3, betas=(0.5, 0.75))
    assert seen == [[0.25, -0.75, 0.0, 1.75], [0.0, 0.0, -0.25, 1.5], [0.5, 0.25, -0.5, 2.0]]
    assert state["m1"].tolist() == [-0.125, 0.5, 0.25, -0.0625]
    assert state["m2"].tolist() == [-0.046875, 0.03125, 0.3125, -0.0234375]


def test_kar2_hand_computed_sequence() -> None:
    """§2.14: p ← p − lr·sign(g) − lr·sign(m); m ← β·m + (1 − β)·g; lr = 1/4, β = 3/4.

    step 1: sign g1 [1,-1,0,1], m = 0            → p = [1/4, -3/4, 0, 7/4];  m = [1/4, -1/2, 0, 1/8]
    step 2: [-1,-1,1,-1] + [1,-1,0,1] = [0,-2,1,0] → p = [1/4, -1/4, -1/4, 7/4]
            m = [-1/16, -5/8, 3/4, -1/32]
    step 3: [0,1,-1,0] + [-1,-1,1,-1] = [-1,0,0,-1] → p = [1/2, -1/4, -1/4, 2]
            m = [-3/64, 1/32, 5/16, -3/128]
    """
    seen, state = _run(T.Kar2, betas=0.75)
    assert seen == [[0.25, -0.75, 0.0, 1.75], [0.25, -0.25, -0.25, 1.75], [0.5, -0.25, -0.25, 2.0]]
    assert state["m"].tolist() == [-0.046875, 0.03125, 0.3125, -0.0234375]


@pytest.mark.parametrize("opt_cls, kw", [(T.Kar3, {"betas": (0.5, 0.75)}), (T.Kar2, {"betas": 0.75})])
def test_sign_optimizers_equal_a_loop_over_parameters_bit_for_bit(opt_cls, kw) -> None:
    """The multi-tensor step against §2.14 written out per parameter here: several parameters of
    other shapes and dtypes (float32 and float64 in one group), one without a gradient (no state,
    untouched), gradients with exact zeros, five steps; every value equal, not merely close (lr
    and 1 − β are powers of two, so the two sides round alike)."""
    gen = torch.Generator().manual_seed(3)
    shapes = [((3, 4), torch.float32), ((5,), torch.float64), ((), torch.float32), ((2, 1, 3), torch.float64)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dt)) for s, dt in shapes]
    frozen = torch.nn.Parameter(torch.randn(2, generator=gen))
    want = [p.detach().clone() for p in params]
    betas = list(kw["betas"]) if isinstance(kw["betas"], tuple) else [kw["betas"]]
    emas = [[torch.zeros_like(p) for _ in betas] for p in params]
    opt = opt_cls([*params, frozen], lr=0.125, **kw)
    before = frozen.detach().clone()
    for _ in range(5):
        for p in params:
            g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.grad = torch.where(g.abs() < 0.3, torch.zeros_like(g), g)
        opt.step()
        for w, ms, p in zip(want, emas, params, strict=True):
            for s in [torch.sign(p.grad)] + [torch.sign(m) for m in ms]:  # the previous EMAs
                w -= 0.125 * s  # term by term, left to right, as §2.14 writes it
            for m, b in zip(ms, betas, strict=True):
                m.copy_(b * m + (1 - b) * p.grad)
        for w, p in zip(want, params, strict=True):
            assert torch.equal(p.detach(), w)
    assert torch.equal(frozen.detach(), before) and frozen not in opt.state
    keys = ("m1", "m2") if opt_cls is T.Kar3 else ("m",)
    for p, ms in zip(params, emas, strict=True):
        for k, m in zip(keys, ms, strict=True):
            assert torch.equal(opt.state[p][k], m)


@pytest.mark.parametrize("opt_cls", [T.Kar3, T.Kar2])
def test_sign_optimizers_refuse_a_sparse_gradient_before_touching_any_parameter(opt_cls) -> None:
    dense, sparse = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(4))
    dense.grad = torch.ones(3)
    sparse.grad = torch.sparse_coo_tensor([[1]], [2.0], (4,), check_invariants=True)
    opt = opt_cls([dense, sparse], lr=0.5)
    with pytest.raises(RuntimeError, match=f"{opt_cls.__name__} does not support sparse gradients"):
        opt.step()
    assert torch.equal(dense.detach(), torch.ones(3)) and torch.equal(sparse.detach(), torch.ones(4))


def test_optimizer_arguments() -> None:
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert T.Kar3(p).defaults == {"lr": 1e-4, "betas": (0.5, 0.95)}
    assert T.Kar2(p).defaults["betas"] == 0.95 and T.Kar2(p, betas=(0.9,)).defaults["betas"] == 0.9
    assert T.Kar2(p, betas=[0.9]).defaults["betas"] == 0.9
    with pytest.raises(ValueError, match="one β"):
        T.Kar2(p, betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="betas"):
        T.Kar3(p, betas=(0.5, 1.0))
    with pytest.raises(ValueError, match="lr"):
        T.Kar2(p, lr=-1.0)


# --------------------------------------------------------------------------- regulariser


def _expected_partition(cfg: R.TerminatorConfig) -> tuple[set[str], set[str]]:
    """The §5 Q10 sets, listed role by role for this config (independent of the regex rule)."""
    fast, slow = set(), set()
    for i in range(cfg.num_blocks):
        b = f"blocks.{i}"
        fast |= {f"{b}.mixer.weight", f"{b}.mixer.bias", f"{b}.bottleneck.weight", f"{b}.bottleneck.bias"}
        for j in range(len(cfg.local_kernel_sizes)):
            fast |= {f"{b}.local.{j}.mixer.weight", f"{b}.local.{j}.mixer.bias", f"{b}.local.{j}.bias"}
            n_l = cfg.local_layers
            mlp = (
                [f"filters.{n}" for n in range(n_l + 1)]
                + [f"linears.{n}" for n in range(n_l)]
                + ["output", "reduce", "fc1"]
                + [f"linears_x.{n}" for n in range(n_l)]
            )
            slow |= {f"{b}.local.{j}.slow_l.{m}.weight" for m in mlp}
        for net, layers in ((f"{b}.slow_g", cfg.global_layers[i]), (f"{b}.hi.spatial", cfg.hi_layers)):
            mlp = [f"filters.{n}" for n in range(layers + 1)] + [f"linears.{n}" for n in range(layers)] + ["output"]
            slow |= {f"{net}.{m}.weight" for m in mlp}
        slow |= {f"{b}.{r}.{w}.weight" for r in ("rgu_fast", "rgu_slow") for w in ("w_k", "w_v", "w_q", "w_y")}
    return fast, slow


def test_l2_partition_is_the_documented_one() -> None:
    for cfg in (R.tiny(), R.cifar10()):
        fast, slow = _expected_partition(cfg)
        part = T.l2_partition(list(R.param_shapes(cfg)))
        assert part.fast == fast and part.slow == slow
        assert not part.fast & part.slow
        left_out = set(R.param_shapes(cfg)) - fast - slow
        assert all(
            ".bias_p" in k or ".hci." in k or ".hi.channel." in k or k.endswith(".bias") or k.startswith("head.")
            for k in left_out
        ), sorted(left_out)[:5]


def test_l2_regularizer_matches_direct_computation() -> None:
    cfg = R.tiny()
    params = P.init_params(cfg, 0)
    model = T.Terminator.from_params(params, cfg)
    fast, slow = _expected_partition(cfg)
    assert T.l2_partition(model) == T.l2_partition(params) == T.l2_partition(model.state_dict())
    flat = flatten(params)
    direct = 5e-5 * (
        sum(np.sqrt(np.sum(flat[k] ** 2)) for k in fast) + 1e-6 * sum(np.sqrt(np.sum(flat[k] ** 2)) for k in slow)
    )
    value = model.l2_regularizer(5e-5)
    assert abs(float(value.detach()) - direct) <= 1e-12 * direct
    value.backward()  # zero-initialised biases: the norm's subgradient there must be 0, not NaN
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.equal(model.blocks[0].bottleneck.bias.grad, torch.zeros_like(model.blocks[0].bottleneck.bias))
    assert abs(float(T.l2_regularizer(model, 5e-5).detach()) - direct) <= 1e-12 * direct


# ---------------------------------------------------------------------------- torch.compile


def test_compiled_training_step_matches_eager() -> None:
    """torch.compile (aot_eager: graph capture + AOT autograd, no code generation) of the tiny
    Terminator's train-mode loss gives eager's loss and every gradient."""
    cfg = R.tiny()
    x, labels = (torch.from_numpy(a) for a in _batch(cfg))
    eager = T.Terminator(cfg, 0, dtype=torch.float64)
    want = eager.loss(x, labels)
    want.backward()
    model = T.Terminator(cfg, 0, dtype=torch.float64)
    loss = torch.compile(model.loss, backend="aot_eager", fullgraph=True)(x, labels)
    loss.backward()
    assert torch.allclose(loss, want, rtol=1e-12, atol=0)
    for (k, a), (_, b) in zip(model.named_parameters(), eager.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-10, atol=1e-14 * float(b.grad.abs().max())), k


@pytest.mark.slow
def test_compiled_eval_forward_matches_eager() -> None:
    """Eval mode (no dropout, no slow loss) under torch.compile (aot_eager) gives eager's logits."""
    cfg = R.tiny()
    model = T.Terminator(cfg, 0, dtype=torch.float64).eval()
    x = torch.from_numpy(_batch(cfg, b=3)[0])
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    assert torch.allclose(compiled, eager, rtol=1e-12, atol=0)


@pytest.mark.slow
def test_inductor_compiled_tiny_terminator_matches_eager() -> None:
    cfg = R.tiny()
    model = T.Terminator(cfg, 0, dtype=torch.float64).eval()
    x = torch.from_numpy(_batch(cfg, b=3)[0])
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    assert torch.allclose(compiled, eager, rtol=1e-9, atol=1e-12)
