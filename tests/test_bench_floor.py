"""``benchmarks.floor``: the recorded products are every product the step runs, replays keep their
layouts, and the call floor only uses a smaller input that makes the same calls."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from hyperzzw_core import reference as R  # noqa: E402
from hyperzzw_core.adapters.torch import Terminator  # noqa: E402
from hyperzzw_core.benchmarks import floor, timing  # noqa: E402


def _gemm_flops(func: Any, args: tuple) -> int:
    """2·(batch)·m·n·k from the recorded operand shapes (the product operands are the last two)."""
    a, b = args[-2], args[-1]
    assert a[0] == b[0] == "tensor"
    sa, sb = a[1], b[1]
    batch = sa[0] if len(sa) == 3 else 1
    return 2 * batch * sa[-2] * sa[-1] * sb[-1]


@pytest.mark.parametrize("kind", ["train", "forward"])
def test_recorded_products_are_the_flop_counters_products(kind: str) -> None:
    """The matrix products recorded over one ``tiny()`` call at 12×12, float32 (its backward
    included in training) carry, by their shapes, exactly the FLOPs torch's ``FlopCounterMode``
    counts for the same call: a product the recorder missed (say, the backward's) would leave FLOPs
    uncounted. The depth-wise convolutions are recorded too (at 12×12 training takes the convolution
    path, not the dense one of inputs up to 64 positions), with their backward in training."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = R.tiny().replace(input_shape=(1, 12, 12))
    model = Terminator(cfg, 0, dtype=torch.float32).train(kind == "train")
    x = torch.randn((3, *cfg.input_shape))
    labels = torch.tensor([0, 1, 2])

    def step() -> None:
        if kind == "train":
            model.zero_grad(set_to_none=True)
            model.loss(x, labels).backward()
        else:
            with torch.no_grad():
                model(x)

    step()
    calls, _counts = floor.record_calls(torch, step)
    recorded = sum(
        _gemm_flops(func, args[1]) * n
        for (func, args, _kw), n in calls.items()
        if floor.category(func.overloadpacket.__name__) == "gemm"
    )
    with FlopCounterMode(display=False) as counter:
        step()
    names = ("mm", "bmm", "baddbmm", "addmm")
    counted = sum(n for op, n in counter.get_flop_counts()["Global"].items() if op.__name__ in names)
    in_place = sum(
        _gemm_flops(func, args[1]) * n
        for (func, args, _kw), n in calls.items()
        if func.overloadpacket.__name__ == "baddbmm_"
    )
    # FlopCounterMode has no formula for the in-place baddbmm_: those FLOPs are added to its count
    assert recorded == counted + in_place and recorded > 0
    kinds = Counter(func.overloadpacket.__name__ for func, _a, _k in calls)
    assert kinds["convolution"] > 0 and (kinds["convolution_backward"] > 0) == (kind == "train")


def test_rebuilt_arguments_keep_shape_stride_and_dtype() -> None:
    """Expanded (stride 0), transposed and integer tensors, nested in a list, come back with their
    layout; plain values come back as they were."""
    base = torch.randn(4, 6)
    args = (base.t(), torch.randn(5, 1).expand(5, 7), [torch.arange(3), 2.5], True)
    spec = floor._spec(torch, args)
    again = floor.rebuild(torch, spec, torch.Generator().manual_seed(0))
    assert isinstance(again[2], list) and again[2][1] == 2.5 and again[3] is True
    for old, new in zip((args[0], args[1], args[2][0]), (again[0], again[1], again[2][0]), strict=True):
        assert (tuple(new.shape), new.stride(), new.dtype) == (tuple(old.shape), old.stride(), old.dtype)
    assert again[1].stride() == (1, 0)


def test_replay_sums_each_distinct_call_times_its_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a clock that advances one second per timed call, every distinct call's median is one
    second and the categories add up to the counts recorded: 3 products and 1 convolution."""
    a = torch.randn(8, 8)
    w = torch.randn(2, 1, 3, 3)
    x = torch.randn(1, 2, 5, 5)

    def fn() -> None:
        for _ in range(3):
            torch.mm(a, a)
        torch.nn.functional.conv2d(x, w, groups=2)

    calls, _counts = floor.record_calls(torch, fn)
    assert sum(calls.values()) == 4 and len(calls) == 2
    ticks = iter(range(1000))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(ticks)))
    want = {"gemm": 3.0, "convolution": 1.0, "standardization": 0.0, "other": 0.0}
    assert floor.replay(torch, calls, reps=3) == {"by_category": want, "left_out": {}}


def test_the_kernels_are_the_calls_that_compute_values() -> None:
    """Against a hand-written list: of a function that views, copies, concatenates, pads, fills and
    builds a constant besides computing, only the computing calls are kept, each in its category;
    every call is counted."""
    x = torch.randn(4, 6, 5)
    w = torch.randn(6, 1, 3)

    def fn() -> None:
        v = x.transpose(1, 2)[0]  # views
        c = torch.cat([v.contiguous(), v.clone()])  # moves: clone ×2, cat
        torch.nn.functional.pad(c, (1, 1))  # a move: constant_pad_nd
        grid = torch.arange(5.0)  # a constant
        torch.zeros(3).fill_(2.0)  # a constant, then a move
        y = torch.mm(v, x[1]) * grid  # a product, an element-wise operator
        torch.nn.functional.batch_norm(x, None, None, training=True)  # a standardisation
        torch.nn.functional.gelu(y).sum()  # element-wise, a reduction
        torch.nn.functional.conv1d(x, w, groups=6)  # a convolution

    kernels, counts = floor.record_calls(torch, fn)
    got = Counter({func.overloadpacket.__name__: n for (func, _a, _k), n in kernels.items()})
    assert got == Counter({"mm": 1, "mul": 1, "native_batch_norm": 1, "gelu": 1, "sum": 1, "convolution": 1})
    assert {floor.category(n) for n in got} == set(floor.CATEGORIES)
    assert floor.category("native_batch_norm") == "standardization" and floor.category("mul") == "other"
    for moved in ("clone", "cat", "constant_pad_nd", "arange", "fill_", "transpose"):
        assert counts[moved] >= 1, moved  # counted for the call floor, not replayed


def test_every_compiled_operator_has_a_category_or_is_a_move() -> None:
    """Each operator of the hyperzzw library (the compiled CPU kernels' torch operators, as the
    dispatcher lists them) is a product, a convolution or a standardisation of the kernel floor, or
    one of its moves, named on purpose: an operator left out would count among "other"
    element-wise operators (hyperzzw::linear_rows_into's products did until the twentieth
    session)."""
    from hyperzzw_core.backends import _torch_functions  # noqa: F401  (defines the operators)

    names = [n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("hyperzzw::")]
    assert "linear_rows_into" in names and "standardize" in names
    unnamed = [n for n in names if n not in floor.HEAVY and n not in floor.STANDARDIZATIONS and n not in floor.MOVES]
    assert unnamed == []


def test_a_replay_that_fails_on_fresh_values_is_left_out_and_named() -> None:
    """``multinomial`` refuses the negative weights a fresh standard normal tensor has: its call is
    left out of the sum (which stays a lower estimate) and named with its count; the product beside
    it is replayed."""
    w = torch.rand(3, 4)
    a = torch.randn(8, 8)

    def fn() -> None:
        torch.mm(a, a)
        torch.multinomial(w, 1)
        torch.multinomial(w, 1)

    kernels, _counts = floor.record_calls(torch, fn)
    got = floor.kernel_floor(torch, kernels, reps=1)
    assert got["left_out"] == {"multinomial": 2} and got["n_calls"] == 3
    assert got["by_category"]["gemm"] > 0 and got["seconds"] == got["by_category"]["gemm"]


def test_call_floor_uses_only_a_smaller_input_with_the_same_calls() -> None:
    """Against a product on (16, 16): a smaller input that runs other calls (an add) is refused and
    named; then the first candidate with the same calls, a batch of one at 4×4, is the one used."""
    a = torch.randn(16, 16)
    _heavy, reference = floor.record_calls(torch, lambda: torch.mm(a, a))
    made = []

    def make(batch: int, shape: tuple[int, ...]) -> Any:
        made.append((batch, shape))
        small = torch.randn(shape)
        return (lambda: small + small) if batch == 1 and shape == (4, 4) else (lambda: torch.mm(small, small))

    got = floor.call_floor(torch, reference, make, 8, (16, 16), reps=3)
    assert made == [(1, (4, 4)), (1, (9, 9))]
    assert got["batch"] == 1 and got["shape"] == (9, 9) and got["seconds"] >= 0.0
    # nothing smaller makes the same calls: no call floor, and why
    none = floor.call_floor(torch, reference, lambda b, s: lambda: torch.randn(s) + 1, 1, (16, 16), reps=3)
    assert none["seconds"] is None and "B=1 4x4: other calls" in none["why"] and "B=1 9x9" in none["why"]
    # an input no larger than the smallest side: nothing to try
    assert floor.call_floor(torch, reference, make, 1, (4, 4))["why"].startswith("no side of")


def test_a_batch_dependent_path_falls_back_to_the_measured_batch() -> None:
    """When a batch of one makes other calls than the measured batch of 8, the call floor is taken
    at the measured batch (a smaller spatial input of the same calls)."""
    big = torch.randn(8, 16, 16)
    _heavy, reference = floor.record_calls(torch, lambda: torch.bmm(big, big))

    def make(batch: int, shape: tuple[int, ...]) -> Any:
        t = torch.randn((batch, *shape))
        return (lambda: torch.mm(t[0], t[0])) if batch == 1 else (lambda: torch.bmm(t, t))

    got = floor.call_floor(torch, reference, make, 8, (16, 16), reps=3)
    assert got["batch"] == 8 and got["shape"] == (4, 4)


onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch without oneDNN")


@onednn
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "onednn"])
def test_the_call_floor_input_takes_the_product_routes_of_the_full_size(
    monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    """The torch path routes a float32 linear to oneDNN's per-sample product (or, where built, the
    compiled product of all samples, which gives its bits) from O·I·N multiply-adds per sample: a
    (128, 64) weight at 32×32 routes (2^23), at 9×9 it would not. The smaller input of the call
    floor takes the full size's route (the threshold scaled by its share of the positions,
    restored afterwards), so its calls match and it is the one used; the recorded products count
    as products."""
    from hyperzzw_core.backends import _torch as routes
    from hyperzzw_core.backends import _torch_functions as TF

    if compiled and TF.cpu_kernels is None:
        pytest.skip("the compiled CPU kernels are not built")
    if not compiled:
        monkeypatch.setattr(TF, "cpu_kernels", None)

    w, bias = torch.randn(128, 64), torch.randn(128)

    def make(batch: int, shape: tuple[int, ...]) -> Any:
        x = torch.randn(batch, 64, shape[0] * shape[1])
        return lambda: routes.torch_pointwise_linear(torch, w, bias, x)

    full = make(2, (32, 32))
    kernels, reference = floor.record_calls(torch, full)
    assert reference["linear_rows" if compiled else "_linear_pointwise"] == (1 if compiled else 2)
    assert "baddbmm" not in reference
    assert {floor.category(f.overloadpacket.__name__) for (f, _a, _k) in kernels} == {"gemm"}
    threshold = routes.ONEDNN_MIN_PRODUCT
    got = floor.call_floor(torch, reference, make, 2, (32, 32), reps=3)
    assert routes.ONEDNN_MIN_PRODUCT == threshold
    # one call of the compiled product for any batch: a batch of one makes the same calls
    assert got["batch"] == (1 if compiled else 2) and got["shape"] == (4, 4), got
    with floor.same_product_routes(0.5):
        assert routes.onednn_rows(torch, [w], torch.ones(1, 64, 512)) == [True]
    assert routes.onednn_rows(torch, [w], torch.ones(1, 64, 512)) == [False]


def test_the_call_floor_takes_the_global_products_route_of_the_full_input() -> None:
    """The compiled global products take n × n matrices with n a multiple of 32 only; the call
    floor's smaller inputs (4×4, 9×9, 16×16) take them where the full 32×32 input does, so that
    they make the same calls, and not where a 28×28 input does not; the rule is restored after."""
    from hyperzzw_core.backends import _torch_functions as TF
    from hyperzzw_core.backends._torch import TorchBackend

    if TF.cpu_kernels is None:
        pytest.skip("the compiled CPU kernels are not built")
    backend = TorchBackend()

    def make(batch: int, shape: tuple[int, ...]) -> Any:
        z, y = torch.randn(batch, 3, *shape), torch.randn(batch, 3, *shape)
        return lambda: backend.global_products(torch, z, torch.ones(1, 3, *shape), [y, y], None)

    block = TF.GLOBAL_PRODUCTS_ROW_BLOCK
    for side, name in ((32, "global_products"), (28, "bmm")):
        _kernels, reference = floor.record_calls(torch, make(2, (side, side)))
        assert reference[name] >= 1, reference
        got = floor.call_floor(torch, reference, make, 2, (side, side), reps=3)
        assert TF.GLOBAL_PRODUCTS_ROW_BLOCK == block
        assert floor.category(name) == "gemm"  # the kernel counts as products, as bmm does
        assert got["seconds"] is not None and got["batch"] == 1 and got["shape"] == (4, 4), got


def _f64(t: Any) -> Any:
    return t.detach().to(torch.float64)


@onednn
@pytest.mark.parametrize("form", ["bias", "accumulate", "left", "right", "batch of one"])
def test_a_shared_weight_product_runs_as_a_channels_last_convolution(form: str) -> None:
    """Each form of product with a weight shared by the batch, as the network records them, against
    the same product in float64 (einsum): the convolution computes it, and says whether its bits
    are the call's exactly as an independent comparison finds."""
    g = torch.Generator().manual_seed(1)
    b, o, k, n = 3, 5, 7, 11
    w = torch.randn(o, k, generator=g)
    x = torch.randn(b, k, n, generator=g)
    if form == "bias":
        bias = torch.randn(1, o, 1, generator=g)
        func, args = torch.ops.aten.baddbmm.default, (bias, w.expand(b, o, k), x)
        want = _f64(bias) + torch.einsum("ok,bkn->bon", _f64(w), _f64(x))
    elif form == "accumulate":
        y = torch.randn(b, o, n, generator=g)
        func, args = torch.ops.aten.baddbmm_.default, (y, w.expand(b, o, k), x)
        want = _f64(y) + torch.einsum("ok,bkn->bon", _f64(w), _f64(x))
    elif form == "left":
        func, args = torch.ops.aten.bmm.default, (w.expand(b, o, k), x)
        want = torch.einsum("ok,bkn->bon", _f64(w), _f64(x))
    elif form == "right":  # x_b·W: (b, n, k) by (k, o)
        xt = torch.randn(b, n, k, generator=g)
        func, args = torch.ops.aten.bmm.default, (xt, w.t().expand(b, k, o))
        want = torch.einsum("bnk,ko->bno", _f64(xt), _f64(w.t()))
    else:  # a batch of one: its weight's batch stride is not 0
        big = torch.randn(2 * o, k, generator=g)
        func, args = torch.ops.aten.bmm.default, (big[None, :o], x[:1])
        assert args[0].stride(0) != 0
        want = torch.einsum("ok,bkn->bon", _f64(big[:o]), _f64(x[:1]))
    before = [a.clone() for a in args]
    run, same_bits = floor.channels_last_product(torch, func, args, {})
    assert all(torch.equal(a, c) for a, c in zip(args, before, strict=True)), "the call's operands were changed"
    got = run()
    got = got.squeeze(3).transpose(1, 2) if form == "right" else got.squeeze(3)
    assert got.shape == want.shape
    assert torch.allclose(_f64(got), want, rtol=1e-5, atol=1e-5)
    call = func(*((args[0].clone(),) + args[1:])) if form == "accumulate" else func(*args)
    assert same_bits == torch.equal(call, got)


def test_other_products_stay_as_called() -> None:
    """Two per-batch factors (the weight gradients), float64, an explicit beta, or a 2-D ``mm``: no
    convolution is offered."""
    a, x = torch.randn(3, 4, 5), torch.randn(3, 5, 6)
    w = torch.randn(4, 5)
    aten = torch.ops.aten
    assert floor.channels_last_product(torch, aten.bmm.default, (a, x), {}) is None
    assert floor.channels_last_product(torch, aten.bmm.default, (w.double().expand(3, 4, 5), x.double()), {}) is None
    bias = torch.randn(1, 4, 1)
    assert floor.channels_last_product(torch, aten.baddbmm.default, (bias, w.expand(3, 4, 5), x), {"beta": 2}) is None
    assert floor.channels_last_product(torch, aten.mm.default, (w, x[0]), {}) is None


def test_a_convolution_is_taken_only_with_the_same_bits_and_when_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    """The products' channels-last figure, with the convolution and the clock planted (every call
    as called takes 1 s): a faster convolution that gives other bits is never taken (each counted
    as unequal), a faster one with the same bits always is, a slower one never; the calls count
    every product and only the products."""
    w, x = torch.randn(4, 5), torch.randn(3, 5, 6)
    b1 = torch.randn(3, 4, 5)

    def fn() -> None:
        torch.bmm(w.expand(3, 4, 5), x)  # shared weight, twice
        torch.bmm(w.expand(3, 4, 5), x)
        torch.bmm(b1, x)  # two per-batch factors
        torch.nn.functional.gelu(x)  # not a product

    calls, _ = floor.record_calls(torch, fn)

    def conv() -> None:
        """The planted convolution (never run: the clock is planted too)."""

    def plant(conv_seconds: float, same_bits: bool) -> None:
        def alt(torch: Any, func: Any, args: tuple, kwargs: dict) -> Any:
            return None if args[0].stride(0) != 0 else (conv, same_bits)

        def clock(fn: Any, reps: int) -> tuple[float, float]:
            t = conv_seconds if fn is conv else 1.0
            return t, t

        monkeypatch.setattr(floor, "channels_last_product", alt)
        monkeypatch.setattr(floor, "best_and_median", clock)

    for conv_seconds, same_bits, converted, unequal, seconds in (
        (0.25, False, 0, 2, 3.0),
        (0.25, True, 2, 0, 1.5),
        (2.0, True, 0, 0, 3.0),
    ):
        plant(conv_seconds, same_bits)
        got = floor.replay(torch, calls, reps=1, layouts=True)["products_channels_last"]
        assert got == {"seconds": seconds, "calls": 3, "converted": converted, "unequal": unequal}


def test_a_product_that_fails_on_fresh_values_is_left_out_of_the_channels_last_figure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the replay leaves out a call that refuses fresh values, so does the products' figure: with
    the per-batch product's replay planted to raise, only the shared-weight product is counted."""
    w, x, b1 = torch.randn(4, 5), torch.randn(3, 5, 6), torch.randn(3, 4, 5)

    def fn() -> None:
        torch.bmm(w.expand(3, 4, 5), x)
        torch.bmm(b1, x)

    calls, _ = floor.record_calls(torch, fn)

    def clock(fn: Any, reps: int) -> tuple[float, float]:
        if isinstance(fn, functools.partial) and fn.args[0].stride(0) != 0:
            raise RuntimeError("planted: this call refuses its values")
        return 1.0, 1.0

    monkeypatch.setattr(floor, "channels_last_product", lambda *a: None)
    monkeypatch.setattr(floor, "best_and_median", clock)
    assert floor.replay(torch, calls, reps=1, layouts=True)["products_channels_last"] == {
        "seconds": 1.0,
        "calls": 1,
        "converted": 0,
        "unequal": 0,
    }


def test_composites_are_recorded_by_the_kernels_they_run_in_inference_mode() -> None:
    """Under ``torch.inference_mode`` (the eval forward without gradients) a composite operator
    such as ``matmul`` reaches a dispatch mode undecomposed; the record holds the product it runs,
    as with autograd on, and its values are the composite's."""
    a, b = torch.randn(4, 3, 5), torch.randn(5, 2)
    out: list[torch.Tensor] = []
    for mode in (torch.enable_grad, torch.inference_mode):
        with mode():
            calls, counts = floor.record_calls(torch, lambda: out.append(torch.matmul(a, b)))
        names = {func.overloadpacket.__name__ for func, _a, _k in calls}
        assert "matmul" not in counts and names & {"mm", "bmm"}, (mode.__name__, dict(counts))
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], a @ b)
