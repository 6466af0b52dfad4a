"""Parameter trees: nested dicts and lists of arrays, and their flat dotted-key form.

``{"blocks": [{"mixer": {"weight": w}}]}`` flattens to ``{"blocks.0.mixer.weight": w}``: the same
keys as a PyTorch ``state_dict`` of the matching module tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts/lists into ``{dotted.key: leaf}`` in a deterministic order."""
    items: Iterable[tuple[Any, Any]]
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in items:
        key = str(k)
        if "." in key:
            raise ValueError(f"parameter key {key!r} contains '.', which flat keys reserve")
        out.update(flatten(v, f"{prefix}.{key}" if prefix else key))
    return out


def unflatten(flat: dict[str, Any]) -> Any:
    """Inverse of :func:`flatten`: all-digit levels become lists."""
    root: dict = {}
    for key, leaf in flat.items():
        node = root
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = leaf
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    conv = {k: _lists(v) for k, v in node.items()}
    if conv and all(k.isdigit() for k in conv):
        idx = sorted(conv, key=int)
        if [int(k) for k in idx] == list(range(len(idx))):
            return [conv[k] for k in idx]
    return conv


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` leaf-wise over trees of identical structure."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, v, *(r[k] for r in rest)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [tree_map(fn, v, *(r[i] for r in rest)) for i, v in enumerate(tree)]
    return fn(tree, *rest)
