"""Generate the golden vectors from the reference: ``python -m hyperzzw_core.conformance.generate``.

Every registered operator's sample inputs and hard input families (float64, seed 0; see
:mod:`.families`), the reference outputs, a seeded
cotangent and the reference VJPs, plus the same evaluated in float32. Writes the case files and
``manifest.json`` (with its digest) into ``--out`` (default: the package's golden directory).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import scipy

from .. import __version__
from ..testing.registry import REGISTRY, OpSpec, Sample
from .families import golden_samples
from .goldens import (
    FORMAT_VERSION,
    GOLDEN_DIR,
    describe_arg,
    encode_args,
    manifest_digest,
    npz_bytes,
    pack,
    sha256,
    summarize,
    to_float32,
)

SEED = 0


def _cotangent(out: Any, rng: np.random.Generator) -> Any:
    if isinstance(out, (tuple, list)):
        return tuple(_cotangent(o, rng) for o in out)
    return rng.standard_normal(np.shape(out))


def _as_tuple(out: Any) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) and not isinstance(out, np.ndarray) else (out,)


def cotangent_seed(op: str, label: str) -> list[int]:
    """The cotangent's seed of case ``op``/``label``: from the case's name alone, so that adding or
    removing a case leaves every other case's files unchanged."""
    digest = hashlib.sha256(f"{op}__{label}".encode()).digest()
    return [SEED, *(int.from_bytes(digest[i : i + 4], "little") for i in (0, 4)), 7]


def build_case(spec: OpSpec, sample: Sample) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and manifest entry of one case."""
    arrays, layouts = encode_args(sample.args)
    out = spec.reference(*sample.args, **sample.kwargs)
    stored, layout = pack("out", out)
    arrays.update(stored)
    if layout is not None:
        layouts["out"] = layout
    args32 = to_float32(sample.args)
    out32 = spec.reference(*args32, **sample.kwargs)
    arrays.update(pack("out32", out32, layout)[0])
    if spec.vjp is not None and spec.differentiable:
        rng = np.random.default_rng(cotangent_seed(spec.name, sample.label))
        cot = _cotangent(out, rng)
        if not isinstance(out, (tuple, list)):
            cot = cot[0] if isinstance(cot, tuple) else cot
        arrays.update(pack("cot", cot, layouts.get("out"))[0])
        grads = spec.vjp(sample.args, sample.kwargs, cot)
        grads32 = spec.vjp(args32, sample.kwargs, to_float32(cot))
        for i, g, g32 in zip(spec.differentiable, grads, grads32, strict=True):
            if g is None:  # an absent optional input (e.g. x_pre of a block without one)
                continue
            layout = layouts.get(f"arg{i}")
            arrays.update(pack(f"grad{i}", g, layout)[0])
            arrays.update(pack(f"grad32_{i}", g32, layout)[0])
    entry = {
        "op": spec.name,
        "label": sample.label,
        "section": spec.section,
        "seed": SEED,
        "args": [describe_arg(a) for a in sample.args],
        "kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sample.kwargs.items()},
        "differentiable": list(spec.differentiable),
        "arrays": summarize(arrays),
        "layouts": layouts,
    }
    return arrays, entry


def _manifest_text(manifest: dict) -> str:
    """The manifest as JSON with one line per case (compact, and diffs stay per case)."""
    head = {k: v for k, v in manifest.items() if k != "cases"}
    lines = [json.dumps(c, sort_keys=True, separators=(",", ":")) for c in manifest["cases"]]
    body = json.dumps(head, indent=1, sort_keys=True)[:-2]
    return body + ',\n "cases": [\n' + ",\n".join(lines) + "\n ]\n}\n"


def generate(out_dir: Path = GOLDEN_DIR, ops: list[str] | None = None) -> dict:
    """Write every case and the manifest; returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.npz"):
        old.unlink()
    cases = []
    for name, spec in REGISTRY.items():
        if ops and name not in ops:
            continue
        for sample in golden_samples(spec, seed=SEED):
            arrays, entry = build_case(spec, sample)
            data = npz_bytes(arrays)
            entry["file"] = f"{name}__{sample.label}.npz"
            entry["sha256"] = sha256(data)
            (out_dir / entry["file"]).write_bytes(data)
            cases.append(entry)
    manifest = {
        "format": FORMAT_VERSION,
        "reference_version": __version__,
        "generated_by": "python -m hyperzzw_core.conformance.generate",
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "cases": cases,
    }
    manifest["digest"] = manifest_digest(manifest)
    (out_dir / "manifest.json").write_text(_manifest_text(manifest))
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=GOLDEN_DIR, help="output directory")
    ap.add_argument("--ops", help="comma-separated operator names (default: all)")
    a = ap.parse_args(argv)
    m = generate(a.out, a.ops.split(",") if a.ops else None)
    size = sum(f.stat().st_size for f in a.out.glob("*.npz"))
    print(f"wrote {len(m['cases'])} cases ({size / 1024:.0f} KiB) to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
