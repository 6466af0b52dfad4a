"""The conformance kit: goldens reproduce, verify catches planted bugs, CLI and plugin work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from planted_bugs import CORRECT, HARD_INPUT_ONLY, PLANTED, RUN_DTYPE

from hyperzzw_core.conformance import run
from hyperzzw_core.conformance.families import golden_samples
from hyperzzw_core.conformance.generate import build_case
from hyperzzw_core.conformance.goldens import GOLDEN_DIR, load_case, load_manifest, sha256
from hyperzzw_core.testing.registry import REGISTRY
from hyperzzw_core.testing.tolerance import assert_close

MANIFEST = load_manifest()


def test_goldens_cover_every_registered_operator():
    assert {e["op"] for e in MANIFEST["cases"]} == set(REGISTRY)
    for entry in MANIFEST["cases"]:
        assert sha256((GOLDEN_DIR / entry["file"]).read_bytes()) == entry["sha256"], entry["file"]


@pytest.mark.parametrize("entry", MANIFEST["cases"], ids=lambda e: f"{e['op']}-{e['label']}")
def test_reference_still_reproduces_goldens(entry):
    """Regenerate each case in memory from the registry and compare with the committed file."""
    spec = REGISTRY[entry["op"]]
    sample = next(s for s in golden_samples(spec, seed=entry["seed"]) if s.label == entry["label"])
    fresh, _ = build_case(spec, sample)
    stored = load_case(entry).arrays
    # each packed vector holds one whole result (a tree flattened), so its max is the tree's scale
    assert set(fresh) == set(stored)
    for key, value in stored.items():
        if key.startswith("arg") or key == "cot":
            # inputs and the seeded cotangent are bit-identical
            np.testing.assert_array_equal(fresh[key], value, err_msg=key)
        elif key == "out32" or key.startswith("grad32_"):
            # float32 round-off depends on summation order (BLAS, reordering); the stored float32
            # values are the baseline of the float32 policy, so the fresh float32 reference must
            # pass that policy against the float64 truth.
            truth = stored["out" if key == "out32" else "grad" + key[len("grad32_") :]]
            assert_close(fresh[key], truth, dtype="float32", ref_low=value, name=key)
        else:
            assert_close(fresh[key], value, dtype="float64", name=key)


def test_a_case_does_not_depend_on_the_other_cases(tmp_path):
    """Generating one operator alone gives byte-identical files to the committed full set: a case's
    seeded cotangent comes from its own name, so adding a case leaves every other file as it was."""
    from hyperzzw_core.conformance.generate import generate

    alone = generate(tmp_path, ops=["label_smoothing_cross_entropy"])
    committed = {e["file"]: e["sha256"] for e in MANIFEST["cases"]}
    assert alone["cases"]
    for entry in alone["cases"]:
        assert entry["sha256"] == committed[entry["file"]], entry["file"]
        assert (tmp_path / entry["file"]).read_bytes() == (GOLDEN_DIR / entry["file"]).read_bytes()


def test_golden_files_are_not_pickles():
    entry = MANIFEST["cases"][0]
    with np.load(GOLDEN_DIR / entry["file"], allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_correct_implementation_passes_everything():
    results = run(CORRECT, dtypes=("float64", "float32"))
    bad = [r.id + ": " + r.message for r in results if r.status != "pass"]
    assert not bad, bad
    assert {r.op for r in results} == set(REGISTRY)
    assert any(r.kind.startswith("gradient") for r in results)


def test_planted_bug_suite_covers_every_operator():
    assert len(PLANTED) >= 30
    assert {op for op, _ in PLANTED.values()} == set(REGISTRY)


@pytest.mark.parametrize("description", sorted(PLANTED))
def test_planted_bug_is_flagged_on_its_operator(description):
    op, impl = PLANTED[description]
    results = run(impl, dtypes=(RUN_DTYPE.get(description, "float64"),))
    failing_ops = {r.op for r in results if r.status != "pass"}
    assert failing_ops == {op}, f"{description}: failing operators {failing_ops}, expected {{{op!r}}}"


@pytest.mark.parametrize("description", sorted(HARD_INPUT_ONLY))
def test_hard_input_bug_is_caught_only_by_the_hard_families(description):
    """These bugs pass every registry (init-valued, benign) case: the families are what catch them."""
    op, impl = PLANTED[description]
    base = {s.label for s in REGISTRY[op].samples("float64", seed=0)}
    results = run(impl, ops=[op], dtypes=(RUN_DTYPE.get(description, "float64"),))
    on_base = [r.id for r in results if r.case in base and r.status != "pass"]
    on_families = [r.id for r in results if r.case not in base and r.status != "pass"]
    assert not on_base, on_base
    assert on_families, f"{description}: no hard case caught it"


def _trained_pairs():
    for entry in MANIFEST["cases"]:
        if entry["label"].endswith("-trained"):
            yield entry


@pytest.mark.parametrize("entry", list(_trained_pairs()), ids=lambda e: f"{e['op']}-{e['label']}")
def test_trained_trees_move_every_leaf_away_from_its_init(entry):
    """Every element of every parameter leaf is nonzero and differs from the registry's init tree."""
    from hyperzzw_core.reference._tree import flatten

    base_label = entry["label"][: -len("-trained")]
    init = next(s for s in REGISTRY[entry["op"]].samples("float64", seed=0) if s.label == base_label)
    case = load_case(entry)
    trees = [(i, a) for i, a in enumerate(case.args) if isinstance(a, dict)]
    assert trees
    for i, tree in trees:
        before = flatten(init.args[i])
        for key, leaf in flatten(tree).items():
            assert np.all(leaf != 0), f"arg{i}.{key} has zeros"
            rms = float(np.sqrt(np.mean(before[key] ** 2)))
            # moved by at least a quarter of the leaf's RMS; an all-zero (or constant) init leaf by >= 0.1
            floor = 0.1 if rms == 0 else 0.25 * rms
            assert np.min(np.abs(leaf - before[key])) >= floor * (1 - 1e-12), f"arg{i}.{key} stays near init"


def test_every_operator_has_hard_cases_and_edge_shapes_exist():
    labels: dict[str, set[str]] = {}
    for entry in MANIFEST["cases"]:
        labels.setdefault(entry["op"], set()).add(entry["label"])
    for op, spec in REGISTRY.items():
        base = {s.label for s in spec.samples("float64", seed=0)}
        assert labels[op] - base, f"{op}: only registry samples"
    shapes = [tuple(a["shape"]) for e in MANIFEST["cases"] for k, a in e["arrays"].items() if k == "arg0"]
    assert any(len(s) >= 2 and s[0] == 1 and s[1] == 1 for s in shapes)  # B=1, C=1
    assert any(e["op"] == "depthwise_conv" and "k1" in e["label"] for e in MANIFEST["cases"])
    assert any(e["op"] == "adaptive_avg_pool" and "11to3" in e["label"] for e in MANIFEST["cases"])
    assert any(e["label"].endswith("offset1e3") for e in MANIFEST["cases"] if e["op"] == "instance_standardize")
    assert any(e["label"].startswith("large-logits") for e in MANIFEST["cases"])


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hyperzzw_core.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_cli_verify_file_impl_table_and_exit_code(tmp_path):
    good = tmp_path / "good_impl.py"
    good.write_text("from hyperzzw_core.reference import hyperzzw_2e, hyperzzw_2e_vjp, gelu\n")
    res = _cli("verify", "--impl", str(good))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "hyperzzw_2e" in res.stdout and "PASS" in res.stdout and "gelu" in res.stdout
    bad = tmp_path / "bad_impl.py"
    bad.write_text(
        textwrap.dedent("""
        import numpy as np
        from hyperzzw_core.reference import hyperzzw_2e_vjp
        def hyperzzw_2e(k, z):          # a bug: K ⊙ Z instead of K ⊙ Z²
            return k * z
        def gelu(x):                    # an implementation that raises
            raise RuntimeError("not implemented on this backend")
        def si_glu(g1):                 # wrong shape
            return g1[..., :1]
        def sigmoid_unused(x):
            return x
    """)
    )
    res = _cli("verify", "--impl", str(bad), "--json")
    assert res.returncode == 1
    report = json.loads(res.stdout)
    status = {(r["op"], r["kind"]): r["status"] for r in report["results"]}
    assert status[("hyperzzw_2e", "forward")] == "fail"
    assert status[("gelu", "forward")] == "error"
    assert status[("si_glu", "forward")] == "error"
    msgs = " ".join(r["message"] for r in report["results"])
    assert "not implemented on this backend" in msgs and "wrong shape" in msgs


def test_cli_reports_nan_and_wrong_dtype(tmp_path):
    impl = tmp_path / "odd_impl.py"
    impl.write_text(
        textwrap.dedent("""
        import numpy as np
        def gelu(x):
            return np.full_like(x, np.nan)
        def si_glu(g1):
            return (g1 / (1 + np.exp(-g1))).astype(np.float32)
    """)
    )
    res = _cli("verify", "--impl", str(impl), "--json", "--ops", "gelu,si_glu")
    report = json.loads(res.stdout)
    msgs = {r["op"]: r["message"] for r in report["results"]}
    assert "NaN" in msgs["gelu"] and "wrong dtype float32" in msgs["si_glu"]
    assert res.returncode == 1


def test_cli_clear_errors(tmp_path):
    res = _cli("verify", "--impl", "no_such_module_xyz")
    assert res.returncode == 2 and "cannot load implementation" in res.stderr
    empty = tmp_path / "empty_impl.py"
    empty.write_text("x = 1\n")
    res = _cli("verify", "--impl", str(empty))
    assert res.returncode == 2 and "none of the operators" in res.stderr
    res = _cli("verify", "--impl", str(empty), "--ops", "not_an_op")
    assert res.returncode == 2 and "unknown operators" in res.stderr


def test_pytest_plugin_from_outside_the_repository(tmp_path):
    (tmp_path / "test_port.py").write_text(
        textwrap.dedent("""
        hyperzzw_impl = "my_port.py"

        def test_hyperzzw(hyperzzw_case):
            hyperzzw_case.check()
    """)
    )
    (tmp_path / "my_port.py").write_text(
        textwrap.dedent("""
        from hyperzzw_core.reference import gelu, gelu_vjp
        def hyperzzw_2e(k, z):
            return k * z * z * 1.001          # a 0.1% error
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_port.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    out = res.stdout
    n_cases = {op: sum(e["op"] == op for e in MANIFEST["cases"]) for op in ("hyperzzw_2e", "gelu")}
    assert f"{n_cases['hyperzzw_2e']} failed, {n_cases['gelu']} passed" in out, out
    assert "test_hyperzzw[hyperzzw_2e-" in out and "OUTSIDE tolerance" in out
    # the packaged suite, one option and no test file of one's own
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--pyargs",
            "hyperzzw_core.conformance.suite",
            "--hyperzzw-impl",
            str(tmp_path / "my_port.py"),
            "--hyperzzw-ops",
            "gelu",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert f"{n_cases['gelu']} passed" in res.stdout, res.stdout + res.stderr


def test_torch_adapter_passes_verify():
    pytest.importorskip("torch")
    results = run("hyperzzw_core.adapters.torch", dtypes=("float64", "float32"))
    bad = [r.id + ": " + r.message for r in results if r.status != "pass"]
    assert not bad, bad
    assert {r.op for r in results} == set(REGISTRY)
    assert sum(r.kind.startswith("gradient") for r in results) > 50  # autograd gradients were checked
