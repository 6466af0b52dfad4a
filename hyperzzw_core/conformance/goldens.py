"""Golden vectors: committed input/output/gradient cases per operator, generated from the reference.

Layout (``hyperzzw_core/conformance/goldens/``)::

    manifest.json             format version, reference version, one entry per case, and ``digest``:
                              SHA-256 of the canonical JSON of everything else (checked before use)
    <op>__<case>.npz          arrays of one case (``np.savez_compressed``; loaded with allow_pickle=False)

Keys inside a case file::

    arg<i>                    float64 input, positional argument i (integer labels keep their dtype)
    out                       float64 reference output
    cot                       the seeded cotangent used for the gradients (shaped like out)
    grad<i>                   reference VJP for argument i (shaped like arg<i>)
    out32, grad32_<i>         the reference evaluated in float32 (the float32 tolerance baseline)

A tree-valued entry (a parameter dict, a tuple of outputs) is stored as one flat vector; the
manifest's ``layouts`` give its dotted keys and shapes (``pack``/``unpack``). Non-array arguments
(sizes, factors, configs, flags) and keyword arguments live in the manifest.
Regenerate only on purpose: ``python -m hyperzzw_core.conformance.generate``.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..reference import TerminatorConfig, flatten, tree_map, unflatten

GOLDEN_DIR = Path(__file__).with_name("goldens")
FORMAT_VERSION = 2


# ------------------------------------------------------------------------------- encoding


def pack(prefix: str, value: Any, layout: dict | None = None) -> tuple[dict[str, np.ndarray], dict | None]:
    """Store an array as is, or a tree (or tuple) as one flat vector plus its layout.

    With ``layout`` (e.g. the parameters' layout, for their gradient) the leaves are written in
    that key order, and the key sets must agree.
    """
    if isinstance(value, (dict, list, tuple)):
        flat = flatten(list(value) if isinstance(value, tuple) else value)
        if layout is None:
            layout = {
                "keys": list(flat),
                "shapes": [list(np.shape(v)) for v in flat.values()],
                "tuple": isinstance(value, tuple),
            }
        elif set(layout["keys"]) != set(flat):
            raise ValueError(f"{prefix}: its keys differ from the layout's")
        vec = np.concatenate([np.ravel(np.asarray(flat[k])) for k in layout["keys"]]) if flat else np.zeros(0)
        return {prefix: vec}, layout
    return {prefix: np.asarray(value)}, None


def unpack(vec: np.ndarray, layout: dict | None) -> Any:
    """Inverse of :func:`pack`."""
    if layout is None:
        return vec
    leaves, offset = {}, 0
    for key, shape in zip(layout["keys"], layout["shapes"], strict=True):
        n = int(np.prod(shape))
        leaves[key] = vec[offset : offset + n].reshape(shape)
        offset += n
    tree = unflatten(leaves)
    return tuple(tree) if layout.get("tuple") else tree


def _json_value(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def _from_json(v: Any) -> Any:
    return tuple(_from_json(x) for x in v) if isinstance(v, list) else v


def describe_arg(value: Any) -> dict:
    """How a positional argument is stored: array, tree, none, config or json."""
    if value is None:
        return {"kind": "none"}
    if isinstance(value, TerminatorConfig):
        return {"kind": "config", "value": value.to_dict()}
    if isinstance(value, np.ndarray):
        return {"kind": "array"}
    if isinstance(value, (dict, list)) and all(isinstance(v, np.ndarray) for v in flatten(value).values()):
        return {"kind": "tree"}
    return {"kind": "json", "value": _json_value(value)}


def encode_args(args: tuple, prefix: str = "arg") -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The packed array arguments of ``args`` and the layouts of the tree-valued ones."""
    arrays: dict[str, np.ndarray] = {}
    layouts: dict[str, dict] = {}
    for i, a in enumerate(args):
        if describe_arg(a)["kind"] in ("array", "tree"):
            arr, layout = pack(f"{prefix}{i}", a)
            arrays.update(arr)
            if layout is not None:
                layouts[f"{prefix}{i}"] = layout
    return arrays, layouts


def decode_args(
    arrays: dict[str, np.ndarray], descs: list[dict], layouts: dict[str, dict], prefix: str = "arg"
) -> tuple:
    """Rebuild the positional arguments from stored arrays, their descriptions and layouts."""
    args: list[Any] = []
    for i, d in enumerate(descs):
        kind = d["kind"]
        if kind == "none":
            args.append(None)
        elif kind == "config":
            args.append(TerminatorConfig.from_dict(d["value"]))
        elif kind == "json":
            args.append(_from_json(d["value"]))
        else:
            args.append(unpack(arrays[f"{prefix}{i}"], layouts.get(f"{prefix}{i}")))
    return tuple(args)


def decode_kwargs(kwargs: dict) -> dict:
    return {k: _from_json(v) for k, v in kwargs.items()}


def to_float32(tree: Any) -> Any:
    """Cast the floating leaves of a tree (or tuple of trees) to float32; others unchanged."""
    if isinstance(tree, tuple):
        return tuple(to_float32(t) for t in tree)
    if isinstance(tree, (dict, list)):
        return tree_map(to_float32, tree)
    if isinstance(tree, np.ndarray) and tree.dtype == np.float64:
        return tree.astype(np.float32)
    return tree


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    # (the cast: numpy's stubs match **kwds against allow_pickle: bool)
    np.savez_compressed(buf, **cast(dict[str, Any], arrays))
    return buf.getvalue()


def summarize(arrays: dict[str, np.ndarray]) -> dict[str, dict]:
    """Shape and dtype of every stored array."""
    return {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in arrays.items()}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -------------------------------------------------------------------------------- loading


@dataclass
class GoldenCase:
    """One stored case, decoded: inputs, reference outputs and gradients (float64 and float32)."""

    op: str
    label: str
    args: tuple
    kwargs: dict
    differentiable: tuple[int, ...]
    arrays: dict[str, np.ndarray]
    entry: dict

    @property
    def id(self) -> str:
        return f"{self.op}[{self.label}]"

    def _get(self, key: str, layout_key: str) -> Any:
        return unpack(self.arrays[key], self.entry["layouts"].get(layout_key)) if key in self.arrays else None

    def output(self, low: bool = False) -> Any:
        """The reference output in float64 (or evaluated in float32 with ``low``)."""
        return self._get("out32" if low else "out", "out")

    def cotangent(self) -> Any:
        return self._get("cot", "out")

    def gradient(self, i: int, low: bool = False) -> Any:
        """The reference VJP for argument ``i`` (None where the argument is absent)."""
        return self._get(f"grad32_{i}" if low else f"grad{i}", f"arg{i}")


class KitError(Exception):
    """The kit itself is unusable (missing or corrupted goldens, bad manifest): one clear line.

    ``hyperzzw verify`` prints it and exits with :data:`EXIT_KIT_ERROR`; it never means the port is wrong.
    """


_CASE_KEYS = ("op", "label", "file", "sha256", "args", "kwargs", "differentiable", "layouts")


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the canonical JSON of the manifest without its ``digest`` field.

    Covers every case's metadata (operator, file, file hash, differentiable arguments, layouts,
    keyword arguments), so any edit to the manifest is detected.
    """
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def load_manifest(directory: Path = GOLDEN_DIR) -> dict:
    """The manifest, checked: it exists, parses, has the supported format and its digest matches."""
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise KitError(
            f"golden manifest missing: {path} (reinstall hyperzzw, or regenerate with "
            "python -m hyperzzw_core.conformance.generate)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise KitError(f"golden manifest {path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cases"), list):
        raise KitError(f"golden manifest {path}: expected an object with a 'cases' list")
    if manifest.get("format") != FORMAT_VERSION:
        raise KitError(f"golden manifest {path}: format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
    expected = manifest.get("digest")
    actual = manifest_digest(manifest)
    if expected != actual:
        raise KitError(
            f"golden manifest {path} fails its integrity check: digest {expected!r} recorded, "
            f"{actual} computed; it was edited after generation (regenerate it on purpose "
            "with python -m hyperzzw_core.conformance.generate)"
        )
    for i, entry in enumerate(manifest["cases"]):
        missing = [k for k in _CASE_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise KitError(f"golden manifest {path}: case {i} lacks {missing}")
    return manifest


def load_case(entry: dict, directory: Path = GOLDEN_DIR, verify_hash: bool = True) -> GoldenCase:
    """Read one case file (no pickle), checking its SHA-256 against the manifest."""
    path = Path(directory) / entry["file"]
    if not path.is_file():
        raise KitError(f"golden file missing: {path} (case {entry['op']}[{entry['label']}])")
    data = path.read_bytes()
    if verify_hash and sha256(data) != entry["sha256"]:
        raise KitError(
            f"golden file {path} does not match its SHA-256 in the manifest (case {entry['op']}[{entry['label']}])"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return GoldenCase(
            entry["op"],
            entry["label"],
            decode_args(arrays, entry["args"], entry["layouts"]),
            decode_kwargs(entry["kwargs"]),
            tuple(entry["differentiable"]),
            arrays,
            entry,
        )
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise KitError(f"golden file {path} cannot be decoded: {type(exc).__name__}: {exc}") from None


def kit_operators(directory: Path = GOLDEN_DIR) -> list[str]:
    """The operators the goldens cover, in manifest order."""
    return list(dict.fromkeys(e["op"] for e in load_manifest(directory)["cases"]))


def load_cases(ops: list[str] | None = None, directory: Path = GOLDEN_DIR) -> list[GoldenCase]:
    """All stored cases (or those of ``ops``), in manifest order. Unknown ``ops`` raise ValueError."""
    manifest = load_manifest(directory)
    known = {e["op"] for e in manifest["cases"]}
    if ops:
        unknown = sorted(set(ops) - known)
        if unknown:
            hints = "; ".join(
                f"{u!r}: did you mean {m[0]!r}?"
                for u in unknown
                if (m := difflib.get_close_matches(u, sorted(known), n=1))
            )
            raise ValueError(
                f"unknown operators {unknown}{' (' + hints + ')' if hints else ''}; the goldens cover {sorted(known)}"
            )
    return [load_case(e, directory) for e in manifest["cases"] if not ops or e["op"] in ops]
