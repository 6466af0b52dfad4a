"""The torch CPU path's point-wise linears by oneDNN's matrix product, one call per sample
(``backends._torch.onednn_rows`` term by term, ``onednn_concatenated`` for a sum with every term
at hand, the terms concatenated): which products take it, that the calls are the ones it claims,
values and gradients against float64 products computed independently (``numpy.einsum``), and the
same forward with and without gradients. The shapes are the smallest the rule routes
(O·I·N = 2^23 multiply-adds per sample)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from hyperzzw_core.testing import assert_close

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from hyperzzw_core.backends import _torch as TB  # noqa: E402
from hyperzzw_core.backends._base import ONEDNN_MIN_PRODUCT  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch without oneDNN")

N = 1024  # positions; with O = 128 and I = 64 exactly the smallest routed product


class _Calls(TorchDispatchMode):
    """Records the name of every operator called inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def _calls(fn: Callable[[], Any]) -> list[str]:
    with _Calls() as mode:
        fn()
    return mode.names


def _case(rng: np.random.Generator, b: int, o: int, ins: list[int]) -> tuple[list, np.ndarray, list]:
    ws = [(rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32) for i in ins]
    xs = [rng.standard_normal((b, i, N)).astype(np.float32) for i in ins]
    return ws, rng.standard_normal(o).astype(np.float32), xs


def _sum_np(ws: list, bias: np.ndarray, xs: list, dtype: Any) -> np.ndarray:
    """Σ_i W_i·x_i + β by numpy.einsum in ``dtype`` (the float64 one is the expected value)."""
    out = bias.astype(dtype)[None, :, None] + 0.0
    for w, x in zip(ws, xs, strict=True):
        out = out + np.einsum("oi,bin->bon", w.astype(dtype), x.astype(dtype))
    return out


def _grads_np(ws: list, xs: list, g: np.ndarray, dtype: Any) -> dict[str, np.ndarray]:
    """The gradients of Σ_i W_i·x_i + β at g by numpy.einsum in ``dtype``: "b" = Σ g,
    "W{i}" = Σ_b g_b·x_ibᵀ, "x{i}" = W_iᵀ·g."""
    gd = g.astype(dtype)
    grads = {"b": gd.sum(axis=(0, 2))}
    for i, (w, x) in enumerate(zip(ws, xs, strict=True)):
        grads[f"W{i}"] = np.einsum("bon,bin->oi", gd, x.astype(dtype))
        grads[f"x{i}"] = np.einsum("oi,bon->bin", w.astype(dtype), gd)
    return grads


def test_the_rule_routes_float32_cpu_products_from_its_threshold_up() -> None:
    """Per term: O·I·N at the threshold routes, one position fewer does not; float64 does not; with
    oneDNN switched off nothing does."""
    assert ONEDNN_MIN_PRODUCT == 128 * 64 * N
    x = torch.ones(2, 64, N)
    w, small = torch.ones(128, 64), torch.ones(127, 64)
    assert TB.onednn_rows(torch, [w, small, w], x) == [True, False, True]
    assert TB.onednn_rows(torch, [w], torch.ones(2, 64, N - 1)) == [False]
    assert TB.onednn_rows(torch, [w.double()], x.double()) == [False]
    torch.backends.mkldnn.enabled = False
    try:
        assert TB.onednn_rows(torch, [w], x) == [False]
    finally:
        torch.backends.mkldnn.enabled = True


def test_the_concatenated_rule_counts_every_term() -> None:
    """A sum with every term at hand: O·(Σ_i I_i)·N at the threshold routes although no term alone
    does, one input channel fewer does not; a single term as :func:`onednn_rows`; float64 (any
    term's) and a run with oneDNN switched off do not."""
    x, x_less = torch.ones(2, 32, N), torch.ones(2, 31, N)
    half, less = torch.ones(128, 32), torch.ones(128, 31)
    assert TB.onednn_rows(torch, [half, half], x) == [False, False]
    assert TB.onednn_concatenated(torch, [half, half], [x, x])
    assert not TB.onednn_concatenated(torch, [half, less], [x, x_less])
    assert TB.onednn_concatenated(torch, [torch.ones(128, 64)], [torch.ones(2, 64, N)])
    assert not TB.onednn_concatenated(torch, [half], [x])
    assert not TB.onednn_concatenated(torch, [half.double(), half.double()], [x.double(), x.double()])
    assert not TB.onednn_concatenated(torch, [half, half], [x, x.double()])
    torch.backends.mkldnn.enabled = False
    try:
        assert not TB.onednn_concatenated(torch, [half, half], [x, x])
    finally:
        torch.backends.mkldnn.enabled = True


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "onednn"])
@pytest.mark.parametrize("o", [128, 127], ids=["routed", "batched"])
def test_the_calls_are_the_ones_the_rule_names(monkeypatch: pytest.MonkeyPatch, o: int, compiled: bool) -> None:
    """A routed linear and sum make only oneDNN products (no batched BLAS call): a linear and a sum
    at hand one per sample (the sum's weights concatenated once, its terms copied into one buffer
    per sample, although neither term would route alone), a generator of terms one per term and
    sample; below the threshold only ``baddbmm``/``baddbmm_``. Where the compiled kernels are
    built, the linear and the sum at hand are one call of the compiled product each instead (the
    terms read where they lie: no copies)."""
    from hyperzzw_core.backends import _torch_functions as TF

    if compiled and TF.cpu_kernels is None:
        pytest.skip("the compiled CPU kernels are not built")
    if not compiled:
        monkeypatch.setattr(TF, "cpu_kernels", None)
    x, half = torch.ones(2, 64, N), torch.ones(2, 32, N)
    w, w_half, b = torch.ones(o, 64), torch.ones(o, 32), torch.ones(o)
    linear = _calls(lambda: TB.torch_pointwise_linear(torch, w, b, x))
    at_hand = _calls(lambda: TB.torch_pointwise_linear_sum(torch, [w_half, w_half], b, [half, half]))
    generated = _calls(lambda: TB.torch_pointwise_linear_sum(torch, [w, w], b, iter([x, x])))

    def count(names: list[str], *ops: str) -> int:
        return sum(n in ops for n in names)

    onednn, batched = ("mkldnn._linear_pointwise",), ("aten.baddbmm", "aten.baddbmm_")
    every = linear + at_hand + generated
    if o == 128 and compiled:
        kernel = ("hyperzzw.linear_rows",)
        assert (count(linear, *kernel), count(at_hand, *kernel), count(generated, *onednn)) == (1, 1, 4), every
        assert not count(linear + at_hand, *onednn) and not count(generated, *kernel), every
        assert count(at_hand, "aten.cat") == 1 and not count(at_hand, "aten.copy_"), at_hand
        assert not count(every, *batched), every
    elif o == 128:
        assert (count(linear, *onednn), count(at_hand, *onednn), count(generated, *onednn)) == (2, 2, 4), every
        assert count(at_hand, "aten.cat") == 1 and count(at_hand, "aten.copy_") == 2 * 2, at_hand
        assert not count(every, *batched), every
    else:
        assert (count(linear, *batched), count(at_hand, *batched), count(generated, *batched)) == (1, 2, 2), every
        assert not count(every, *onednn), every


@pytest.mark.parametrize(
    "form, routes",
    [
        ("linear", None),
        ("sum, list", None),  # every term at hand: concatenated, sample by sample
        ("sum, list of small terms", None),  # concatenated, though no term alone would route
        ("sum, generator", None),  # term by term
        ("mixed", [True, False, True]),  # per sample, stacked for a batched term, per sample again
        ("mixed", [False, True, True]),  # the batched sum so far read per sample
        ("mixed", [True, True, False]),  # a batched term last
    ],
)
def test_values_against_float64_products(form: str, routes: list[bool] | None) -> None:
    """Σ_i W_i·x_i + β through each form of the route (the rule's own decision, or the routes
    given) within the float32 policy of a float64 einsum."""
    rng = np.random.default_rng(11)
    ins = {"linear": [64], "sum, list of small terms": [32, 16, 16]}.get(form, [64, 80, 96])
    ws, bias, xs = _case(rng, 3, 128, ins)
    tw, tb, tx = [torch.from_numpy(w) for w in ws], torch.from_numpy(bias), [torch.from_numpy(x) for x in xs]
    if form == "linear":
        got = TB.torch_pointwise_linear(torch, tw[0], tb, tx[0])
    elif form.startswith("sum, list"):
        got = TB.torch_pointwise_linear_sum(torch, tw, tb, tx)
    elif form == "sum, generator":
        got = TB.torch_pointwise_linear_sum(torch, tw, tb, (x for x in tx))
    else:
        got = TB._summed_rows(torch, tw, tb, tx, routes)
    assert got.shape == (3, 128, N) and got.is_contiguous()
    want, low = _sum_np(ws, bias, xs, np.float64), _sum_np(ws, bias, xs, np.float32)
    assert_close(got, want, dtype="float32", ref_low=low, name=f"{form} {routes}")


@pytest.mark.parametrize("wanted", ["all", "x only", "weights only"])
@pytest.mark.parametrize("terms", [1, 3])
def test_gradients_against_float64_products(terms: int, wanted: str) -> None:
    """With a graph to record, the route runs inside ``PointwiseLinear`` (one term) or
    ``PointwiseLinearSum``: the value equals the no-gradient forward to the bit, and the gradient
    of each input that needs one (∂β = Σ g, ∂W_i = Σ_b g_b·x_ibᵀ, ∂x_i = W_iᵀ·g) is within the
    float32 policy of float64 einsum; an input that needs none gets none."""
    rng = np.random.default_rng(12)
    ins = [64, 72, 64][:terms]
    ws, bias, xs = _case(rng, 2, 128, ins)
    g = rng.standard_normal((2, 128, N)).astype(np.float32)
    need_w = wanted != "x only"
    need_x = wanted != "weights only"
    tw = [torch.from_numpy(w).requires_grad_(need_w) for w in ws]
    tb = torch.from_numpy(bias).requires_grad_(need_w)
    tx = [torch.from_numpy(x).requires_grad_(need_x) for x in xs]
    if terms == 1:
        out = TB.torch_pointwise_linear(torch, tw[0], tb, tx[0])
        with torch.no_grad():
            plain = TB.torch_pointwise_linear(torch, tw[0], tb, tx[0])
    else:
        out = TB.torch_pointwise_linear_sum(torch, tw, tb, tx)
        with torch.no_grad():
            plain = TB.torch_pointwise_linear_sum(torch, tw, tb, tx)
    assert type(out.grad_fn).__name__.startswith("PointwiseLinear")
    assert torch.equal(out.detach(), plain)
    out.backward(torch.from_numpy(g))
    # expected, then the float32 computation the policy scales by
    expected, low = _grads_np(ws, xs, g, np.float64), _grads_np(ws, xs, g, np.float32)
    got = {"b": tb.grad, **{f"W{i}": w.grad for i, w in enumerate(tw)}, **{f"x{i}": x.grad for i, x in enumerate(tx)}}
    for name, grad in got.items():
        if not (need_x if name[0] == "x" else need_w):
            assert grad is None, name
            continue
        assert_close(grad, expected[name], dtype="float32", ref_low=low[name], name=f"∂{name}")


def test_a_mixed_sum_differentiates_through_both_libraries() -> None:
    """A sum with a term under the threshold (127 outputs would not route, so the term's input
    size decides: 64·128·1024 routes, 63·128·1024 does not) runs inside ``PointwiseLinearSum``;
    its input gradients are within the float32 policy of float64 einsum."""
    rng = np.random.default_rng(13)
    ws, bias, xs = _case(rng, 2, 128, [64, 63])
    assert TB.onednn_rows(torch, [torch.from_numpy(w) for w in ws], torch.from_numpy(xs[0])) == [True, False]
    g = rng.standard_normal((2, 128, N)).astype(np.float32)
    tx = [torch.from_numpy(x).requires_grad_() for x in xs]
    out = TB.torch_pointwise_linear_sum(torch, [torch.from_numpy(w) for w in ws], torch.from_numpy(bias), tx)
    out.backward(torch.from_numpy(g))
    want, low = _grads_np(ws, xs, g, np.float64), _grads_np(ws, xs, g, np.float32)
    for i, t in enumerate(tx):
        assert_close(t.grad, want[f"x{i}"], dtype="float32", ref_low=low[f"x{i}"], name=f"∂x{i}")


@pytest.mark.parametrize("layout", ["channel slice", "channels last", "every other position"])
def test_strided_inputs(layout: str) -> None:
    """x_b is handed to oneDNN as a strided view: a channel slice of a stacked product, a
    channels-last array and a strided position axis give W·x + β within the float32 policy of a
    float64 einsum."""
    rng = np.random.default_rng(14)
    w, b = (rng.standard_normal((128, 64)) / 8).astype(np.float32), rng.standard_normal(128).astype(np.float32)
    if layout == "channel slice":
        x = torch.from_numpy(rng.standard_normal((2, 100, N)).astype(np.float32))[:, 10:74]
    elif layout == "channels last":
        x = torch.from_numpy(rng.standard_normal((2, N, 64)).astype(np.float32)).transpose(1, 2)
    else:
        x = torch.from_numpy(rng.standard_normal((2, 64, 2 * N)).astype(np.float32))[:, :, ::2]
    assert not x.is_contiguous()
    got = TB.torch_pointwise_linear(torch, torch.from_numpy(w), torch.from_numpy(b), x)
    xs = [x.contiguous().numpy()]
    assert_close(got, _sum_np([w], b, xs, np.float64), dtype="float32", ref_low=_sum_np([w], b, xs, np.float32))


def test_an_expanded_gradient() -> None:
    """The gradient of a sum reaches the route's backward as an expanded array (stride 0 over
    every axis); each gradient is within the float32 policy of float64 einsum."""
    rng = np.random.default_rng(15)
    ws, bias, xs = _case(rng, 2, 128, [64])
    tw, tb, tx = (torch.from_numpy(a).requires_grad_() for a in (ws[0], bias, xs[0]))
    TB.torch_pointwise_linear(torch, tw, tb, tx).sum().backward()
    g = np.ones((2, 128, N), dtype=np.float32)
    want, low = _grads_np(ws, xs, g, np.float64), _grads_np(ws, xs, g, np.float32)
    for name, grad in (("b", tb.grad), ("W0", tw.grad), ("x0", tx.grad)):
        assert_close(grad, want[name], dtype="float32", ref_low=low[name], name=f"∂{name}")


@pytest.mark.parametrize("given", ["list", "generator"])
def test_a_gradient_wanted_by_a_later_term_only(given: str) -> None:
    """Only the second term's input needs a gradient (constant weights, bias and first input):
    the routed sum still records a graph, and that input's gradient is W_1ᵀ·g within the float32
    policy of float64 einsum, whether the terms come as a list or from a generator."""
    rng = np.random.default_rng(16)
    ws, bias, xs = _case(rng, 2, 128, [64, 64])
    g = rng.standard_normal((2, 128, N)).astype(np.float32)
    x1 = torch.from_numpy(xs[1]).requires_grad_()
    terms = [torch.from_numpy(xs[0]), x1]
    tw = [torch.from_numpy(w) for w in ws]
    out = TB.torch_pointwise_linear_sum(torch, tw, torch.from_numpy(bias), terms if given == "list" else iter(terms))
    out.backward(torch.from_numpy(g))
    want, low = _grads_np(ws, xs, g, np.float64), _grads_np(ws, xs, g, np.float32)
    assert_close(x1.grad, want["x1"], dtype="float32", ref_low=low["x1"], name="∂x_1")


@pytest.mark.parametrize("terms", [1, 2])
def test_torch_func_grad_through_the_route(terms: int) -> None:
    """``torch.func.grad`` of ⟨g, Σ_i W_i·x_i + β⟩ through the route (its Functions have the
    ``setup_context`` form the transforms need): every gradient within the float32 policy of
    float64 einsum."""
    rng = np.random.default_rng(17)
    ws, bias, xs = _case(rng, 2, 128, [64, 96][:terms])
    g = rng.standard_normal((2, 128, N)).astype(np.float32)
    tg = torch.from_numpy(g)

    def inner(w: Any, b: Any, x: Any) -> Any:
        if terms == 1:
            return (TB.torch_pointwise_linear(torch, w[0], b, x[0]) * tg).sum()
        return (TB.torch_pointwise_linear_sum(torch, w, b, x) * tg).sum()

    args = ([torch.from_numpy(w) for w in ws], torch.from_numpy(bias), [torch.from_numpy(x) for x in xs])
    gw, gb, gx = torch.func.grad(inner, argnums=(0, 1, 2))(*args)
    want, low = _grads_np(ws, xs, g, np.float64), _grads_np(ws, xs, g, np.float32)
    got = {"b": gb, **{f"W{i}": t for i, t in enumerate(gw)}, **{f"x{i}": t for i, t in enumerate(gx)}}
    for name, grad in got.items():
        assert_close(grad, want[name], dtype="float32", ref_low=low[name], name=f"∂{name}")


def _gelu_np(x: np.ndarray) -> np.ndarray:
    """GELU(x) = x·Φ(x) in x's dtype, by SciPy's erf (independent of torch's kernel)."""
    from scipy.special import erf

    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0).astype(x.dtype)))).astype(x.dtype)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("layout", ["contiguous", "positions first", "channel slice"])
def test_gelu_terms_through_the_buffer(layout: str, batch: int) -> None:
    """``GeluProductSum`` at a routed size (its terms' GELUs written into each sample's buffer, or
    for a single sample into arrays of their own, the other terms read where they lie):
    Σ_i W_i·a_i + β with a_i = GELU(x_i) for two terms, x_i for one and a spatial map added to
    one, the inputs laid out as ``layout``, against float64 (SciPy's erf, NumPy's einsum), within
    the float32 policy."""
    from hyperzzw_core.backends import _torch_functions as TF

    rng = np.random.default_rng(14)
    ins, on, has = [64, 32, 32], [True, False, True], [False, False, True]
    ws, bias, xs = _case(rng, batch, 128, ins)
    m = rng.standard_normal(N).astype(np.float32)
    tx = [torch.from_numpy(x) for x in xs]
    if layout == "positions first":  # (B, I, N) read from (B, N, I) storage
        tx = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in tx]
    elif layout == "channel slice":  # the first I channels of a wider array
        tx = [torch.cat([x, x], dim=1)[:, : x.shape[1]] for x in tx]
    assert TB.onednn_concatenated(torch, [torch.from_numpy(w) for w in ws], tx)
    spec = tuple(zip(on, has, strict=True))
    got = TF.GeluProductSum.forward(
        spec, torch.from_numpy(bias), *(torch.from_numpy(w) for w in ws), *tx, torch.from_numpy(m)
    )

    def acts(dtype: Any) -> list[np.ndarray]:
        out = [_gelu_np(x.astype(dtype)) if g else x.astype(dtype) for x, g in zip(xs, on, strict=True)]
        out[2] = out[2] + m.astype(dtype)
        return out

    want, low = _sum_np(ws, bias, acts(np.float64), np.float64), _sum_np(ws, bias, acts(np.float32), np.float32)
    assert got.shape == (batch, 128, N) and got.is_contiguous()
    assert_close(got, want, dtype="float32", ref_low=low, name=f"GELU terms, {layout}")


def test_a_gelu_term_into_a_strided_out() -> None:
    """``GeluProductSum._term`` writes GELU(x) right into a non-contiguous ``out`` (a column slice),
    where torch 2.13's own ``gelu.out`` writes wrong values; within the float32 policy of SciPy's
    float64 GELU."""
    from hyperzzw_core.backends import _torch_functions as TF

    x = np.random.default_rng(15).standard_normal((64, 256)).astype(np.float32)
    out = torch.zeros(64, 512)[:, :256]
    term = TF.GeluProductSum._term(((True, False),), [None])
    assert term.formed == (True,)
    term.write(0, torch.from_numpy(x), out)
    assert_close(
        out, _gelu_np(x.astype(np.float64)), dtype="float32", ref_low=_gelu_np(x), name="GELU into a column slice"
    )


@pytest.mark.parametrize("given", ["list", "generator"])
def test_a_sum_mixing_dtypes_is_refused(given: str) -> None:
    """A routed-size sum whose second term is float64 (every term alone routes) raises torch's
    dtype error: the float64 term is never cast silently into the float32 buffer of the
    concatenated product, nor read as float32 by a per-term product."""
    w, b, x = torch.ones(128, 64), torch.ones(128), torch.ones(2, 64, N)
    xs = [x, x.double()]
    with pytest.raises(RuntimeError, match=r"(?i)type"):
        TB.torch_pointwise_linear_sum(torch, [w, w], b, xs if given == "list" else iter(xs))


def test_the_bias_formed_once_gives_the_broadcast_views_bits() -> None:
    """``concatenated_rows`` hands oneDNN's "add" a contiguous (O, N) β formed once per call; the
    product with the broadcast view of β (what it was given before) has the same bits (the values
    against float64: ``test_values_against_float64_products``)."""
    rng = np.random.default_rng(11)
    w = torch.from_numpy(rng.standard_normal((128, 64)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(128).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((3, 64, N)).astype(np.float32))
    got = TB.concatenated_rows(torch, (w,), b, (x,))
    view = torch.reshape(b, (128, 1)).expand(128, N)
    product = torch.ops.mkldnn._linear_pointwise.binary
    assert torch.equal(got, torch.stack([product(w, view, x[s].t(), None, "add") for s in range(3)]))
