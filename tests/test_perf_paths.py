"""The fast paths of issue #7 against the reference, and the kernel cache's invalidation.

No timings here: the benchmarks (``python -m benchmarks``) measure speed; these tests prove that
every fast path computes what the reference computes (float64: the 1e-10 policy) and that the
torch adapter's eval-mode cache of the slow networks' outputs can never serve stale kernels
(optimizer steps, ``load_state_dict``, ``.to()``, in-place edits, replaced parameters, mode
switches).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import hyperzzw_core as hz
from hyperzzw_core import _backend as B
from hyperzzw_core import _network, _slow_net, _standardize, backends
from hyperzzw_core import params as P
from hyperzzw_core import reference as R
from hyperzzw_core.testing import assert_close

torch = pytest.importorskip("torch")

import array_api_compat.numpy as xnp  # noqa: E402
import array_api_compat.torch as xt  # noqa: E402

from hyperzzw_core.adapters import torch as T  # noqa: E402


def _batch(cfg: R.TerminatorConfig, b: int = 2, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((b,) + cfg.input_shape), rng.integers(0, cfg.num_classes, size=b)


def _eval_logits(model: T.Terminator, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _tiny_eval() -> tuple[T.Terminator, torch.Tensor]:
    """A float64 ``tiny()`` Terminator (seed 0) in eval mode, and a batch for it."""
    cfg = R.tiny()
    return T.Terminator(cfg, 0, dtype=torch.float64).eval(), torch.from_numpy(_batch(cfg)[0])


def _fresh_logits(model: T.Terminator, x: torch.Tensor) -> torch.Tensor:
    """What a new model holding ``model``'s current parameters computes (no cache involved)."""
    fresh = T.Terminator.from_params(model.to_params(like=np), model.config, dtype=model.head.weight.dtype).eval()
    fresh.load_state_dict(model.state_dict())
    return _eval_logits(fresh, x)


# --------------------------------------------------------------------------- kernel cache


def test_cache_serves_identical_results_and_is_used() -> None:
    cfg = R.tiny()
    params = P.init_params(cfg, 0)
    model = T.Terminator.from_params(params, cfg).eval()
    x = torch.from_numpy(_batch(cfg)[0])
    first = _eval_logits(model, x)
    misses = model.kernel_cache.misses
    second = _eval_logits(model, x)
    assert model.kernel_cache.misses == misses and model.kernel_cache.hits >= 1
    assert torch.equal(first, second)
    assert_close(second, R.terminator_forward(params, x.numpy(), cfg)[0], dtype="float64", name="cached logits")


def test_cache_invalidated_by_optimizer_step() -> None:
    cfg = R.tiny()
    model = T.Terminator(cfg, 0, dtype=torch.float64)
    x, labels = (torch.from_numpy(a) for a in _batch(cfg))
    model.eval()
    before = _eval_logits(model, x)
    model.train()
    opt = T.Kar3(model.parameters(), lr=1e-2)
    model.loss(x, labels).backward()
    opt.step()
    model.eval()
    _eval_logits(model, x)  # fills the cache with the new kernels
    model.train()
    opt.zero_grad()
    model.loss(x, labels).backward()
    opt.step()  # changes the parameters again, while the cache holds the old kernels
    model.eval()  # (eval() clears too; the in-place test below checks the version key alone)
    after = _eval_logits(model, x)
    assert not torch.equal(before, after)
    assert torch.equal(after, _fresh_logits(model, x))
    assert_close(
        after,
        R.terminator_forward(model.to_params(like=np), x.numpy(), cfg)[0],
        dtype="float64",
        name="logits after two steps",
    )


def test_cache_invalidated_by_in_place_edit_without_mode_switch() -> None:
    """The version counter alone catches an in-place change (no .train()/.eval() in between)."""
    model, x = _tiny_eval()
    before = _eval_logits(model, x)
    with torch.no_grad():
        model.blocks[1].slow_g.output.weight.mul_(3.0)  # K_g
        model.blocks[2].hi.spatial.output.bias.add_(0.5)  # K_ss
        model.blocks[0].hci.channel.linears[0].weight.mul_(-1.0)  # K_c
        model.blocks[3].local[1].slow_l.filters[0].weight.mul_(1.5)  # MAGNet_L's static prefix
    after = _eval_logits(model, x)
    assert not torch.equal(before, after)
    assert torch.equal(after, _fresh_logits(model, x))


@pytest.mark.parametrize(
    "name",
    [
        "blocks.3.rgu_slow.w_k.weight",  # stacked with w_v (the slow RGU's product)
        "blocks.2.rgu_fast.w_v.bias",  # stacked with w_k and the mixer
        "blocks.1.mixer.weight",
        "blocks.3.bottleneck.weight",  # folded per branch (block 3 tiles x_pre and x_pre_pre)
        "blocks.2.bottleneck.bias",
        "blocks.2.local.1.bias",  # a local branch's shift, folded into the bottleneck's bias
    ],
)
def test_cache_invalidated_by_in_place_edit_of_a_prepared_linear(name: str) -> None:
    """The cache also keeps the linears' input-independent parts (the RGUs' stacked weights, the
    bottleneck's folded weights and bias): an in-place change of any parameter they read is seen."""
    model, x = _tiny_eval()
    before = _eval_logits(model, x)
    with torch.no_grad():
        model.get_parameter(name).add_(0.25)
    after = _eval_logits(model, x)
    assert not torch.equal(before, after)
    assert torch.equal(after, _fresh_logits(model, x))


def test_cache_invalidated_by_load_state_dict() -> None:
    cfg = R.tiny()
    a = T.Terminator(cfg, 0, dtype=torch.float64).eval()
    b = T.Terminator(cfg, 1, dtype=torch.float64).eval()
    x = torch.from_numpy(_batch(cfg)[0])
    _eval_logits(a, x)
    a.load_state_dict(b.state_dict())
    assert torch.equal(_eval_logits(a, x), _eval_logits(b, x))
    c = T.Terminator(cfg, 2, dtype=torch.float64).eval()
    _eval_logits(a, x)
    a.load_state_dict(c.state_dict(), assign=True)  # new Parameter objects
    assert torch.equal(_eval_logits(a, x), _eval_logits(c, x))


def test_cache_invalidated_by_to_and_replaced_parameters() -> None:
    cfg = R.tiny()
    model = T.Terminator(cfg, 0).eval()  # float32
    x32 = torch.from_numpy(_batch(cfg)[0].astype(np.float32))
    out32 = _eval_logits(model, x32)
    model.double()
    x64 = x32.double()
    out64 = _eval_logits(model, x64)
    assert out64.dtype == torch.float64 and torch.equal(out64, _fresh_logits(model, x64))
    with torch.no_grad():
        model.blocks[0].slow_g.output.weight.mul_(2.0)  # changed in float64 ...
    model.float()  # ... then back to float32 (fresh tensors)
    assert torch.equal(_eval_logits(model, x32), _fresh_logits(model, x32))
    assert not torch.equal(_eval_logits(model, x32), out32)
    lin = model.blocks[1].slow_g.output
    lin.weight = torch.nn.Parameter(lin.weight.detach() * 0.5)  # a new Parameter object
    assert torch.equal(_eval_logits(model, x32), _fresh_logits(model, x32))


def test_cache_cleared_by_mode_switch_and_explicitly() -> None:
    model, x = _tiny_eval()
    _eval_logits(model, x)
    assert model.kernel_cache._value is not None
    model.train()
    assert model.kernel_cache._value is None
    model.eval()
    _eval_logits(model, x)
    # writes through .data bypass the version counter: clear_kernel_cache() is the documented remedy
    model.blocks[0].slow_g.output.weight.data.mul_(2.0)
    model.clear_kernel_cache()
    assert torch.equal(_eval_logits(model, x), _fresh_logits(model, x))


def test_no_cache_when_gradients_are_needed() -> None:
    """Eval mode with autograd on: the kernels are recomputed in the graph and the slow networks
    get their gradients (the reference's eval-mode loss gradient)."""
    cfg = R.tiny()
    params = P.init_params(cfg, 3)
    model = T.Terminator.from_params(params, cfg).eval()
    x, labels = _batch(cfg, b=3)
    _eval_logits(model, torch.from_numpy(x))  # cache filled under no_grad
    hits = model.kernel_cache.hits
    loss = model.loss(torch.from_numpy(x), torch.from_numpy(labels))
    loss.backward()
    assert model.kernel_cache.hits == hits
    ref_loss, ref_grads = R.terminator_loss_and_grad(params, x, labels, cfg, train=False)
    assert_close(loss, ref_loss, dtype="float64", name="eval loss")
    got = R.flatten(model.to_params(grads=True, like=np))
    want = R.flatten(ref_grads)
    scale = max(float(np.abs(v).max()) for v in want.values())
    for k in (
        "blocks.0.slow_g.output.weight",
        "blocks.1.hi.spatial.output.weight",
        "blocks.2.hci.channel.output.weight",
    ):
        assert np.any(got[k]), k
        assert_close(got[k], want[k], dtype="float64", scale=scale, name=k)


def test_cache_keyed_on_inference_mode() -> None:
    model, x = _tiny_eval()
    want = _eval_logits(model, x)
    with torch.inference_mode():
        assert torch.equal(model(x), want)
    misses = model.kernel_cache.misses
    with torch.no_grad():  # runs under inference mode itself (Terminator.forward_with_kernels): a hit
        out = model(x)
    assert model.kernel_cache.misses == misses and torch.equal(out, want)
    assert not out.is_inference()  # handed back as an ordinary tensor
    # a kernel made in inference mode must not reach a later autograd-recording forward
    x_req = x.clone().requires_grad_()
    for p in model.parameters():
        p.requires_grad_(False)
    out = model(x_req)  # grad mode, no parameter needs grad: cached kernels used, input grads flow
    assert model.kernel_cache.misses == misses + 1
    assert model(x_req) is not None and model.kernel_cache.misses == misses + 1
    out.sum().backward()
    assert x_req.grad is not None and torch.all(torch.isfinite(x_req.grad))


def test_sfne_block_module_caches_and_invalidates() -> None:
    cfg = R.tiny()
    block = T.SFNEBlock(cfg, 2, seed=4, dtype=torch.float64).eval()
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, cfg.block_channels[2]) + cfg.spatial_shape)
    x_pre = rng.standard_normal((2, cfg.out_channels[0]) + cfg.spatial_shape)
    with torch.no_grad():
        _, k_g = block(torch.from_numpy(z), torch.from_numpy(x_pre))
        block.slow_g.output.weight.mul_(2.0)
        out2, k_g2 = block(torch.from_numpy(z), torch.from_numpy(x_pre))
    assert block.kernel_cache.misses == 2
    want, want_k = R.sfne_block(block.to_params(like=np), z, x_pre, groups=cfg.ibs_groups)
    assert_close(out2, want, dtype="float64", name="block out")
    assert_close(k_g2, want_k, dtype="float64", name="block K_g")
    assert not torch.equal(k_g, k_g2)


# --------------------------------------------------------------------------- the forward's tree


def _flat(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _flat(v)]
    if isinstance(tree, list):
        return [leaf for v in tree for leaf in _flat(v)]
    return [tree]


def test_forward_tree_kept_while_its_entries_hold() -> None:
    model, x = _tiny_eval()
    tree = model.forward_tree()
    assert model.forward_tree() is tree
    built = model.param_tree()  # built anew on every call, independently
    assert built is not tree and [id(p) for p in _flat(tree)] == [id(p) for p in _flat(built)]
    before = _eval_logits(model, x)
    with torch.no_grad():
        model.head.weight.mul_(2.0)  # in place: the same objects, the tree kept, the new values read
    assert model.forward_tree() is tree
    after = _eval_logits(model, x)
    assert not torch.equal(after, before) and torch.equal(after, _fresh_logits(model, x))


def _scaled(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    out = copy.deepcopy(module)
    with torch.no_grad():
        for p in out.parameters():
            p.mul_(1.5)
    return out


def _set_parameter(model: T.Terminator) -> None:
    model.blocks[1].hi.channel.output.weight = torch.nn.Parameter(model.blocks[1].hi.channel.output.weight * 1.5)


def _assign_state(model: T.Terminator) -> None:
    model.load_state_dict({k: v * 1.5 for k, v in model.state_dict().items()}, assign=True)


def _set_submodule(model: T.Terminator) -> None:
    model.blocks[0].rgu_fast = _scaled(model.blocks[0].rgu_fast)


def _set_list_item(model: T.Terminator) -> None:
    model.blocks[2].local[1] = _scaled(model.blocks[2].local[1])


@pytest.mark.parametrize("replace", [_set_parameter, _assign_state, _set_submodule, _set_list_item])
def test_forward_tree_rebuilt_when_an_entry_is_replaced(replace: Any) -> None:
    model, x = _tiny_eval()
    tree, before = model.forward_tree(), _eval_logits(model, x)
    with torch.no_grad():
        replace(model)
    assert model.forward_tree() is not tree
    after = _eval_logits(model, x)
    assert not torch.equal(after, before) and torch.equal(after, _fresh_logits(model, x))


def test_forward_tree_follows_a_module_list_grown_and_shrunk() -> None:
    model, _ = _tiny_eval()
    filters = model.blocks[0].slow_g.filters
    n = len(model.forward_tree()["blocks"][0]["slow_g"]["filters"])
    filters.append(_scaled(filters[-1]))
    assert len(model.forward_tree()["blocks"][0]["slow_g"]["filters"]) == n + 1
    del filters[0]
    kept = model.forward_tree()["blocks"][0]["slow_g"]["filters"]
    assert [m.weight for m in filters] == [f["weight"] for f in kept] and len(kept) == n


def test_forward_tree_of_a_parametrized_module_is_read_on_every_call() -> None:
    from torch.nn.utils import parametrize

    class Scale(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.factor = 1.0

        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * self.factor

    model, x = _tiny_eval()
    before = _eval_logits(model, x)
    scale = Scale()
    parametrize.register_parametrization(model.head, "weight", scale)
    assert torch.equal(_eval_logits(model, x), before)
    scale.factor = 0.0  # no registry entry changes: only a tree read anew sees it
    logits = _eval_logits(model, x)
    assert torch.equal(logits, model.head.bias.detach().expand_as(logits))
    parametrize.remove_parametrizations(model.head, "weight", leave_parametrized=False)
    assert torch.equal(_eval_logits(model, x), before)
    # a block's parameter, which the cached values read: its value, formed anew in each (inference
    # mode) forward, has no version counter; nothing is cached while it is there
    inner = Scale()
    parametrize.register_parametrization(model.blocks[2].bottleneck, "weight", inner)
    assert torch.equal(_eval_logits(model, x), before)
    inner.factor = 0.5
    halved = _eval_logits(model, x)
    assert not torch.equal(halved, before)
    parametrize.remove_parametrizations(model.blocks[2].bottleneck, "weight", leave_parametrized=True)
    assert torch.equal(halved, _fresh_logits(model, x))  # the halved weight, now a plain parameter


def test_functional_call_reads_its_parameters_and_then_the_module_s() -> None:
    model, x = _tiny_eval()
    before = _eval_logits(model, x)
    scaled = {k: v.detach() * 1.5 for k, v in model.named_parameters()}
    with torch.no_grad():
        out = torch.func.functional_call(model, scaled, (x,))
    other = T.Terminator(model.config, 0, dtype=torch.float64).eval()
    other.load_state_dict(scaled)
    assert torch.equal(out, _eval_logits(other, x))
    assert torch.equal(_eval_logits(model, x), before)


# ------------------------------------------------------------------ the eval forward in inference mode


def test_no_grad_forward_runs_in_inference_mode_and_hands_back_ordinary_tensors(monkeypatch: Any) -> None:
    model, x = _tiny_eval()
    seen: list[bool] = []
    run = model._run

    def probe(*args: Any) -> Any:
        seen.append(torch.is_inference_mode_enabled())
        return run(*args)

    monkeypatch.setattr(model, "_run", probe)
    with torch.no_grad():
        out = model(x)
        logits, kernels = model.forward_with_kernels(x)
        loss = model.loss(x, torch.zeros(x.shape[0], dtype=torch.int64))
    assert seen == [True, True, True]
    assert not any(t.is_inference() for t in [out, logits, loss, *kernels])
    grad_mode = model(x)  # autograd records: no inference mode, the same kernels' values
    assert torch.equal(out, grad_mode) and torch.equal(logits, out)
    out.add_(1.0)  # ordinary tensors: changed in place, and read by a recording operation
    w = torch.ones_like(out, requires_grad=True)
    (w * kernels[0].sum()).sum().backward()
    assert w.grad is not None


def test_inference_mode_is_not_entered_where_gradients_or_a_trace_need_the_graph() -> None:
    model, _ = _tiny_eval()
    with torch.no_grad():
        assert model._runs_inference()
        model.__dict__["_compiled_run"] = object()  # as after compile(): the compiled program's own
        assert not model._runs_inference()
        model.uncompile()
    with torch.inference_mode():
        assert not model._runs_inference()  # already on: nothing to copy out
    assert not model._runs_inference()  # gradients on
    # inside a torch.compile trace of the module: never, and asked without stopping the trace
    # (torch.is_inference_mode_enabled is one of the calls Dynamo cannot trace)
    traced = torch.compile(lambda t: t + 1.0 if model._runs_inference() else t - 1.0, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert torch.equal(traced(torch.zeros(2)), torch.full((2,), -1.0))


# ------------------------------------------------------------------------- torch.compile


def test_compile_option_matches_eager_with_cached_kernels() -> None:
    """Terminator.compile(): in eval mode the cached kernels are inputs of one full graph (the
    train-mode graph is the one test_torch_adapter compiles through ``model.loss``)."""
    cfg = R.tiny()
    x = torch.from_numpy(_batch(cfg)[0])
    eager = T.Terminator(cfg, 0, dtype=torch.float64).eval()
    model = T.Terminator(cfg, 0, dtype=torch.float64).eval()
    model.compile(backend="eager", fullgraph=True)
    assert model.is_compiled
    want = _eval_logits(eager, x)
    assert torch.allclose(_eval_logits(model, x), want, rtol=1e-12, atol=0)
    assert torch.allclose(_eval_logits(model, x), want, rtol=1e-12, atol=0)  # served from the cache
    assert model.is_compiled and model.kernel_cache.hits >= 1
    model.uncompile()
    assert not model.is_compiled and torch.equal(_eval_logits(model, x), want)


def test_compile_turns_inductors_layout_optimisation_off_on_the_cpu_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``Terminator.compile`` hands ``torch.compile``: Inductor's layout optimisation off on
    the CPU (docs/speed.md), merged into the caller's options, and nothing added where the caller
    chose a mode, another backend or that option itself."""
    from hyperzzw_core.adapters.torch import network

    seen: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(network.torch, "compile", lambda fn, *a, **k: seen.append((a, k)) or fn)
    model, _ = _tiny_eval()
    off = {"layout_optimization": False}
    for kwargs, want in (
        ({}, {"options": off}),
        ({"options": {"max_autotune": True}}, {"options": {**off, "max_autotune": True}}),
        ({"options": {"layout_optimization": True}}, {"options": {"layout_optimization": True}}),
        ({"mode": "max-autotune"}, {"mode": "max-autotune"}),
        ({"backend": "aot_eager"}, {"backend": "aot_eager"}),
        ({"backend": "inductor", "fullgraph": True}, {"backend": "inductor", "fullgraph": True, "options": off}),
    ):
        model.compile(**kwargs)
        assert seen[-1] == ((), want), (kwargs, seen[-1])
    model.compile(True)  # fullgraph, positionally: passed on as given
    assert seen[-1] == ((True,), {})
    model.to("meta")  # parameters off the CPU: no option added
    model.compile()
    assert seen[-1] == ((), {})


def test_compile_failure_falls_back_to_eager() -> None:
    def broken(x, masks, kernels):
        raise RuntimeError("no compiler here")

    model, x = _tiny_eval()
    want = _eval_logits(model, x)
    model.compile(backend="eager")
    model.__dict__["_compiled_run"] = broken  # what a compiler failure looks like from the forward
    with pytest.warns(RuntimeWarning, match="eager path"):
        got = _eval_logits(model, x)
    assert torch.equal(got, want) and not model.is_compiled


# ----------------------------------------------------------------------------- fast paths


def test_slow_kernels_precomputed_equal_inline() -> None:
    """The network with precomputed slow kernels is the network that computes them inline."""
    for cfg in (R.tiny(), R.tiny_1d()):
        params = P.init_params(cfg, 5)
        x = _batch(cfg)[0]
        masks = [None] * cfg.num_blocks
        inline = _network._forward(xnp, params, x, cfg, False, masks)
        pre = _network._forward(xnp, params, x, cfg, False, masks, None, _network._slow_kernels(xnp, params, cfg))
        assert np.array_equal(inline[0], pre[0])
        assert all(np.array_equal(a, b) for a, b in zip(inline[1], pre[1], strict=True))


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_magnet_l_static_prefix_matches_reference(layers: int) -> None:
    rng = np.random.default_rng(layers)
    params = R.init_magnet_l(rng, 5, 2, 6, 3, layers)
    x = rng.standard_normal((2, 3, 7, 7))
    static = _slow_net._magnet_l_static(xnp, params)
    got = _slow_net._magnet_l(xnp, params, x, None, static)
    assert_close(got, R.magnet_l(params, x), dtype="float64", name="MAGNet_L with the static prefix")
    frozen = R.magnet_l_stop_gradient_values(params, x) if hasattr(R, "magnet_l_stop_gradient_values") else None
    if frozen is not None:
        got = _slow_net._magnet_l(xnp, params, x, [2.0 * f for f in frozen], static)
        want = R.magnet_l(params, x, stop_gradient_values=[2.0 * f for f in frozen])
        assert_close(got, want, dtype="float64", name="MAGNet_L, frozen stop-gradient values")


def test_coordinate_grid_cache() -> None:
    like64 = torch.zeros((), dtype=torch.float64)
    a = _slow_net._points(xt, (6, 5), like64)
    b = _slow_net._points(xt, (6, 5), like64)
    assert a is b  # built once per size, dtype and device
    assert np.array_equal(a.numpy(), R.coordinate_grid((6, 5)).reshape(2, -1))
    a32 = _slow_net._points(xt, (6, 5), like64.float())
    assert a32 is not a and a32.dtype == torch.float32
    assert np.array_equal(a32.numpy(), R.coordinate_grid((6, 5)).reshape(2, -1).astype(np.float32))
    with torch.inference_mode():
        c = _slow_net._points(xt, (6, 5), like64)
    assert c is not a  # inference tensors are kept apart
    meta = _slow_net._points(xt, (6, 5), torch.zeros((), device="meta"))
    assert meta.device.type == "meta"
    n = _slow_net._points(xnp, (4,), np.zeros(()))
    assert n is _slow_net._points(xnp, (4,), np.zeros(())) and not n.flags.writeable
    assert np.array_equal(n, R.coordinate_grid((4,)))


@pytest.mark.parametrize("groups", [1, 2, 3, 5, 12])
def test_g_ibs_reshaped_matches_reference(groups: int) -> None:
    rng = np.random.default_rng(groups)
    for shape in ((3, 2 * 30, 4, 5), (2, 60, 7)):
        x = rng.standard_normal(shape) * 3.0 + 1.0
        want = R.g_ibs(x, groups)
        assert_close(_standardize._g_ibs(xnp, x, groups, 1e-5), want, dtype="float64", name="generic")
        xt_ = torch.from_numpy(x).requires_grad_()
        got = _standardize._g_ibs(xt, xt_, groups, 1e-5)
        assert_close(got, want, dtype="float64", name="torch")
        g = rng.standard_normal(shape)
        got.backward(torch.from_numpy(g))
        assert_close(xt_.grad, R.g_ibs_vjp(x, g, groups), dtype="float64", name="torch G-IBS gradient")


@pytest.mark.parametrize("kind", ["instance", "batch"])
def test_torch_standardize_values_and_gradients(kind: str) -> None:
    ref = {
        "instance": (R.instance_standardize, R.instance_standardize_vjp),
        "batch": (R.batch_standardize, R.batch_standardize_vjp),
    }[kind]
    rng = np.random.default_rng(0)
    for shape in ((3, 4, 5, 6), (2, 3, 9), (1, 3, 1), (4, 2, 1, 1)):  # incl. one value per statistic
        x = rng.standard_normal(shape) * 2.0 - 0.5
        xt_ = torch.from_numpy(x).requires_grad_()
        fn = _standardize._instance_standardize if kind == "instance" else _standardize._batch_standardize
        out = fn(xt, xt_, 1e-5)
        assert_close(out, ref[0](x), dtype="float64", name=f"{kind} {shape}")
        g = rng.standard_normal(shape)
        out.backward(torch.from_numpy(g))
        assert_close(xt_.grad, ref[1](x, g), dtype="float64", name=f"{kind} gradient {shape}")


@pytest.mark.parametrize("kind", ["instance", "batch"])
def test_torch_standardize_same_forward_with_and_without_gradients(kind: str) -> None:
    """Below float64 the standardisations run an autograd Function with gradients and, without
    (inference), the Function's forward or the native kernel directly: the same values to the
    bit, so that a model computes the same in training and in evaluation, and both within the
    float32 policy of the reference."""
    fn = _standardize._instance_standardize if kind == "instance" else _standardize._batch_standardize
    ref = R.instance_standardize if kind == "instance" else R.batch_standardize
    rng = np.random.default_rng(5)
    for shape in ((3, 4, 5, 6), (2, 3, 9), (1, 6, 32, 32)):
        x = (rng.standard_normal(shape) * 3.0 + 2.0).astype(np.float32)
        with_grad = fn(xt, torch.from_numpy(x).requires_grad_(), 1e-5)
        assert with_grad.grad_fn is not None
        with torch.no_grad():
            inference = fn(xt, torch.from_numpy(x), 1e-5)
        plain = fn(xt, torch.from_numpy(x), 1e-5)  # grad mode on, an input that needs none
        want = ref(x.astype(np.float64))
        low = ref(x)
        for name, got in (("with gradients", with_grad), ("no_grad", inference), ("no requires_grad", plain)):
            assert_close(got, want, dtype="float32", ref_low=low, name=f"{kind} {shape} {name}")
        assert torch.equal(with_grad.detach(), inference), f"{kind} {shape}: forwards differ"
        assert torch.equal(with_grad.detach(), plain), f"{kind} {shape}: forwards differ"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_pointwise_linear_values_and_gradients(dtype: str) -> None:
    rng = np.random.default_rng(1)
    params = {"weight": rng.standard_normal((5, 3)), "bias": rng.standard_normal(5)}
    x = rng.standard_normal((4, 3, 6, 2))
    g = rng.standard_normal((4, 5, 6, 2))
    tp = {k: torch.from_numpy(v.astype(dtype)).requires_grad_() for k, v in params.items()}
    tx = torch.from_numpy(x.astype(dtype)).requires_grad_()
    out = hz.pointwise_linear(tp, tx)
    out.backward(torch.from_numpy(g.astype(dtype)))
    p_low = {k: v.astype(dtype) for k, v in params.items()}
    low = R.pointwise_linear(p_low, x.astype(dtype)) if dtype == "float32" else None
    want = R.pointwise_linear(
        {k: v.astype(dtype).astype(np.float64) for k, v in params.items()}, x.astype(dtype).astype(np.float64)
    )
    assert_close(out, want, dtype=dtype, ref_low=low, name="linear")
    gp, gx = R.pointwise_linear_vjp(params, x, g)
    if dtype == "float64":
        assert_close(tx.grad, gx, dtype=dtype, name="grad x")
        assert_close(tp["weight"].grad, gp["weight"], dtype=dtype, name="grad W")
        assert_close(tp["bias"].grad, gp["bias"], dtype=dtype, name="grad b")


def _conv_case(rng: np.random.Generator, d: int, h: int, k: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    y = rng.standard_normal((2, 3) + (h,) * d).astype(dtype)
    w = (rng.standard_normal((3, 1) + (k,) * d) / k).astype(dtype)
    return y, w


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("d", [1, 2])
def test_torch_depthwise_paths_values_and_gradients(dtype: str, d: int) -> None:
    """Both torch paths (oneDNN channels-last direct; FFT) and the dispatcher, against the reference."""
    rng = np.random.default_rng(d)
    for h, k in ((8, 3), (16, 5), (17, 9), (20, 13)):
        y, w = _conv_case(rng, d, h, k, dtype)
        g = rng.standard_normal(y.shape).astype(dtype)
        y64, w64, g64 = (a.astype(np.float64) for a in (y, w, g))
        want = R.depthwise_conv(y64, w64)
        gy_want, gw_want = R.depthwise_conv_vjp(y64, w64, g64)
        low = R.depthwise_conv(y, w) if dtype == "float32" else None
        for name, fn in (
            ("direct", lambda a, b: B._torch_depthwise_direct(torch, a, b)),
            ("fft", lambda a, b: B.depthwise_conv_fft(xt, a, b)),
            ("dispatch", lambda a, b: B.depthwise_conv(xt, a, b)),
        ):
            ty = torch.from_numpy(y).requires_grad_()
            tw = torch.from_numpy(w).requires_grad_()
            out = fn(ty, tw)
            assert out.dtype == ty.dtype and out.is_contiguous()
            assert_close(out, want, dtype=dtype, ref_low=low, name=f"{name} d={d} H={h} k={k}")
            out.backward(torch.from_numpy(g))
            scale = max(float(np.abs(gy_want).max()), float(np.abs(gw_want).max()))
            gy_low, gw_low = R.depthwise_conv_vjp(y, w, g) if dtype == "float32" else (None, None)
            assert_close(ty.grad, gy_want, dtype=dtype, scale=scale, ref_low=gy_low, name=f"{name} grad y")
            assert_close(tw.grad, gw_want, dtype=dtype, scale=scale, ref_low=gw_low, name=f"{name} grad k")
            with torch.no_grad():  # inference: the plain call, no autograd Function
                out_eval = fn(torch.from_numpy(y), torch.from_numpy(w))
            assert out_eval.dtype == ty.dtype and out_eval.is_contiguous()
            assert_close(out_eval, want, dtype=dtype, ref_low=low, name=f"{name} no-grad d={d} H={h} k={k}")
            if name != "dispatch":  # (which takes the dense product for training on small inputs)
                # with and without gradients the same forward kernel: the same values to the bit
                assert torch.equal(out.detach(), out_eval), f"{name} d={d} H={h} k={k}: forwards differ"


@pytest.mark.parametrize("want", [(True, True), (True, False), (False, True)])
def test_depthwise_backward_operator_passes_opcheck_and_matches_the_reference(want: tuple[bool, bool]) -> None:
    """``hyperzzw::depthwise_conv_backward`` (what compiled graphs call for the float32 oneDNN
    path's backward): torch.library.opcheck (schema, fake tensor, dispatch) and the reference VJP
    for each gradient asked for."""
    from hyperzzw_core.backends import _torch_functions as TF

    rng = np.random.default_rng(11)
    y, w = _conv_case(rng, 2, 12, 5, "float32")
    g = rng.standard_normal(y.shape).astype(np.float32)
    args = (torch.from_numpy(g), torch.from_numpy(y), torch.from_numpy(w), [2, 2], list(want))
    torch.library.opcheck(TF.depthwise_conv_backward, args)
    refs = R.depthwise_conv_vjp(*(a.astype(np.float64) for a in (y, w, g)))
    lows = R.depthwise_conv_vjp(y, w, g)  # the reference in float32, for the policy's float32 bound
    for got, ref, low, on in zip(TF.depthwise_conv_backward(*args), refs, lows, want, strict=True):
        if on:
            assert_close(got, ref, dtype="float32", scale=float(np.abs(ref).max()), ref_low=low, name="grad")


def _mixer_of_conv(y: np.ndarray, k: np.ndarray, w: np.ndarray, b: np.ndarray, g: np.ndarray) -> tuple:
    """M = W·DWConv(Y, K) + β and its VJP at g, composed from the reference's depth-wise convolution
    and its VJP with einsum for the mixer, in the inputs' dtype: (M, ∂Y, ∂K, ∂W, ∂β)."""
    n, c = y.shape[:2]
    d = R.depthwise_conv(y, k).reshape(n, c, -1)
    m = np.einsum("oc,bcp->bop", w, d) + b[None, :, None]
    gd = np.einsum("oc,bop->bcp", w, g).reshape(y.shape)
    gy, gk = R.depthwise_conv_vjp(y, k, gd)
    return m, gy, gk, np.einsum("bop,bcp->oc", g, d), g.sum(axis=(0, 2))


@pytest.mark.parametrize("d", [1, 2])
def test_depthwise_mixer_has_the_references_values_and_gradients(d: int) -> None:
    """``DepthwiseConvMixer`` (the float32 oneDNN training path of a local branch's convolution and
    mixer) against the reference composed by hand, every input's gradient, with the gradients asked
    for one at a time too; its forward, ∂W and ∂β are those of the unfused autograd path to the bit
    (the same calls), and the backend uses it exactly where that path would run oneDNN with gradients."""
    from hyperzzw_core.backends import _torch_functions as TF

    rng = np.random.default_rng(20 + d)
    for h, k in ((9, 3), (11, 7)):  # 81 and 121 positions in 2-D: above the dense path's 64
        size = (h * h,) if d == 1 else (h, h)
        y = rng.standard_normal((2, 6) + size).astype(np.float32)
        kern = (rng.standard_normal((6, 1) + (k,) * d) / k).astype(np.float32)
        w = (rng.standard_normal((4, 6)) / 3).astype(np.float32)
        bias = rng.standard_normal(4).astype(np.float32)
        g = rng.standard_normal((2, 4, int(np.prod(size)))).astype(np.float32)
        wants = _mixer_of_conv(*(a.astype(np.float64) for a in (y, kern, w, bias, g)))
        lows = _mixer_of_conv(y, kern, w, bias, g)
        pad = ((k - 1) // 2,) * d
        for asked in (
            (True,) * 4,
            (True, False, False, False),
            (False, True, False, False),
            (False, False, True, True),
        ):
            ins = [torch.from_numpy(a).requires_grad_(on) for a, on in zip((y, kern, w, bias), asked, strict=True)]
            out = TF.DepthwiseConvMixer.apply(*ins, pad)
            assert_close(out, wants[0], dtype="float32", ref_low=lows[0], name=f"M d={d} k={k}")
            out.backward(torch.from_numpy(g))
            for t, want, low, name in zip(ins, wants[1:], lows[1:], ("Y", "K", "W", "beta"), strict=True):
                if t.requires_grad:
                    scale = float(np.abs(want).max())
                    assert_close(t.grad, want, dtype="float32", scale=scale, ref_low=low, name=f"d{name} d={d} k={k}")
                    assert t.grad.shape == t.shape and t.grad.is_contiguous()
                else:
                    assert t.grad is None
        # the unfused path: oneDNN's Function, then the backend's product under autograd
        ins = [torch.from_numpy(a).requires_grad_() for a in (y, kern, w, bias)]
        ref = [torch.from_numpy(a).requires_grad_() for a in (y, kern, w, bias)]
        fused = B.depthwise_mixer(xt, *ins)
        conv = B._torch_depthwise_direct(torch, ref[0], ref[1])
        unfused = B.pointwise_linear(xt, ref[2], ref[3], conv.reshape(2, 6, -1))
        assert torch.equal(fused, unfused)
        fused.backward(torch.from_numpy(g))
        unfused.backward(torch.from_numpy(g))
        assert torch.equal(ins[2].grad, ref[2].grad) and torch.equal(ins[3].grad, ref[3].grad)
        with torch.no_grad():  # inference, float64, the dense path: the composition (None)
            assert B.depthwise_mixer(xt, *(torch.from_numpy(a) for a in (y, kern, w, bias))) is None
        assert (
            B.depthwise_mixer(xt, *(torch.from_numpy(a).double().requires_grad_() for a in (y, kern, w, bias))) is None
        )
    small = [torch.from_numpy(a).requires_grad_() for a in _conv_case(rng, 2, 8, 3, "float32")]
    assert B.depthwise_mixer(xt, *small, torch.ones(3, 3, requires_grad=True), torch.zeros(3)) is None


def test_saved_tensor_bytes_counts_activations_not_parameters_or_their_views() -> None:
    """``baddbmm(β, W.expand(…), 2·x)`` keeps W's expanded view and 2·x for backward: the count is 2·x's
    bytes, worked out by hand, not W's (a view of a parameter, before the fix counted as an
    activation)."""
    from hyperzzw_core.benchmarks.ops import saved_tensor_bytes

    w = torch.nn.Parameter(torch.ones(5, 3))
    x = torch.ones(4, 3, 7, requires_grad=True)
    assert saved_tensor_bytes(lambda: torch.baddbmm(torch.zeros(1, 5, 1), w.expand(4, 5, 3), 2 * x)) == 4 * 3 * 7 * 4


@pytest.mark.parametrize("size", ["small", "routed"])
def test_gelu_product_sum_is_autograd_of_the_composition_to_the_bit(size: str) -> None:
    """``GeluProductSum``'s hand-written backward against autograd through the composition it
    replaces (GELU of the flagged inputs, a spatial map added to the last two, then the backend's
    ``pointwise_linear_sum``): value and every gradient (β, each W_i, each x_i, each map, with a
    tiled weight made of two slices of one matrix) equal to the bit, float32; ``routed``: at a
    size whose products take oneDNN's per-sample route (``backends._torch.onednn_rows``)."""
    from hyperzzw_core.backends import _torch_functions as TF

    rng = np.random.default_rng(8)
    s, o, n = (1, 6, 7) if size == "small" else (24, 128, 1024)
    shapes, gelu, has_map = [3 * s, 5 * s, 3 * s, 4 * s], [False, True, True, False], [False, False, True, True]
    x_np = [rng.standard_normal((2, c, n)).astype(np.float32) for c in shapes]
    big_np = rng.standard_normal((o, 18 * s)).astype(np.float32)
    b_np = rng.standard_normal(o).astype(np.float32)
    maps_np = [rng.standard_normal(n).astype(np.float32) for _ in range(2)]
    g = torch.from_numpy(rng.standard_normal((2, o, n)).astype(np.float32))
    runs = []
    for fused in (True, False):
        big, b = torch.from_numpy(big_np).requires_grad_(), torch.from_numpy(b_np).requires_grad_()
        xs = [torch.from_numpy(a).requires_grad_() for a in x_np]
        maps = [torch.from_numpy(a).requires_grad_() for a in maps_np]
        cut = [0, 3 * s, 8 * s, 11 * s, 15 * s, 18 * s]
        ws = [big[:, : cut[1]] + big[:, cut[4] :], *(big[:, cut[j] : cut[j + 1]] for j in (1, 2, 3))]
        assert backends._torch.onednn_rows(torch, ws, xs[0]) == [size == "routed"] * 4
        if fused:
            out = TF.GeluProductSum.apply(tuple(zip(gelu, has_map, strict=True)), b, *ws, *xs, *maps)
        else:
            acts = [torch.nn.functional.gelu(x) if on else x for x, on in zip(xs, gelu, strict=True)]
            acts[2:] = [a + m for a, m in zip(acts[2:], maps, strict=True)]
            out = B.pointwise_linear_sum(xt, ws, b, acts)
        out.backward(g)
        runs.append([out.detach(), b.grad, big.grad, *(x.grad for x in xs), *(m.grad for m in maps)])
    for got, want in zip(*runs, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("size", ["small", "routed"])
@pytest.mark.parametrize("source", [False, True], ids=["kept", "recomputed"])
def test_gated_product_is_autograd_of_the_composition_to_the_bit(source: bool, size: str) -> None:
    """``GatedProduct``'s hand-written backward against autograd through the calls it replaces
    (the backend's ``pointwise_linear``, then the gate): value and the gradients of K, W, β and V
    equal to the bit, float32, with K and V channel slices of a stacked product as in the SFNE
    block; given that product's source (``recomputed``), K and V recomputed from it in backward,
    and the gradients of the stacked weight, bias and input through the product's own autograd.
    ``routed``: at a size whose products take oneDNN's per-sample route."""
    from hyperzzw_core.backends import _torch_functions as TF

    rng = np.random.default_rng(9)
    c, i, n = (4, 3, 5) if size == "small" else (128, 72, 1024)
    shapes = ((3 * c, i), (3 * c,), (2, i, n), (c, c), (c,), (2, c, n))
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    runs = []
    for fused in (True, False):
        w_s, b_s, x, w, b = (torch.from_numpy(a).requires_grad_() for a in arrays[:5])
        assert backends._torch.onednn_rows(torch, [w_s, w], x) == [size == "routed"] * 2
        stacked = B.pointwise_linear(xt, w_s, b_s, x)
        k, v = stacked[:, :c], stacked[:, c : 2 * c]
        if fused:
            out = TF.GatedProduct.apply(k, w, b, v, (w_s, b_s, x) if source else None)
        else:
            out = k * B.pointwise_linear(xt, w, b, v)
        out.backward(torch.from_numpy(arrays[5]))
        runs.append([out.detach(), w_s.grad, b_s.grad, x.grad, w.grad, b.grad])
    for got, want in zip(*runs, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize(
    "bad, match",
    [
        ("few rows", r"cannot give K \(2, 4, 5\) and V \(2, 4, 5\) as channels \[0, 4\) and \[4, 8\)"),
        ("bias", r"W_s \(12, 3\) and β_s \(11,\)"),
        ("input", r"X has shape \(2, 3, 6\); expected \(2, 3, 5\)"),
    ],
)
def test_gated_product_refuses_a_source_of_the_wrong_shape(bad: str, match: str) -> None:
    """A source that cannot have made K and V (too few rows for [K; V], a bias or an input of
    another shape) is refused before any product, naming what it expected."""
    from hyperzzw_core.backends import _torch_functions as TF

    w_s, b_s, x = torch.ones(12, 3), torch.ones(12), torch.ones(2, 3, 5)
    k = v = torch.ones(2, 4, 5)
    w, b = torch.ones(4, 4), torch.ones(4)
    source = {"few rows": (w_s[:7], b_s[:7], x), "bias": (w_s, b_s[:11], x), "input": (w_s, b_s, torch.ones(2, 3, 6))}
    with pytest.raises(ValueError, match=match):
        TF.GatedProduct.apply(k, w, b, v, source[bad])


@pytest.mark.parametrize("fusion", ["depthwise_mixer_fast", "pointwise_linear_sum_gelu", "gated_pointwise_linear"])
def test_local_branches_keep_one_activation_fewer_per_fusion(monkeypatch: pytest.MonkeyPatch, fusion: str) -> None:
    """The ``cifar10()`` training step at B = 2 keeps, for backward, exactly one (B, C, H, W) float32
    activation fewer per fused term than without the fusion (C read off each block's parameters):
    ``depthwise_mixer_fast`` drops each local branch's convolution output D, which the mixer's
    product kept; ``pointwise_linear_sum_gelu`` each local branch's GELU(BS(…)), which the
    bottleneck's product kept, and each RGU's GELU(n) + bias_p, which W_y's product kept;
    ``gated_pointwise_linear`` each RGU's Q = W_q·V + β, which the gate's product kept, and the
    storage of each RGU's stacked product (2C channels for RGU_slow's [K; V], 3C for RGU_fast's
    [K; V; mixer]), which it kept through K and V. Loss and gradients are the same."""
    from hyperzzw_core.benchmarks.ops import saved_tensor_bytes

    cfg = R.cifar10()
    x, labels = (torch.from_numpy(a) for a in _batch(cfg))
    x = x.float()
    got = {}
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(type(backends.backend_for(xt)), fusion, lambda *a: None)
        model = T.Terminator(cfg, 0, dtype=torch.float32)
        torch.manual_seed(0)
        nbytes = saved_tensor_bytes(lambda m=model: m.loss(x, labels))
        torch.manual_seed(0)
        loss = model.loss(x, labels)
        loss.backward()
        got[fused] = nbytes, loss.detach(), {k: p.grad for k, p in model.named_parameters()}
    h, w = cfg.input_shape[1:]
    blocks = R.init_params(cfg, 0)["blocks"]
    widths = [int(br["mixer"]["weight"].shape[1]) for bp in blocks for br in bp["local"]]
    rgus = [int(bp[r]["w_q"]["weight"].shape[0]) for bp in blocks for r in ("rgu_slow", "rgu_fast")]
    if fusion == "pointwise_linear_sum_gelu":  # the RGUs' hidden states GELU(n) + bias_p too
        widths += rgus
    kept = 0  # bytes that only the fused path keeps
    if fusion == "gated_pointwise_linear":  # each RGU's W_q·V + β, and its stacked product
        cs = [int(bp["rgu_slow"]["w_q"]["weight"].shape[0]) for bp in blocks]
        widths = rgus + [5 * c for c in cs]
        # to recompute K and V, the gates keep the stacked biases (5C per block) and block 1's stacked
        # [W_K; W_V; W_mixer] (3C × C), which that product (of the image, no gradient) does not keep
        kept = 4 * (sum(5 * c for c in cs) + 3 * cs[0] * cs[0])
    assert got[False][0] - got[True][0] == sum(4 * 2 * c * h * w for c in widths) - kept
    assert torch.equal(got[True][1], got[False][1])
    for k, want in got[False][2].items():  # ∂Y, ∂K by oneDNN's channels-last kernels: equal up to rounding
        assert torch.allclose(got[True][2][k], want, rtol=1e-5, atol=1e-6 * float(want.abs().max())), k


def test_compiled_training_runs_the_depthwise_backward_as_one_opaque_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torch.compile (aot_eager: AOT autograd traces the backward) the float32 network's
    depth-wise backward runs inside ``hyperzzw::depthwise_conv_backward``, never traced into the
    graph, where Inductor chose layouts in which oneDNN's weight gradient took 3.4x as long
    (docs/speed.md), once per branch that eager runs through ``DepthwiseConvMixer`` (which compiled
    graphs leave to Inductor); loss and gradients are eager's. The compiled CPU weight gradient
    runs inside the operator's body, never in a trace."""
    import inspect

    from hyperzzw_core.backends import _torch_functions as TF

    callers: list[str] = []
    body, mixer_backward = TF._depthwise_conv_backward, TF.DepthwiseConvMixer.backward

    def counted(*args: Any) -> Any:
        callers.append(inspect.stack()[1].function)
        return body(*args)

    def mixer_counted(ctx: Any, g: Any) -> Any:  # eager training fuses each branch's convolution and mixer
        callers.append("mixer")
        return mixer_backward(ctx, g)

    monkeypatch.setattr(TF, "_depthwise_conv_backward", counted)
    monkeypatch.setattr(TF.DepthwiseConvMixer, "backward", staticmethod(mixer_counted))
    # compiled graphs never take oneDNN's per-sample products (backends._torch.onednn_rows), which
    # eager takes here for the block-4 bottleneck (96·ΣI·256 multiply-adds per sample): off for
    # both, so that the two make the same products and differ only where this test looks
    monkeypatch.setattr(backends._torch, "ONEDNN_MIN_PRODUCT", 2**62)
    # likewise the compiled standardisation and global-product kernels, which traces never take
    # (they read data pointers): the gradient of a 1×1 RGU weight here is pure rounding (about
    # 1e-10), so any other rounding upstream fails its relative check
    monkeypatch.setattr(TF, "compiled_standardize_applies", lambda x: False)
    monkeypatch.setattr(TF, "compiled_global_products_apply", lambda a, ys: False)
    cfg = R.digits().replace(input_shape=[1, 16, 16], grid=None)  # 16 x 16: the convolution path
    x, labels = (torch.from_numpy(a) for a in _batch(cfg))
    x = x.float()
    losses, grads = [], []
    for compiled in (False, True):
        model = T.Terminator(cfg, 0, dtype=torch.float32)
        if compiled:
            model.compile(backend="aot_eager")
        torch.manual_seed(0)  # the same dropout masks (drawn outside the compiled graph)
        loss = model.loss(x, labels)
        loss.backward()
        losses.append(loss.detach())
        grads.append({k: p.grad for k, p in model.named_parameters()})
    n_eager = callers.count("mixer")
    # eager: with the compiled weight gradient (every kernel width of digits() has one), the
    # mixer's backward forms ∂D in NCHW and runs the same body itself
    per_branch = ["mixer", "backward"] if backends.compiled_kernels()["depthwise_weight_grad"] else ["mixer"]
    assert n_eager > 0 and callers == per_branch * n_eager + ["depthwise_conv_backward"] * n_eager, callers
    assert torch.allclose(losses[1], losses[0], rtol=1e-5, atol=0)
    for k, want in grads[0].items():
        scale = float(want.abs().max())
        assert torch.allclose(grads[1][k], want, rtol=1e-3, atol=1e-4 * scale), k


def test_numpy_depthwise_paths_match_reference() -> None:
    rng = np.random.default_rng(3)
    for d in (1, 2):
        for h, k in ((8, 3), (16, 13), (20, 15)):
            y, w = _conv_case(rng, d, h, k, "float64")
            want = R.depthwise_conv(y, w)
            assert_close(B.depthwise_conv(xnp, y, w), want, dtype="float64", name=f"dispatch d={d} k={k}")
            assert_close(B.depthwise_conv_fft(xnp, y, w), want, dtype="float64", name=f"fft d={d} k={k}")


#: (shape of y, kernel size): kernels smaller and larger than the input, 1-D and 2-D, non-square
_DENSE_CASES = [
    ((2, 3, 8, 8), 3),
    ((2, 3, 8, 8), 9),
    ((2, 3, 5, 7), 5),
    ((3, 2, 40), 9),
    ((1, 2, 3, 3), 7),
    ((2, 2, 1, 6), 3),
]


def _selection_by_loops(spatial: tuple[int, ...], ksize: tuple[int, ...]) -> np.ndarray:
    """S[o, q·N + p] = 1 where tap o of output p reads input q, by explicit loops over positions."""
    n = int(np.prod(spatial))
    sel = np.zeros((int(np.prod(ksize)), n * n))
    for p in np.ndindex(*spatial):
        for o in np.ndindex(*ksize):
            q = tuple(pi + oi - (k - 1) // 2 for pi, oi, k in zip(p, o, ksize, strict=True))
            if all(0 <= qi < s for qi, s in zip(q, spatial, strict=True)):
                qf, pf, of = (
                    np.ravel_multi_index(q, spatial),
                    np.ravel_multi_index(p, spatial),
                    np.ravel_multi_index(o, ksize),
                )
                sel[of, qf * n + pf] = 1.0
    return sel


@pytest.mark.parametrize("shape, k", _DENSE_CASES)
def test_dense_selection_matches_a_loop(shape: tuple[int, ...], k: int) -> None:
    ksize = (k,) * (len(shape) - 2)
    want = _selection_by_loops(shape[2:], ksize)
    np.testing.assert_array_equal(
        backends.dense_selection(xnp, shape[2:], ksize, dtype=xnp.float64, device="cpu"), want
    )
    got = backends.dense_selection(xt, shape[2:], ksize, dtype=torch.float32, device=torch.device("cpu"))
    np.testing.assert_array_equal(got.numpy(), want.astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_depthwise_conv_values_and_gradients(dtype: str) -> None:
    """The dense per-channel product (NumPy and torch) and torch's dispatch of a training call on a
    small input (which takes it), values and gradients, against the reference."""
    rng = np.random.default_rng(11)
    for shape, k in _DENSE_CASES:
        y = rng.standard_normal(shape).astype(dtype)
        w = (rng.standard_normal((shape[1], 1) + (k,) * (len(shape) - 2)) / k).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        y64, w64, g64 = (a.astype(np.float64) for a in (y, w, g))
        want = R.depthwise_conv(y64, w64)
        gy_want, gw_want = R.depthwise_conv_vjp(y64, w64, g64)
        low = R.depthwise_conv(y, w) if dtype == "float32" else None
        gy_low, gw_low = R.depthwise_conv_vjp(y, w, g) if dtype == "float32" else (None, None)
        sel = backends.dense_selection(xnp, shape[2:], w.shape[2:], dtype=getattr(xnp, dtype), device="cpu")
        got = B.depthwise_conv_dense(xnp, y, w, sel)
        assert_close(got, want, dtype=dtype, ref_low=low, name=f"numpy dense {shape} k={k}")
        ty, tw = torch.from_numpy(y).requires_grad_(), torch.from_numpy(w).requires_grad_()
        assert B.depthwise_method(xt, ty, tw) == "dense"
        out = B.depthwise_conv(xt, ty, tw)
        assert out.dtype == ty.dtype and out.is_contiguous()
        assert_close(out, want, dtype=dtype, ref_low=low, name=f"torch dense {shape} k={k}")
        out.backward(torch.from_numpy(g))
        scale = max(float(np.abs(gy_want).max()), float(np.abs(gw_want).max()))
        assert_close(ty.grad, gy_want, dtype=dtype, scale=scale, ref_low=gy_low, name=f"dense grad y {shape} k={k}")
        assert_close(tw.grad, gw_want, dtype=dtype, scale=scale, ref_low=gw_low, name=f"dense grad k {shape} k={k}")


@pytest.mark.parametrize("plant", ["mirrored taps", "scaled by 1 + 1e-6"])
def test_a_bug_planted_in_the_dense_selection_fails_the_comparison(monkeypatch, plant: str) -> None:
    """The registry's differential samples run without gradients (the direct path), so the dense
    path gets its own planted bugs: a convolution instead of a correlation, and a tiny uniform
    scale (which the local branch's BS would hide: the bare convolution is compared); values and
    gradients, float64, must then disagree with the reference."""
    from hyperzzw_core.backends import _base

    rng = np.random.default_rng(5)
    y, w, g = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((3, 1, 5, 5)), rng.standard_normal((2, 3, 8, 8))
    want = R.depthwise_conv(y, w)
    gy_want, gw_want = R.depthwise_conv_vjp(y, w, g)

    def disagrees() -> bool:
        B.clear_constants()  # the selection matrix is cached per shape
        ty, tw = torch.from_numpy(y).requires_grad_(), torch.from_numpy(w).requires_grad_()
        out = hz.depthwise_conv(ty, tw)
        out.backward(torch.from_numpy(g))
        try:
            assert_close(out, want, dtype="float64", name="depthwise_conv")
            assert_close(ty.grad, gy_want, dtype="float64", name="grad y")
            assert_close(tw.grad, gw_want, dtype="float64", name="grad k")
        except AssertionError:
            return True
        return False

    assert not disagrees(), "the dense path must agree with the reference before the bug is planted"
    real = _base.dense_selection

    def planted(xp: Any, spatial: tuple[int, ...], ksize: tuple[int, ...], **kw: Any) -> Any:
        sel = real(xp, spatial, ksize, **kw)
        return xp.flip(sel, axis=0) if plant == "mirrored taps" else sel * (1 + 1e-6)

    monkeypatch.setattr(_base, "dense_selection", planted)
    try:
        assert disagrees(), f"a dense selection with {plant} went unseen"
    finally:
        B.clear_constants()


def test_depthwise_method_follows_the_measured_thresholds() -> None:
    def method(xp, conv, dtype, h, k):
        y = conv(np.zeros((1, 2, h, h), dtype))
        return B.depthwise_method(xp, y, conv(np.zeros((2, 1, k, k), dtype)))

    th = torch.from_numpy
    for (backend, dtype), kmin in B.FFT_MIN_KERNEL.items():
        xp, conv = (xt, th) if backend == "torch-cpu" else (xnp, np.asarray)
        n = max(B.FFT_MIN_SPATIAL, kmin)
        assert method(xp, conv, dtype, n, kmin) == "fft"
        assert method(xp, conv, dtype, n, kmin - 2) == "direct"
        assert method(xp, conv, dtype, B.FFT_MIN_SPATIAL - 1, kmin + 2) == "direct"  # small inputs: direct
    y = torch.zeros((1, 2, 64, 64), device="meta")
    assert B.depthwise_method(xt, y, torch.zeros((2, 1, 31, 31), device="meta")) == "direct"  # not the CPU
    # torch CPU training on inputs of at most DENSE_MAX_POSITIONS positions: the dense product
    k3 = torch.zeros((2, 1, 3, 3))
    for spatial, want in (((8, 8), "dense"), ((5, 13), "direct"), ((64,), "dense"), ((65,), "direct")):
        assert (np.prod(spatial) <= B.DENSE_MAX_POSITIONS) == (want == "dense")
        y = torch.zeros((1, 2) + spatial, requires_grad=True)
        k = k3 if len(spatial) == 2 else k3[..., 0]
        assert B.depthwise_method(xt, y, k) == want, spatial
        with torch.no_grad():
            assert B.depthwise_method(xt, y, k) == "direct"  # inference: oneDNN's forward is as fast
        assert B.depthwise_method(xt, y.detach(), k) == "direct"


def test_network_float32_with_every_fast_path_meets_the_policy() -> None:
    """The whole cifar10-shaped block stack at a size where the FFT and oneDNN paths are taken
    (H = 16, float32 and float64), against the reference."""
    cfg = R.cifar10().replace(
        input_shape=(3, 16, 16),
        bottleneck_factors=(4, 3, 2),
        num_concat_pre=(0, 0, 1),
        dropout=(0.0, 0.0, 0.0),
        global_layers=(2, 2, 2),
        local_kernel_sizes=(3, 13, 5, 7),
    )
    params = P.init_params(cfg, 0)
    x = _batch(cfg, b=2)[0]
    want = R.terminator_forward(params, x, cfg)[0]
    m64 = T.Terminator.from_params(params, cfg).eval()
    assert_close(_eval_logits(m64, torch.from_numpy(x)), want, dtype="float64", name="float64 logits")
    p32 = R.tree_map(lambda a: a.astype(np.float32), params)
    low = R.terminator_forward(p32, x.astype(np.float32), cfg)[0]
    want32 = R.terminator_forward(
        R.tree_map(lambda a: a.astype(np.float64), p32), x.astype(np.float32).astype(np.float64), cfg
    )[0]
    m32 = T.Terminator.from_params(p32, cfg).eval()
    assert_close(
        _eval_logits(m32, torch.from_numpy(x.astype(np.float32))),
        want32,
        dtype="float32",
        ref_low=low,
        name="float32 logits",
    )


# ------------------------------------------------------------------------- the cost model


def test_cost_model_matches_torch_flop_counter() -> None:
    """The benchmarks' analytic FLOP model (benchmarks/costs.py) against torch's FlopCounterMode:
    forward batched products and convolutions, backward batched products and convolutions (tiny
    config, whose 8×8 training convolutions take the dense path, and cifar10 on 8×8). The model
    counts the computation, not what the backward recomputes to keep less: each RGU's W_q·V + β
    and its stacked product ([K; V] for RGU_slow, [K; V; mixer] for RGU_fast), 2·B·N·7C² per
    block, are taken off the counted backward."""
    from torch.utils import flop_counter
    from torch.utils.flop_counter import FlopCounterMode

    from hyperzzw_core.backends import _torch_functions  # noqa: F401  (registers the hyperzzw operators)
    from hyperzzw_core.benchmarks.costs import network_costs

    for cfg in (R.tiny(), R.cifar10().replace(input_shape=(3, 8, 8))):
        model = T.Terminator(cfg, 0).train()
        x = torch.randn((3,) + cfg.input_shape)
        # the bottleneck accumulates its branches with in-place baddbmm_, which the counter has no
        # formula for: count it as the out-of-place product it is
        inplace = {torch.ops.aten.baddbmm_: lambda y, a, b, out_shape=None, **kw: flop_counter.bmm_flop(a, b)}
        # the bottlenecks of block 4 (O·ΣI·N = 288·1584·64) take oneDNN's product per sample, which
        # the counter does not know either: X (M, K) times a weight (N, K) into (M, N) is 2·M·K·N
        if torch.backends.mkldnn.is_available():
            inplace[torch.ops.mkldnn._linear_pointwise] = lambda x, *a, out_shape, **kw: (
                2 * math.prod(x) * out_shape[-1]
            )
        # where built, the compiled product takes them instead (all samples in one call, or one
        # sample a call into its rows of the output): 2·B·O·N times the depth of its left factor
        inplace[torch.ops.hyperzzw.linear_rows] = lambda w, b, xs, transposed, out_shape, **kw: (
            2 * math.prod(out_shape) * w[0 if transposed else 1]
        )
        inplace[torch.ops.hyperzzw.linear_rows_into] = lambda out, packed, o, b, xs, **kw: (
            2 * math.prod(out) * sum(x[1] for x in xs)
        )
        with FlopCounterMode(display=False, custom_mapping=inplace) as fc:
            loss = model.loss(x, torch.zeros(3, dtype=torch.int64))
        fwd = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
        with FlopCounterMode(display=False, custom_mapping=inplace) as fc:
            loss.backward()
        bwd = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
        t = network_costs(cfg, 3, 4, train=True)
        model_f = sum(t.fwd[c].flops for c in ("gemm", "global", "conv"))
        model_b = sum(t.bwd[c].flops for c in ("gemm", "global", "conv"))
        compiled = ("hyperzzw.linear_rows", "hyperzzw.linear_rows_into")
        products = ("aten.baddbmm", "aten.baddbmm_", "aten.bmm", "aten.convolution", "mkldnn._linear_pointwise")
        counted_f = sum(fwd.get(k, 0) for k in products + compiled)
        backward = ("aten.baddbmm", "aten.bmm", "aten.convolution_backward", "mkldnn._linear_pointwise", *compiled)
        counted_b = sum(bwd.get(k, 0) for k in backward)
        n = cfg.input_shape[1] * cfg.input_shape[2]
        counted_b -= sum(2 * x.shape[0] * n * 7 * c * c for c in cfg.block_channels)  # the recomputed products
        # the model also counts the bias additions (B·O·N per linear) and MAGNet_L's pooling products
        assert 0.9 < counted_f / model_f < 1.1, (counted_f, model_f)
        assert 0.9 < counted_b / model_b < 1.1, (counted_b, model_b)


# ------------------------------------------------------------------------- the benchmark command


def test_hyperzzw_bench_hands_its_arguments_to_the_suite(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    """``hyperzzw bench ARGS`` is ``python -m benchmarks ARGS``: options after ``bench`` reach the
    suite's parser (argparse's REMAINDER would drop a leading one), and a report without results
    says what to run instead of raising."""
    from hyperzzw_core.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hyperzzw bench") and "conv-threshold" in out
    assert main(["bench", "report", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "benchmarks.json" in err and "run the suite first" in err


# ------------------------------------------------------------- the bottleneck without concatenation


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("block", [2, 3])
def test_block_without_concatenation_equals_the_reference_with_every_parameter_moved(library: str, block: int) -> None:
    """The core never forms the bottleneck's concatenation: it sums per-branch products and folds
    the tiled x_pre / x_pre_pre into weight blocks (spec §1.3). Every parameter is moved first (the
    conformance kit's perturbation) and the block is compared with the reference, which
    concatenates and tiles: blocks 2 and 3 of tiny() tile x_pre (and x_pre_pre) from fewer channels.
    (The local branches' scalar biases, also folded, cannot be seen in any output: they shift each
    channel of P by a constant, which G-IBS removes; spec §1.3.)"""
    from hyperzzw_core.conformance.families import perturb_tree
    from hyperzzw_core.testing.registry import block_sample

    rng = np.random.default_rng(16)
    sample = block_sample(rng, np.dtype("float64"), R.tiny(), block, f"block{block}")
    params, *inputs = sample.args
    params = perturb_tree(params, rng)
    assert all(x.shape[1] < inputs[0].shape[1] for x in inputs[1:] if x is not None)  # tiled, not copied
    want, _ = R.sfne_block(params, *inputs, **sample.kwargs)
    conv = (lambda a: a) if library == "numpy" else (lambda a: torch.from_numpy(np.asarray(a)))
    got, _ = hz.sfne_block(R.tree_map(conv, params), *[None if x is None else conv(x) for x in inputs], **sample.kwargs)
    got = got.numpy() if library == "torch" else got
    assert_close(got, want, dtype="float64", scale=float(np.max(np.abs(want))), name=f"sfne_block[{block}]")


# ------------------------------------------- the standardisation Functions that keep their output


def test_output_saving_standardisations_have_the_references_gradients() -> None:
    """InstanceStandardize and NativeBatchStandardize (torch, below float64: they keep y, not x, for
    backward) called directly in float64: values and input gradients equal the reference's IS/BS
    and their hand-derived VJPs, and finite differences (gradcheck) agree with the backward."""
    from hyperzzw_core.backends._torch_functions import InstanceStandardize, NativeBatchStandardize

    rng = np.random.default_rng(7)
    for shape in ((3, 4, 5, 6), (2, 3, 7)):
        x = rng.standard_normal(shape) * 2.0 + 0.5
        g = rng.standard_normal(shape)
        cases = (
            ("IS", lambda t: InstanceStandardize.apply(t, 1e-5)[0], R.instance_standardize, R.instance_standardize_vjp),
            ("BS", lambda t: NativeBatchStandardize.apply(t, 1, 1e-5)[0], R.batch_standardize, R.batch_standardize_vjp),
        )
        for name, fn, ref, ref_vjp in cases:
            xt = torch.from_numpy(x).requires_grad_()
            y = fn(xt)
            (gx,) = torch.autograd.grad(y, xt, torch.from_numpy(g))
            assert_close(y.detach().numpy(), ref(x), dtype="float64", name=f"{name} {shape}")
            want = ref_vjp(x, g)
            want = want[0] if isinstance(want, tuple) else want
            assert_close(gx.numpy(), want, dtype="float64", scale=float(np.max(np.abs(want))), name=f"{name}' {shape}")
            assert torch.autograd.gradcheck(fn, (xt,))


def test_bottleneck_branches_refuse_a_weight_of_another_width() -> None:
    """The branch folding reads W's columns branch by branch: a weight wider or narrower than the
    branches make is refused with both widths, not read out of range or left partly unused."""
    from hyperzzw_core._linear import _bottleneck_branches

    x = np.ones((2, 3, 4, 4))
    params = {"weight": np.ones((5, 3 * 3 + 1)), "bias": np.zeros(5)}
    with pytest.raises(ValueError, match=r"10 input channels, the branches make 9"):
        _bottleneck_branches(xnp, params, [(x, 1, None, False), (x, 2, None, False)])


# ------------------------------------------------------------------- batched slow networks


def _kernel_leaves(kernels: list[dict]) -> dict[str, np.ndarray]:
    out = {}
    for i, k in enumerate(kernels):
        for name in ("k_g", "k_c", "k_cc", "k_ss"):
            out[f"{i}.{name}"] = np.asarray(k[name])
        for j, static in enumerate(k["local"]):
            for n, f in enumerate(static["filters"]):
                out[f"{i}.local{j}.filters{n}"] = np.asarray(f)
            if "u2_0" in static:
                out[f"{i}.local{j}.u2_0"] = np.asarray(static["u2_0"])
    return out


def _batched_mismatches(cfg: R.TerminatorConfig) -> list[str]:
    """Leaves where the network's batched slow kernels differ from each block's own (float64)."""
    from hyperzzw_core import _block

    params = R.init_params(cfg, 3)
    batched = _kernel_leaves(_network._slow_kernels(xnp, params, cfg))
    alone = _kernel_leaves([_block._slow_kernels(xnp, bp) for bp in params["blocks"]])
    assert batched.keys() == alone.keys()
    bad = []
    for key, want in alone.items():
        try:
            assert_close(batched[key], want, dtype="float64", name=key)
        except AssertionError:
            bad.append(key)
    return bad


@pytest.mark.parametrize("preset", ["digits", "cifar10", "tiny_1d"])
def test_batched_slow_networks_equal_each_blocks_own(preset: str) -> None:
    """The blocks' MAGNet_G, the spatial MAGNet_G of the hyper interactions and MAGNet_L's static
    prefix run as batches of equal structure (cifar10's block 0 has one more MAGNet_G layer than
    the others, so it runs alone); every output equals the block's own computation."""
    assert _batched_mismatches(R.preset(preset)) == []


def test_a_bug_planted_in_the_batched_slow_networks_is_caught(monkeypatch) -> None:
    """Stacking the layers of the batch in the wrong order (another block's weights) must show."""
    real = _slow_net._dense_many
    monkeypatch.setattr(_slow_net, "_dense_many", lambda xp, layers, h: real(xp, layers[::-1], h))
    assert _batched_mismatches(R.digits())


# ------------------------------------------------------------ the linears' input-independent parts


def test_prepared_bottleneck_is_used_only_for_its_layout(monkeypatch) -> None:
    """The bottleneck's folded weights formed with the kernels are used where the branches have
    the layout they were formed for (no fold in the forward), and ignored for another x_pre width
    (folded anew); both forwards equal the reference block."""
    from hyperzzw_core import _block, _linear

    cfg = R.tiny()
    params = R.init_params(cfg, 5)
    bp, c = params["blocks"][2], cfg.block_channels[2]  # block 2 tiles x_pre = out_0 to its c channels
    rng = np.random.default_rng(1)
    z = rng.standard_normal((2, c) + cfg.spatial_shape)
    x_pre = rng.standard_normal((2, cfg.out_channels[0]) + cfg.spatial_shape)
    assert cfg.out_channels[0] != c
    want, _ = R.sfne_block(bp, z, x_pre, groups=cfg.ibs_groups)
    folds: list[int] = []
    real = _linear._bottleneck_weights
    monkeypatch.setattr(_linear, "_bottleneck_weights", lambda *a: folds.append(1) or real(*a))
    for pre, fold_in_forward in (((cfg.out_channels[0], None), 0), ((c, None), 1)):
        kernels = _block._slow_kernels_many(xnp, [bp], [pre])[0]
        folds.clear()
        out, _ = _block._forward(xnp, bp, z, x_pre, None, cfg.ibs_groups, cfg.eps, None, None, None, kernels)
        assert len(folds) == fold_in_forward, pre
        assert_close(out, want, dtype="float64", name=f"block out, bottleneck formed for x_pre of {pre[0]}")
