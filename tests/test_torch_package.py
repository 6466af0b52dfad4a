"""``hyperzzw_core.adapters.torch`` as a package split by concern keeps the module's public interface.

The adapter was one module (``adapters/torch.py``) until it was split into one file per concern.
``DOCUMENTED`` below is that module's ``__all__`` as it stood before the split, written out here (not
read from the package), plus the three conformance-kit hooks; the package must export exactly these,
each importable with ``from hyperzzw_core.adapters.torch import X``, and nothing else public beyond
its concern submodules. Each class or function is defined once, in the submodule of its concern.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import hyperzzw_core.adapters.torch as T

# ``__all__`` of adapters/torch.py before the split (main, 2026-11), sorted.
BEFORE_SPLIT = frozenset(
    {
        "AdaptiveAvgPool",
        "BatchStandardize",
        "Bottleneck",
        "ChannelMixer",
        "DepthwiseConv",
        "GELU",
        "GIBS",
        "HyperChannelInteraction",
        "HyperInteraction",
        "HyperZZW2E",
        "HyperZZWGlobal",
        "InstanceStandardize",
        "Kar2",
        "Kar3",
        "LabelSmoothingCrossEntropy",
        "LocalBranch",
        "LocalConv",
        "MAGNetG",
        "MAGNetGC",
        "MAGNetL",
        "ParamModule",
        "PointwiseLinear",
        "RGU",
        "SFNEBlock",
        "SiGLU",
        "SlowKernelCache",
        "SlowLoss",
        "Terminator",
        "TileChannels",
        "adaptive_avg_pool",
        "batch_standardize",
        "bottleneck",
        "channel_mixer",
        "depthwise_conv",
        "from_numpy",
        "g_ibs",
        "gelu",
        "global_batch_namespace",
        "hyper_channel_interaction",
        "hyper_interaction",
        "hyperzzw_2e",
        "hyperzzw_global",
        "instance_standardize",
        "l2_partition",
        "l2_regularizer",
        "label_smoothing_cross_entropy",
        "local_conv",
        "magnet_g",
        "magnet_gc",
        "magnet_l",
        "pointwise_linear",
        "rgu",
        "sfne_block",
        "si_glu",
        "slow_loss",
        "terminator_forward",
        "terminator_loss",
        "tile_channels",
        "to_numpy",
    }
)
# module attributes the conformance kit reads, and the signatures' alias, public but not in __all__
PROTOCOL = frozenset({"hyperzzw_autograd", "Tree"})
CONCERNS = {
    "layers": {"PointwiseLinear", "ChannelMixer", "Bottleneck", "LocalConv"},
    "slow_nets": {"MAGNetG", "MAGNetGC", "MAGNetL"},
    "interactions": {"RGU", "HyperChannelInteraction", "HyperInteraction", "LocalBranch"},
    "block": {"SFNEBlock", "SlowKernelCache"},
    "network": {"Terminator", "global_batch_namespace"},
    "ops": {
        "AdaptiveAvgPool",
        "BatchStandardize",
        "DepthwiseConv",
        "GELU",
        "GIBS",
        "HyperZZW2E",
        "HyperZZWGlobal",
        "InstanceStandardize",
        "LabelSmoothingCrossEntropy",
        "SiGLU",
        "SlowLoss",
        "TileChannels",
    },
    "regularizer": {"l2_partition", "l2_regularizer"},
    "optim": {"Kar2", "Kar3"},
    "conformance": {"from_numpy", "to_numpy"},
    "_base": {"ParamModule"},
}
MAX_LINES = 600


def test_all_is_the_modules_all_before_the_split() -> None:
    assert len(T.__all__) == len(set(T.__all__)), "duplicates in __all__"
    assert set(T.__all__) == BEFORE_SPLIT, (
        f"missing: {sorted(BEFORE_SPLIT - set(T.__all__))}, new: {sorted(set(T.__all__) - BEFORE_SPLIT)}"
    )


@pytest.mark.parametrize("name", sorted(BEFORE_SPLIT | PROTOCOL))
def test_every_name_imports_from_the_package(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from hyperzzw_core.adapters.torch import {name}", namespace)  # the user's spelling
    assert namespace[name] is getattr(T, name)


def test_nothing_else_is_public() -> None:
    submodules = {m.name for m in pkgutil.iter_modules(T.__path__)}
    # (pytest's assertion rewriting of the plugin's distribution adds names such as "@py_builtins")
    public = {n for n in dir(T) if n.isidentifier() and not n.startswith("_")}
    assert public - submodules == BEFORE_SPLIT | PROTOCOL, sorted(public - submodules - BEFORE_SPLIT - PROTOCOL)


def test_the_kit_protocol_hooks() -> None:
    """``hyperzzw verify --impl hyperzzw_core.adapters.torch`` reads these from the package."""
    import numpy as np
    import torch

    import hyperzzw_core
    from hyperzzw_core.testing import REGISTRY

    assert T.hyperzzw_autograd == "torch"
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = T.from_numpy(a)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    assert np.array_equal(T.to_numpy(t * 2), a * 2)
    assert set(REGISTRY) <= BEFORE_SPLIT, sorted(set(REGISTRY) - BEFORE_SPLIT)  # every registered operator
    for name in REGISTRY:
        assert getattr(T, name) is getattr(hyperzzw_core, name), f"{name} is not the core's function"


@pytest.mark.parametrize("module", sorted(CONCERNS))
def test_each_name_is_defined_in_its_concern_module(module: str) -> None:
    mod = importlib.import_module(f"hyperzzw_core.adapters.torch.{module}")
    for name in CONCERNS[module]:
        obj = getattr(T, name)
        assert obj.__module__ == mod.__name__, f"{name} is defined in {obj.__module__}, expected {mod.__name__}"


def test_no_module_of_the_package_is_over_the_size_limit() -> None:
    folder = Path(inspect.getfile(T)).parent
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in folder.glob("*.py")}
    assert len(sizes) >= len(CONCERNS) + 1, sizes
    assert max(sizes.values()) <= MAX_LINES, sizes
