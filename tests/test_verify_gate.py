"""``hyperzzw verify`` as a CI gate: no silent pass.

Each test runs a port that misbehaves in one specific way (exits, hangs, crashes, misspells an
operator, modifies its inputs, returns NaN) and checks that verify reports exactly that, with a
non-zero exit, and goes on with the other operators. The kit's integrity tests tamper with a copy
of the goldens and check that it is refused with one line and exit code 3.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from backends import import_or_skip
from planted_bugs import CORRECT

from hyperzzw_core.conformance import run
from hyperzzw_core.conformance.goldens import GOLDEN_DIR, KitError, load_cases, load_manifest, manifest_digest
from hyperzzw_core.conformance.protocol import DIFFERENTIABLE, differentiable_table
from hyperzzw_core.conformance.runner import coverage_of
from hyperzzw_core.reference import gelu as ref_gelu

ROOT = Path(__file__).resolve().parents[1]
PORT_HEAD = "import numpy as np\nfrom hyperzzw_core.reference import gelu, gelu_vjp, hyperzzw_2e, hyperzzw_2e_vjp\n"


def _verify(tmp_path: Path, body: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    port = tmp_path / "port.py"
    port.write_text(PORT_HEAD + textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, "-m", "hyperzzw_core.cli", "verify", "--impl", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def _report(res: subprocess.CompletedProcess) -> dict:
    def no_constant(name):
        raise AssertionError(f"non-strict JSON constant {name} in --json output")

    return json.loads(res.stdout, parse_constant=no_constant)


# ------------------------------------------------------------------ a port cannot end or hang the run


@pytest.mark.parametrize(
    "stmt, text", [("import sys; sys.exit(0)", "sys.exit(0)"), ("raise KeyboardInterrupt", "KeyboardInterrupt")]
)
def test_exit_or_interrupt_inside_an_operator_is_a_failure(tmp_path, stmt, text):
    res = _verify(
        tmp_path,
        f"""
        def si_glu(g1):
            {stmt}
    """,
        "--json",
        "--ops",
        "si_glu,gelu",
    )
    assert res.returncode == 1, res.stderr
    report = _report(res)
    si = [r for r in report["results"] if r["op"] == "si_glu"]
    assert si and all(r["status"] == "error" and text in r["message"] for r in si)
    assert all(r["location"].startswith(str(tmp_path / "port.py") + ":") for r in si)
    assert {r["status"] for r in report["results"] if r["op"] == "gelu"} == {"pass"}  # the run went on


def test_hanging_case_times_out_and_the_run_goes_on(tmp_path):
    res = _verify(
        tmp_path,
        """
        _gelu = gelu
        def gelu(x):
            if x.shape == (5, 7) and np.abs(x).max() > 0.1:    # one case (5x7, not 5x7-tiny) never returns
                while True:
                    pass
            return _gelu(x)
    """,
        "--json",
        "--ops",
        "gelu,hyperzzw_2e",
        "--timeout",
        "3",
    )
    assert res.returncode == 1
    report = _report(res)
    bad = [(r["op"], r["case"], r["status"]) for r in report["results"] if r["status"] != "pass"]
    assert bad == [("gelu", "5x7", "timeout")], bad
    assert sum(r["op"] == "hyperzzw_2e" and r["status"] == "pass" for r in report["results"]) > 5
    assert "gelu" in res.stderr and "hyperzzw_2e" in res.stderr  # progress per operator


def test_a_port_that_kills_its_process_is_a_crash(tmp_path):
    res = _verify(
        tmp_path,
        """
        import os
        _gelu = gelu
        def gelu(x):
            if x.shape == (5, 7) and np.abs(x).max() > 0.1:
                os._exit(3)
            return _gelu(x)
    """,
        "--json",
        "--ops",
        "gelu",
    )
    assert res.returncode == 1
    report = _report(res)
    bad = [(r["case"], r["status"]) for r in report["results"] if r["status"] != "pass"]
    assert bad == [("5x7", "crash")]
    assert "exit code 3" in next(r for r in report["results"] if r["status"] == "crash")["message"]
    assert sum(r["status"] == "pass" for r in report["results"]) > 5


def test_exit_at_import_is_a_load_error(tmp_path):
    res = _verify(tmp_path, "import sys\nsys.exit(0)\n")
    assert res.returncode == 2 and "cannot load implementation" in res.stderr and "SystemExit" in res.stderr


# ------------------------------------------------------------------------------ honest reporting


def test_exception_reported_once_with_the_ports_line(tmp_path):
    res = _verify(
        tmp_path,
        """
        def si_glu(g1):
            return _helper(g1)

        def _helper(g1):
            raise RuntimeError("not implemented on this backend")
    """,
        "--ops",
        "si_glu",
    )
    assert res.returncode == 1
    line = next(ln for ln in res.stdout.splitlines() if "si_glu[2x3x4x4]-float64-forward" in ln)
    assert line.count("not implemented on this backend") == 1
    port_line = 1 + (
        PORT_HEAD
        + textwrap.dedent("""
        def si_glu(g1):
            return _helper(g1)

        def _helper(g1):
            raise RuntimeError""")
    ).count("\n")
    assert f"port.py:{port_line} (_helper)" in line, line


def test_no_gradient_checked_shows_a_dash_and_the_count(tmp_path):
    res = _verify(
        tmp_path,
        """
        from hyperzzw_core.reference import si_glu
    """,
        "--ops",
        "si_glu,gelu",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {
        ln.split()[0] + " " + ln.split()[1]: ln.split()
        for ln in res.stdout.splitlines()
        if ln.startswith(("si_glu ", "gelu "))
    }
    assert rows["si_glu float64"][6] == "-"  # grad max rel: not a number
    assert rows["gelu float64"][6] != "-"  # gelu_vjp is exposed
    assert "gradient checks" in res.stdout and "gradients not checked for: si_glu" in res.stdout


def test_in_place_modification_is_its_own_failure_and_later_cases_are_not_blamed():
    def gelu(x):
        out = ref_gelu(x)
        x *= 0.0  # clobbers its input
        return out

    impl = type(
        "Impl",
        (),
        {
            "gelu": staticmethod(gelu),
            "gelu_vjp": staticmethod(CORRECT.gelu_vjp),
            "si_glu": staticmethod(CORRECT.si_glu),
        },
    )
    results = run(impl, ops=["gelu", "si_glu"], dtypes=("float64",))
    fwd = [r for r in results if r.op == "gelu" and r.kind == "forward"]
    assert fwd and all(r.status == "error" and "modified its input arg0 in place" in r.message for r in fwd)
    # the gradients run after it on fresh copies: they pass
    assert all(r.status == "pass" for r in results if r.op == "gelu" and r.kind != "forward")
    assert all(r.status == "pass" for r in results if r.op == "si_glu")
    # and the goldens in memory are intact
    case = load_cases(["gelu"])[0]
    np.testing.assert_array_equal(case.output(), ref_gelu(case.args[0]))


def test_json_is_strict_when_errors_are_infinite(tmp_path):
    res = _verify(
        tmp_path,
        """
        def si_glu(g1):
            return np.full_like(g1, np.inf)
    """,
        "--json",
        "--ops",
        "si_glu",
    )
    assert res.returncode == 1
    assert "Infinity" not in res.stdout and "NaN" not in res.stdout.replace("NaN or Inf", "")
    report = _report(res)
    assert all(r["max_abs_error"] is None for r in report["results"])
    assert report["exit_code"] == 1 and report["passed"] is False


def test_in_process_system_exit_does_not_end_pytest():
    def si_glu(g1):
        raise SystemExit(0)

    results = run(type("Impl", (), {"si_glu": staticmethod(si_glu)}), ops=["si_glu"])
    assert results and all(r.status == "error" and "sys.exit(0)" in r.message for r in results)


# ---------------------------------------------------------------------------------- coverage


def test_misspelt_operator_fails_with_did_you_mean(tmp_path):
    res = _verify(
        tmp_path,
        """
        from hyperzzw_core.reference import hyperzzw_global as hyperzzw_globl
    """,
    )
    assert res.returncode == 1, res.stdout
    assert "hyperzzw_globl: not a kit operator; did you mean hyperzzw_global?" in res.stdout


def test_coverage_and_require_all(tmp_path):
    res = _verify(tmp_path, "", "--require-all")
    assert res.returncode == 1
    assert "coverage: 2 of 25 kit operators checked" in res.stdout
    assert "not in the implementation: magnet_g" in res.stdout
    res = _verify(tmp_path, "", "--ops", "gelu")
    assert res.returncode == 0


def test_unknown_ops_name_is_a_usage_error(tmp_path):
    res = _verify(tmp_path, "", "--ops", "gelu,hyperzzw_globl")
    assert res.returncode == 2
    assert "did you mean 'hyperzzw_global'" in res.stderr and "Traceback" not in res.stderr


def test_no_near_miss_among_the_shipped_implementations():
    """The reference and the adapters export helpers; none of them may be taken for a misspelling."""
    from hyperzzw_core import reference
    from hyperzzw_core.conformance.protocol import Implementation

    ops = list(DIFFERENTIABLE)
    for target in (reference, "hyperzzw_core.adapters.torch"):
        if isinstance(target, str):
            pytest.importorskip("torch")
        cov = coverage_of(Implementation(target).public_callables(), ops)
        assert cov.near_misses == {}, cov.near_misses
    assert coverage_of(["hyperzzw_globl", "hyperzzw_globl_vjp"], ops).near_misses == {
        "hyperzzw_globl": "hyperzzw_global",
        "hyperzzw_globl_vjp": "hyperzzw_global_vjp",
    }


# --------------------------------------------------------------------------- the kit's integrity


@pytest.fixture()
def goldens_copy(tmp_path):
    d = tmp_path / "goldens"
    shutil.copytree(GOLDEN_DIR, d)
    return d


def _edit_manifest(directory: Path, edit) -> None:
    path = directory / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


def _first(m: dict, op: str) -> dict:
    return next(c for c in m["cases"] if c["op"] == op)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: _first(m, "hyperzzw_2e").__setitem__("differentiable", []),
        lambda m: _first(m, "gelu").__setitem__("file", _first(m, "si_glu")["file"]),
        lambda m: _first(m, "gelu")["kwargs"].__setitem__("eps", 1.0),
        lambda m: m["cases"].pop(),
    ],
    ids=["differentiable-emptied", "file-repointed", "kwarg-added", "case-removed"],
)
def test_manifest_edits_are_refused(goldens_copy, edit):
    _edit_manifest(goldens_copy, edit)
    with pytest.raises(KitError, match="integrity check"):
        load_manifest(goldens_copy)


def test_tampered_manifest_refused_by_the_cli_with_one_line(tmp_path, goldens_copy):
    _edit_manifest(goldens_copy, lambda m: _first(m, "hyperzzw_2e").__setitem__("differentiable", []))
    res = _verify(tmp_path, "", "--goldens", str(goldens_copy))
    assert res.returncode == 3
    assert res.stderr.strip().count("\n") == 0 and "integrity check" in res.stderr, res.stderr


def test_missing_golden_file_is_a_clear_kit_error(tmp_path, goldens_copy):
    entry = _first(load_manifest(goldens_copy), "gelu")
    (goldens_copy / entry["file"]).unlink()
    res = _verify(tmp_path, "", "--goldens", str(goldens_copy))
    assert res.returncode == 3 and "golden file missing" in res.stderr and "Traceback" not in res.stderr
    (goldens_copy / "manifest.json").unlink()
    res = _verify(tmp_path, "", "--goldens", str(goldens_copy))
    assert res.returncode == 3 and "golden manifest missing" in res.stderr


def test_digest_is_over_the_whole_manifest():
    m = load_manifest()
    assert m["digest"] == manifest_digest(m)
    m2 = json.loads(json.dumps(m))
    m2["cases"][0]["layouts"] = {}
    assert manifest_digest(m2) != m["digest"]


# ------------------------------------------------------------------------- the gradient protocol


def test_generic_hook_is_told_the_differentiable_arguments():
    """A hyperzzw_vjp hook gets ``wrt``; it returns the reference's VJP for exactly those positions."""
    from hyperzzw_core.testing.registry import REGISTRY

    seen = {}

    def hyperzzw_vjp(op, args, kwargs, cotangent, wrt):
        seen[op] = wrt
        return REGISTRY[op].vjp(args, kwargs, cotangent)

    ops = ["magnet_l", "hyperzzw_global", "gelu", "sfne_block"]
    impl = type(
        "Impl", (), {**{o: staticmethod(getattr(CORRECT, o)) for o in ops}, "hyperzzw_vjp": staticmethod(hyperzzw_vjp)}
    )
    results = run(impl, ops=ops)
    assert seen == {o: DIFFERENTIABLE[o] for o in ops}
    assert all(r.status == "pass" for r in results)
    assert {r.kind for r in results if r.op == "sfne_block"} >= {"gradient[arg0]", "gradient[arg3]"}


def test_old_four_argument_hook_still_works():
    from hyperzzw_core.testing.registry import REGISTRY

    def hyperzzw_vjp(op, args, kwargs, cotangent):
        return REGISTRY[op].vjp(args, kwargs, cotangent)

    impl = type("Impl", (), {"gelu": staticmethod(CORRECT.gelu), "hyperzzw_vjp": staticmethod(hyperzzw_vjp)})
    results = run(impl, ops=["gelu"])
    assert any(r.kind != "forward" for r in results) and all(r.status == "pass" for r in results)


def test_readme_shows_the_generated_differentiable_table():
    assert differentiable_table() in (ROOT / "README.md").read_text()


JAX_PORT = """
import jax
import jax.numpy as jnp
from jax.scipy.special import erf

jax.config.update("jax_enable_x64", True)
hyperzzw_autograd = "jax"


def from_numpy(a, *, device=None):
    return jnp.asarray(a)


def gelu(x):
    return 0.5 * x * (1 + erf(x * 0.7071067811865476))


def hyperzzw_2e(k, z):
    return k * z * z


@jax.custom_vjp
def si_glu(g1):
    return g1 * jax.nn.sigmoid(g1)


def _fwd(g1):
    return si_glu(g1), g1


def _bwd(g1, g):                      # a planted gradient bug: the g1*s*(1-s) term is missing
    return (g * jax.nn.sigmoid(g1),)


si_glu.defvjp(_fwd, _bwd)
"""


def test_jax_autograd_checks_gradients_of_a_jax_port(tmp_path):
    """hyperzzw_autograd = "jax": jax.vjp over the wrt arguments, compared with the reference VJPs."""
    import_or_skip("jax", "jax")
    port = tmp_path / "jax_port.py"
    port.write_text(JAX_PORT)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "hyperzzw_core.cli",
            "verify",
            "--impl",
            str(port),
            "--json",
            "--ops",
            "gelu,hyperzzw_2e,si_glu",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert res.returncode == 1, res.stderr
    report = _report(res)
    status = {}
    for r in report["results"]:
        status.setdefault((r["op"], r["kind"]), set()).add(r["status"])
    assert status[("gelu", "gradient[arg0]")] == {"pass"}
    assert status[("hyperzzw_2e", "gradient[arg0]")] == status[("hyperzzw_2e", "gradient[arg1]")] == {"pass"}
    assert status[("si_glu", "forward")] == {"pass"}
    # the planted custom_vjp bug (invisible only where s(1-s) vanishes: the 1e3-offset case)
    failed = {r["case"] for r in report["results"] if r["op"] == "si_glu" and r["status"] == "fail"}
    assert failed >= {"2x3x4x4", "3x2x5"}, failed
