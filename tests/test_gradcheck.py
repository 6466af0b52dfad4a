"""The finite-difference gradient checker itself (reference/_gradcheck.py) can pass and can fail.

A checker that always passes would make every gradient test vacuous, so: a correct VJP passes; a
VJP with one element sign-flipped, or scaled, fails, and the message names the right leaf and
index; ``numerical_gradient`` matches closed forms (x², sin) and is the 4th-order stencil
(checked exactly on x⁵, where its error is −4h⁴).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hyperzzw_core import reference as R
from hyperzzw_core.reference._gradcheck import compare

SEEDS = st.integers(0, 2**32 - 1)


# ------------------------------------------------------------------------ a small test function


def _fn(params, x):
    """y = tanh(W x + b) ⊙ x² with a tree of parameters {"lin": {"w", "b"}, "extra": [s]}."""
    pre = params["lin"]["w"] @ x + params["lin"]["b"][:, None]
    return np.tanh(pre) * x * x * params["extra"][0]


def _vjp(params, x, g):
    w, b, s = params["lin"]["w"], params["lin"]["b"], params["extra"][0]
    pre = w @ x + b[:, None]
    t = np.tanh(pre)
    gpre = g * x * x * s * (1.0 - t * t)
    grads = {"lin": {"w": gpre @ x.T, "b": gpre.sum(axis=1)}, "extra": [np.sum(g * t * x * x)]}
    gx = w.T @ gpre + g * t * 2.0 * x * s
    return grads, gx


def _case(seed):
    rng = np.random.default_rng(seed)
    params = {
        "lin": {"w": rng.standard_normal((3, 3)) / 2, "b": rng.standard_normal(3)},
        "extra": [np.asarray(1.0 + rng.random())],
    }
    return params, rng.standard_normal((3, 4))


def _cot(seed):
    """A cotangent for _fn's (3, 4) output, from its own stream (not the one that built the inputs)."""
    return np.random.default_rng([seed, 1]).standard_normal((3, 4))


def _wrong(vjp, mutate):
    def bad(params, x, g):
        grads, gx = vjp(params, x, g)
        grads = R.tree_map(np.copy, grads)
        gx = gx.copy()
        mutate(grads, gx)
        return grads, gx

    return bad


# ------------------------------------------------------------------------ check_vjp passes / fails


@given(seed=SEEDS)
def test_correct_vjp_passes(seed):
    params, x = _case(seed)
    for wrt in (0, 1):
        res = R.check_vjp(_fn, (params, x), _vjp, wrt=wrt, rtol=1e-7, cotangent=_cot(seed))
        assert res.passed, str(res)
        assert res.max_rel_error < 1e-7
        assert "passed" in str(res)
    assert R.check_vjp(_fn, (params, x), _vjp, wrt=0).checked == 9 + 3 + 1


@given(seed=SEEDS, row=st.integers(0, 2), col=st.integers(0, 3))
def test_sign_flip_of_one_input_element_fails_and_is_named(seed, row, col):
    params, x = _case(seed)
    ok_grad = _vjp(params, x, _cot(seed))[1]
    assume(abs(ok_grad[row, col]) > 1e-3 * np.abs(ok_grad).max())  # flipping a ~0 element changes nothing

    def flip(grads, gx):
        gx[row, col] = -gx[row, col]

    res = R.check_vjp(_fn, (params, x), _wrong(_vjp, flip), wrt=1, cotangent=_cot(seed))
    assert not res.passed
    assert res.worst_key == "" and res.worst_index == (row, col)
    assert f"[{row}, {col}]" in str(res) and "FAILED" in str(res)
    assert np.isclose(res.analytic, -res.numeric, rtol=1e-6)


@pytest.mark.parametrize(("key", "index"), [("lin.w", (1, 2)), ("lin.b", (0,)), ("extra.0", ())])
def test_sign_flip_in_a_parameter_tree_names_the_leaf_and_index(key, index):
    params, x = _case(3)

    def flip(grads, gx):
        leaf = {"lin.w": grads["lin"]["w"], "lin.b": grads["lin"]["b"]}.get(key)
        if leaf is None:
            grads["extra"][0] = -grads["extra"][0]
        else:
            leaf[index] = -leaf[index]

    res = R.check_vjp(_fn, (params, x), _wrong(_vjp, flip), wrt=0, cotangent=_cot(3))
    assert not res.passed
    assert res.worst_key == key and res.worst_index == index
    assert f"{key}{list(index)}" in str(res)
    assert res.per_key[key] > 1e-3 and all(v < 1e-6 for k, v in res.per_key.items() if k != key)


@pytest.mark.parametrize("factor", [1.01, 1.0 + 1e-5, 0.5, 0.0])
def test_scaled_gradient_fails(factor):
    params, x = _case(5)

    def scale(grads, gx):
        gx *= factor

    res = R.check_vjp(_fn, (params, x), _wrong(_vjp, scale), wrt=1, rtol=1e-6, cotangent=_cot(5))
    assert not res.passed
    assert res.max_rel_error == pytest.approx(abs(1.0 - factor), rel=1e-2)


def test_rtol_is_the_threshold():
    """A gradient wrong by a relative 1e-5 fails at rtol 1e-6 and passes at rtol 1e-4."""
    params, x = _case(6)

    def scale(grads, gx):
        gx *= 1.0 + 1e-5

    bad = _wrong(_vjp, scale)
    assert not R.check_vjp(_fn, (params, x), bad, wrt=1, rtol=1e-6).passed
    assert R.check_vjp(_fn, (params, x), bad, wrt=1, rtol=1e-4).passed


def test_wrong_shape_is_an_error_not_a_pass():
    params, x = _case(7)
    with pytest.raises(ValueError, match="shape"):
        R.check_vjp(_fn, (params, x), lambda p, x_, g: (_vjp(p, x_, g)[0], _vjp(p, x_, g)[1][:, :2]), wrt=1)


def test_tuple_outputs_and_a_none_cotangent():
    """fn with two outputs: the checked scalar is ⟨u1, y1⟩ (+ ⟨u2, y2⟩ unless u2 is None)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal(5)

    def fn(x_):
        return np.sin(x_), np.sum(x_**3)

    def vjp(x_, g):
        return g[0] * np.cos(x_) + (0.0 if g[1] is None else 3.0 * g[1] * x_**2)

    def vjp_ignoring_second(x_, g):
        return g[0] * np.cos(x_)

    u = (rng.standard_normal(5), np.asarray(0.7))
    assert R.check_vjp(fn, (x,), vjp, cotangent=u).passed
    assert not R.check_vjp(fn, (x,), vjp_ignoring_second, cotangent=u).passed
    assert R.check_vjp(fn, (x,), vjp_ignoring_second, cotangent=(u[0], None)).passed


def test_max_elements_samples_each_leaf():
    params, x = _case(9)
    res = R.check_vjp(_fn, (params, x), _vjp, wrt=0, max_elements=2)
    assert res.passed and res.checked == 2 + 2 + 1


# ------------------------------------------------------------------------ compare


def test_compare_names_the_wrong_key():
    rng = np.random.default_rng(10)
    leaves = {"a": rng.standard_normal((2, 3)), "b.c": rng.standard_normal(4)}

    def f_of_leaf(key, value):  # f = Σ a² + Σ sin(b) with the other leaf fixed
        a = value if key == "a" else leaves["a"]
        b = value if key == "b.c" else leaves["b.c"]
        return float(np.sum(a * a) + np.sum(np.sin(b)))

    good = {"a": 2 * leaves["a"], "b.c": np.cos(leaves["b.c"])}
    assert compare(good, f_of_leaf, leaves).passed
    bad = {"a": good["a"], "b.c": good["b.c"].copy()}
    bad["b.c"][3] *= 1.001
    res = compare(bad, f_of_leaf, leaves)
    assert not res.passed and res.worst_key == "b.c" and res.worst_index == (3,)
    # the reported error is relative to max(|n|, the largest numeric gradient of all leaves)
    n3 = abs(np.cos(leaves["b.c"][3]))
    scale = max(np.abs(good["a"]).max(), np.abs(good["b.c"]).max())
    assert res.max_rel_error == pytest.approx(1e-3 * n3 / max(n3, scale), rel=1e-3)
    assert "b.c[3]" in str(res)


# ------------------------------------------------------------------------ numerical_gradient


@given(seed=SEEDS, scale=st.sampled_from([0.1, 1.0, 30.0, 1e4]))
def test_numerical_gradient_of_square_and_sin(seed, scale):
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_normal((3, 2))
    x0 = x.copy()
    sq = R.numerical_gradient(lambda v: float(np.sum(v * v)), x)
    # exact on quadratics up to round-off: ~ε·f/h, h = min(1e-5·max(|x|, 1), 1e-4)
    h = np.minimum(1e-5 * np.maximum(np.abs(x), 1.0), 1e-4)
    np.testing.assert_allclose(sq, 2 * x, rtol=0, atol=10 * np.finfo(float).eps * float(np.sum(x * x)) / h.min())
    sn = R.numerical_gradient(lambda v: float(np.sum(np.sin(v))), x)
    np.testing.assert_allclose(sn, np.cos(x), rtol=0, atol=1e-8 * max(1.0, scale))
    np.testing.assert_array_equal(x, x0)  # x is not modified


def test_numerical_gradient_on_given_indices():
    x = np.arange(12.0).reshape(3, 4) / 10
    out = R.numerical_gradient(lambda v: float(np.sum(v**3)), x, indices=[(0, 1), (2, 3)])
    np.testing.assert_allclose(out, [3 * x[0, 1] ** 2, 3 * x[2, 3] ** 2], rtol=1e-9, atol=1e-9)
    assert out.shape == (2,)


@pytest.mark.parametrize(
    ("x0", "rel_step", "max_step", "h"),
    [(1.0, 0.1, 0.1, 0.1), (10.0, 0.01, 1.0, 0.1), (10.0, 0.01, 0.05, 0.05), (0.2, 0.1, 1.0, 0.1)],
)
def test_numerical_gradient_is_the_fourth_order_stencil(x0, rel_step, max_step, h):
    """(−f(x+2h) + 8f(x+h) − 8f(x−h) + f(x−2h))/(12h) on f = x⁵ is 5x⁴ − 4h⁴ exactly, with
    h = min(rel_step·max(|x|, 1), max_step): a 2nd-order central difference would give 5x⁴ + 10x²h²."""
    got = R.numerical_gradient(lambda v: float(v[0] ** 5), np.array([x0]), rel_step=rel_step, max_step=max_step)[0]
    assert got == pytest.approx(5 * x0**4 - 4 * h**4, rel=1e-12, abs=1e-12)
