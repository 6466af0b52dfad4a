"""The JAX backend: ``jax.numpy`` (array-API compliant), with JAX's own erf, sigmoid and stop-gradient.

Under ``jit``, ``grad`` and ``vjp`` the inputs are tracers, which carry no committed device: a
tracer's device is unknown (None) and matches any device, so arrays that are differentiated and
arrays that are not may be mixed.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from ._base import ArrayAPIBackend


class JaxBackend(ArrayAPIBackend):
    """JAX through ``jax.numpy``."""

    name: ClassVar[str] = "jax"
    namespace_names: ClassVar[tuple[str, ...]] = ("jax.numpy", "jax.experimental.array_api")
    module_names: ClassVar[tuple[str, ...]] = ("jax", "jax.numpy", "jax.experimental.array_api")

    def standard_namespace(self, module: Any) -> Any:
        import jax.numpy as jnp  # jax is imported already: the caller passed one of its modules

        return jnp

    def is_lazy(self, x: Any) -> bool:
        """True for a tracer, and for any array inside a ``jit`` trace (where even a concrete array's
        reductions are staged, so no value can be read back). array-api-compat calls every JAX array
        lazy, which would skip the NaN checks of eager arrays; this asks JAX: inside ``jit`` a new
        array is itself a tracer."""
        jax = sys.modules["jax"]
        return isinstance(x, jax.core.Tracer) or isinstance(jax.numpy.zeros(()), jax.core.Tracer)

    def same_device(self, a: Any, b: Any) -> bool:
        """A tracer's device (None: not committed yet) matches any device."""
        return a is None or b is None or a == b

    def stop_gradient(self, xp: Any, x: Any) -> Any:
        return sys.modules["jax"].lax.stop_gradient(x)

    def sigmoid(self, xp: Any, x: Any) -> Any:
        return sys.modules["jax"].nn.sigmoid(x)

    def erf(self, xp: Any, x: Any) -> Any:
        import jax.scipy.special

        return jax.scipy.special.erf(x)
