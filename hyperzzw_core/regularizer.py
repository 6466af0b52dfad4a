"""The author's L2 regulariser with its parameter partition made explicit (spec §2.13, §5 Q10).

The author's ``LnLoss`` selects parameters by name: R = Σ_{"fast" ∈ name ∧ "Kernel" ∉ name} ‖p‖₂
+ 10⁻⁶ · Σ_{Conv2d m, "Kernel" ∈ name(m)} ‖m.weight‖₂, with the plain (not squared) Frobenius norm,
added as λ·R to the loss (λ = ``optimizer.l2_reg``, 5e-5 for CIFAR10). Mapped onto our flat keys
(``blocks.<i>.…``) the two sets are:

``fast`` (weight 1), every parameter of:
  * ``blocks.<i>.mixer``            — the channel mixer (weight and bias);
  * ``blocks.<i>.local.<j>.mixer``  — the LocalConv mixers (weight and bias);
  * ``blocks.<i>.local.<j>.bias``   — the scalar branch biases b1…b4;
  * ``blocks.<i>.bottleneck``       — the bottleneck (weight and bias).

``slow`` (weight 10⁻⁶), the *weights* (not biases) of the 1×1 convolutions inside the slow nets
("Kernel" subtrees) and of the RGUs (``Fast_Kernel_rgu*``):
  * ``blocks.<i>.slow_g.{filters.<l>, linears.<l>, output}.weight``          — MAGNet_G (K_g);
  * ``blocks.<i>.hi.spatial.{filters.<l>, linears.<l>, output}.weight``      — MAGNet_G (K_ss);
  * ``blocks.<i>.local.<j>.slow_l.{filters.<l>, linears.<l>, output, reduce, fc1,
    linears_x.<l>}.weight``                                                   — MAGNet_L with its
    context path;
  * ``blocks.<i>.rgu_{fast,slow}.w_{k,v,q,y}.weight``                         — the RGUs.

Not regularised: every ``bias_p``; the biases of the slow nets and RGUs; the channel kernels
``hci.channel`` and ``hi.channel`` (MAGNet_GC is built from Conv1d layers, which the author's rule
skips); the per-block scalar ``blocks.<i>.bias``; the classification ``head``. For 1-D networks
(no author code) the same sets are used by role.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from . import _backend as B
from .reference import flatten

#: weight of the slow set (the author's hard-coded 1e-6)
SLOW_WEIGHT = 1e-6

_FAST = re.compile(
    r"^blocks\.\d+\.(mixer\.(weight|bias)|local\.\d+\.(mixer\.(weight|bias)|bias)|"
    r"bottleneck\.(weight|bias))$"
)
_MFN = r"(filters\.\d+|linears\.\d+|output)"
_SLOW = re.compile(
    r"^blocks\.\d+\.("
    rf"slow_g\.{_MFN}|hi\.spatial\.{_MFN}|"
    rf"local\.\d+\.slow_l\.({_MFN[1:-1]}|reduce|fc1|linears_x\.\d+)|"
    r"rgu_(fast|slow)\.w_[kvqy])\.weight$"
)


class L2Partition(NamedTuple):
    """The regularised key sets: ``fast`` (weight 1) and ``slow`` (weight ``SLOW_WEIGHT``)."""

    fast: frozenset[str]
    slow: frozenset[str]


def _flat(params: Any) -> dict[str, Any]:
    """Flat {dotted key: leaf} of a tree or state_dict; an iterable of keys maps to None leaves."""
    if isinstance(params, Mapping):
        if params and all(isinstance(k, str) and "." in k for k in params):
            return dict(params)  # already flat (a state_dict)
        return flatten(dict(params))
    return dict.fromkeys(str(k) for k in params)


def l2_partition(params: Any) -> L2Partition:
    """Split the flat keys of a parameter tree, a state_dict or an iterable of keys (§5 Q10).

    Returns :class:`L2Partition`; see the module docstring for the rule.
    """
    keys = list(_flat(params))
    fast = frozenset(k for k in keys if _FAST.match(k))
    slow = frozenset(k for k in keys if _SLOW.match(k))
    return L2Partition(fast, slow)


def l2_regularizer(params: Any, weight: float = 5e-5, *, slow_weight: float = SLOW_WEIGHT) -> Any:
    """λ·R = weight·(Σ_{fast} ‖p‖ + slow_weight·Σ_{slow} ‖p‖), plain Frobenius norms (§2.13).

    ``params``: a parameter tree or a flat mapping (state_dict) of arrays of one library; returns a
    0-D array of that library (differentiable where the library is: torch autograd gives the
    norm's subgradient 0 at p = 0). ``weight`` is the author's ``l2_reg`` (5e-5 for CIFAR10).
    """
    flat = _flat(params)
    part = l2_partition(list(flat))
    xp = B.namespace((k, flat[k]) for k in sorted(part.fast | part.slow))

    def total(keys: Iterable[str]) -> Any:
        arrays = [flat[k] for k in sorted(keys)]
        return B.sum_of_norms(xp, arrays) if arrays else None

    fast, slow = total(part.fast), total(part.slow)
    if fast is None or slow is None:
        raise ValueError("params: no Terminator parameters found (expected keys like 'blocks.0.mixer.weight')")
    return weight * (fast + slow_weight * slow)
