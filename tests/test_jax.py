"""JAX: the core under eager, ``jit``, ``grad`` and ``vjp``, against the reference's hand-derived VJPs.

The comparisons are with independent computations: the reference's forward (NumPy) and its
hand-written backward (``terminator_loss_and_grad``, the operators' ``*_vjp``); the gradients on the
JAX side come from JAX's autodiff through the core. The whole-network tests are marked ``jax`` (minutes
of XLA compilation; run them with ``-m jax``); the single-operator ones run by default. ``like=`` is
checked to mean the same namespace whether it is given as a module or as an array, for every library
installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from backends import import_or_skip

jax = import_or_skip("jax", "jax")  # HYPERZZW_REQUIRE_BACKENDS=jax: a missing JAX fails, not skips
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import hyperzzw_core as hz  # noqa: E402
from hyperzzw_core import reference as R  # noqa: E402
from hyperzzw_core.params import namespace_for  # noqa: E402
from hyperzzw_core.testing import assert_close  # noqa: E402

CONFIGS = {"2d": R.tiny, "1d": R.tiny_1d}


def _point(config: R.TerminatorConfig, batch: int = 2, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = R.init_params(config, seed=seed)
    x = rng.standard_normal((batch,) + config.input_shape)
    labels = rng.integers(0, config.num_classes, size=batch)
    return params, x, labels


def _to_jax(tree: dict) -> dict:
    return R.tree_map(jnp.asarray, tree)


@pytest.mark.jax
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_forward_eager_and_jit_match_the_reference(kind: str) -> None:
    config = CONFIGS[kind]()
    params, x, _ = _point(config)
    want, want_k = R.terminator_forward(params, x, config)
    jp, jx = _to_jax(params), jnp.asarray(x)
    eager, _ = hz.terminator_forward(jp, jx, config)
    jitted, kernels = jax.jit(lambda p, a: hz.terminator_forward(p, a, config))(jp, jx)
    for name, got in (("eager", eager), ("jit", jitted)):
        assert isinstance(got, jax.Array) and got.dtype == jnp.float64, (name, type(got), got.dtype)
        assert_close(np.asarray(got), want, dtype="float64", name=f"terminator_forward {kind} {name}")
    for i, (k, w) in enumerate(zip(kernels, want_k, strict=True)):
        assert_close(np.asarray(k), w, dtype="float64", name=f"K_g of block {i} ({kind}, jit)")


@pytest.mark.jax
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_grad_with_respect_to_the_parameters_matches_the_hand_derived_backward(kind: str) -> None:
    """jax.grad of the core's training loss (slow loss included) = reference terminator_loss_and_grad."""
    config = CONFIGS[kind]()
    params, x, labels = _point(config)
    want_loss, want_grads = R.terminator_loss_and_grad(params, x, labels, config)
    jx, jl = jnp.asarray(x), jnp.asarray(labels)

    def loss(p: dict) -> jax.Array:
        return hz.terminator_loss(p, jx, jl, config)

    value, grads = jax.jit(jax.value_and_grad(loss))(_to_jax(params))
    assert_close(np.asarray(value), np.asarray(want_loss), dtype="float64", name=f"loss {kind}")
    got, want = R.flatten(R.tree_map(np.asarray, grads)), R.flatten(want_grads)
    assert sorted(got) == sorted(want)  # JAX rebuilds dicts with sorted keys
    scale = max(float(np.abs(v).max()) for v in want.values())  # as the differential gradient tests
    for key in want:
        assert_close(got[key], want[key], dtype="float64", scale=scale, name=f"grad {kind} params[{key}]")


def test_vjp_with_respect_to_a_subset_of_the_inputs_matches_the_reference_vjp() -> None:
    """The global product, differentiated in (z, k_g) with y held fixed, against hyperzzw_global_vjp."""
    rng = np.random.default_rng(1)
    z, y = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((2, 3, 6, 6))
    k_g, g = rng.standard_normal((1, 3, 6, 6)), rng.standard_normal((2, 3, 6, 6))
    jy = jnp.asarray(y)
    out, pullback = jax.vjp(lambda a, k: hz.hyperzzw_global(a, k, jy), jnp.asarray(z), jnp.asarray(k_g))
    gz, gk = pullback(jnp.asarray(g))
    want_gz, want_gk, _ = R.hyperzzw_global_vjp(z, k_g, y, g)
    assert_close(np.asarray(out), R.hyperzzw_global(z, k_g, y), dtype="float64", name="forward")
    assert_close(np.asarray(gz), want_gz, dtype="float64", name="grad z")
    assert_close(np.asarray(gk), want_gk, dtype="float64", name="grad k_g")


def test_input_checks_still_run_on_eager_arrays_and_are_skipped_under_tracing() -> None:
    """An eager JAX array is concrete: NaN is refused as on every library. Under jit the values are
    not known, so the check cannot run (the documented behaviour for lazy arrays)."""
    x = jnp.asarray(np.array([[[1.0, np.nan]]]))
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        hz.gelu(x)
    assert bool(jnp.isnan(jax.jit(hz.gelu)(x)).any())


@pytest.mark.parametrize("like", ["module", "jax.numpy", "array"])
def test_init_params_like_jax_gives_the_reference_values_as_jax_arrays(like: str) -> None:
    config = R.tiny()
    arg = {"module": jax, "jax.numpy": jnp, "array": jnp.zeros(1)}[like]
    params = hz.init_params(config, seed=3, like=arg, dtype="float32")
    want = R.flatten(R.init_params(config, seed=3, dtype=np.float32))
    got = R.flatten(params)
    assert sorted(got) == sorted(want)
    for key, leaf in got.items():
        assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32, (key, type(leaf), leaf.dtype)
        np.testing.assert_array_equal(np.asarray(leaf), want[key], err_msg=key)


def _libraries() -> list:
    libs = [
        ("numpy", lambda m: m.zeros(1)),
        ("jax", lambda m: m.numpy.zeros(1)),
        ("torch", lambda m: m.zeros(1)),
        ("array_api_strict", lambda m: m.zeros(1)),
    ]
    return [pytest.param(name, make, id=name) for name, make in libs]


@pytest.mark.parametrize("name, make", _libraries())
def test_like_means_the_same_namespace_as_a_module_or_as_an_array(name: str, make) -> None:
    module = pytest.importorskip(name)
    from_module = namespace_for(module)
    from_array = namespace_for(make(module))
    assert from_module is from_array, f"like={name}: {from_module} from the module, {from_array} from an array"
    assert namespace_for(from_module) is from_module  # a namespace maps to itself
