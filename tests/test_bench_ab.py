"""``bench ab``: the revision side really runs the revision's code, and bad revisions are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import hyperzzw_core
from hyperzzw_core.benchmarks import ab, floor
from hyperzzw_core.train import memory

REPO = Path(__file__).resolve().parents[1]


def _is_git_checkout() -> bool:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _is_git_checkout(), reason="needs the git checkout (bench ab exports a revision)")


def _result(rows: list, rounds: int, **extra: object) -> dict:
    """What ``ab.run`` hands ``ab.render``, around hand-made ``rows`` (3 calls per process)."""
    return {
        "rev": "r",
        "commit": "c" * 40,
        "command": "cmd",
        "date": "d",
        "rounds": rounds,
        "reps": 3,
        "config": "tiny",
        "load_before": (0.0, 0.0, 0.0),
        "load_after": (0.0, 0.0, 0.0),
        "rows": rows,
        **extra,
    }


def test_unknown_revision_is_refused_by_name() -> None:
    with pytest.raises(ab.ABError, match="--rev 'no-such-rev-xyz' is not a commit"):
        ab.resolve(REPO, "no-such-rev-xyz")


def test_cli_refuses_missing_rev_and_bad_rounds() -> None:
    for argv, msg in (
        (["ab"], "--rev REV is required"),
        (["ab", "--rev", "HEAD", "--rounds", "0"], "--rounds must be a positive integer, got 0"),
        (["ab", "--rev", "HEAD", "--cases", "train:64,fwd:8"], "--cases item 'fwd:8': expected KIND:BATCH"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "hyperzzw_core.cli", "bench", *argv], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2 and msg in proc.stderr, proc.stderr


def test_cases_are_parsed_in_order_and_bad_ones_named() -> None:
    assert ab.parse_cases("train:64, forward:8,forward:1") == (("train", 64), ("forward", 8), ("forward", 1))
    for text, msg in (("train:0", "--cases item 'train:0'"), ("train", "--cases item 'train'"), (",", "names no case")):
        with pytest.raises(ab.ABError, match=msg):
            ab.parse_cases(text)


def test_each_side_imports_its_own_code(tmp_path: Path) -> None:
    commit = ab.resolve(REPO, "HEAD")
    site = ab.install_revision(REPO, commit, tmp_path)
    # The exported revision is a copy: its package lies under site/, not in this checkout.
    assert (site / "hyperzzw_core" / "__init__.py").is_file()
    rows = ab.compare((("forward", 1),), site, rounds=1, reps=1, config="tiny", log=lambda _msg: None)
    (row,) = rows
    assert Path(row["A"]["core_file"]).resolve() == (site / "hyperzzw_core" / "__init__.py").resolve()
    assert Path(row["B"]["core_file"]).resolve() == Path(hyperzzw_core.__file__).resolve()
    assert row["A"]["n"] == row["B"]["n"] == 1
    assert row["A"]["heap"] == row["B"]["heap"] == "C library defaults"
    # side B's last process measured its eager floor (benchmarks/floor.py); side A, the revision, not
    fl = row["B"]["floor"]
    assert "floor" not in row["A"] and fl["kernels"]["n_calls"] > 0 and fl["kernels"]["seconds"] > 0
    assert fl["calls"]["seconds"] is not None
    assert fl["seconds_as_called"] == fl["kernels"]["seconds"] + fl["calls"]["seconds"]
    # the eager floor takes the products at their channels-last figure where that is lower
    assert fl["seconds"] == fl["kernels"]["seconds_channels_last"] + fl["calls"]["seconds"] <= fl["seconds_as_called"]
    # where glibc reads tunables, one more process per side measured the live peak
    assert ("live_ratio" in row) == ab.live_peaks_supported()
    if "live_ratio" in row:
        assert row["A"]["live_peak"] > 0 and row["B"]["live_peak"] > 0
    # --as-cli: each worker under its own side's hyperzzw train heap setting (both sides have it here)
    (cli_row,) = ab.compare((("forward", 1),), site, rounds=1, reps=1, config="tiny", log=lambda _m: None, as_cli=True)
    expected = "glibc " if memory._glibc() is not None else "C library defaults (not glibc)"
    assert cli_row["A"]["heap"].startswith(expected) and cli_row["B"]["heap"].startswith(expected), cli_row
    text = ab.render(_result([dict(cli_row, time_ratio=1.0, round_ratios=[1.0], paired_ratio=1.0)], 1, as_cli=True))
    assert f"A: {cli_row['A']['heap']}; B: {cli_row['B']['heap']}." in text


def test_as_cli_names_a_side_whose_train_sets_no_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    """A revision from before train/memory.py: its workers keep the C library's defaults, and say so."""
    monkeypatch.setitem(sys.modules, "hyperzzw_core.train.memory", None)  # its import fails
    scope: dict = {}
    exec(ab.HEAP_AS_CLI, scope)
    assert scope["heap"] == "C library defaults (this side's hyperzzw train sets none)"


def test_the_report_states_each_sides_share_of_the_roofline_bound() -> None:
    """The bound is the cost model's max(FLOPs / product peak, bytes / copy bandwidth), computed here
    independently from the model's totals, and a side's share is bound / its median."""
    from hyperzzw_core import reference as R
    from hyperzzw_core.benchmarks.costs import step_cost

    side = {"median": 2.0, "min": 1.9, "n": 3, "peak_delta": 2**30, "core_file": "x"}
    rows = [{"kind": "train", "batch": 2, "config": "tiny", "A": dict(side), "B": dict(side, median=1.0)}]
    rows[0].update(time_ratio=0.5, round_ratios=[0.5], paired_ratio=0.5, peak_ratio=1.0)
    pk = {"torch_matmul_float32": 1e9, "torch_copy": 1e12}  # compute-bound by construction
    ab.add_bounds(rows, pk)
    flops = step_cost(R.tiny(), 2, 4, "train").flops
    assert rows[0]["bound"]["seconds"] == pytest.approx(flops / 1e9)
    assert rows[0]["A"]["of_bound"] == pytest.approx(flops / 1e9 / 2.0)
    assert rows[0]["B"]["of_bound"] == pytest.approx(flops / 1e9 / 1.0)
    text = ab.render(_result(rows, rounds=1, peaks=pk))
    assert f"{flops / 1e9:.2f}" in text and "1.0 GFLOP/s" in text
    assert f"{flops / 1e9 / 2.0:.0%} | {flops / 1e9:.0%} |" in text
    # where oneDNN's 1×1 convolution ran faster than the matmul, it is the peak the bound uses
    pk_conv = dict(pk, torch_conv1x1_float32=4e9, torch_conv1x1_float32_median=3e9)
    ab.add_bounds(rows, pk_conv)
    assert rows[0]["bound"]["seconds"] == pytest.approx(flops / 4e9)
    text = ab.render(_result(rows, rounds=1, peaks=pk_conv))
    assert "peak 4.0 GFLOP/s, the better of matmul 1.0 and oneDNN's 1×1 convolution 4.0" in text


def test_rounds_are_paired_so_one_slow_round_does_not_decide_the_ratio() -> None:
    """Three rounds where B is 0.9x A in each pair, but B's second process hit a load spike (and A's
    third): the pooled medians say 2.7x; the per-round pairs, computed here by hand, say 0.9x with a
    range up to the spike's 2.7x, and the report prints both."""
    a_times, b_times = [1.0, 1.0, 3.0], [0.9, 2.7, 2.7]

    def worker(t: float) -> dict:
        return {"times": [t, t, t], "median": t, "peak_delta": 2**20, "core_file": "x"}

    got = {"A": [worker(t) for t in a_times], "B": [worker(t) for t in b_times]}
    row = ab.summarize("train", 2, "tiny", got)
    assert row["time_ratio"] == pytest.approx(2.7)  # median B 2.7 / median A 1.0
    assert row["round_ratios"] == pytest.approx([b / a for a, b in zip(a_times, b_times, strict=True)])
    assert row["paired_ratio"] == pytest.approx(0.9)
    assert row["A"]["n"] == row["B"]["n"] == 9
    assert "| 2.70x | 0.90x (0.90 to 2.70) |" in ab.render(_result([row], rounds=3))


def test_the_live_peak_holds_the_saved_activations_and_drops_what_the_allocator_keeps() -> None:
    """Against two independent measurements of one ``cifar10()`` training step at B = 2: the live
    peak is at least the bytes autograd saves for backward (counted by a saved-tensor hook), and
    below the peak of a process under ``hyperzzw train``'s own heap setting, which keeps every freed
    block (so that setting's peak exceeds the live one by what the allocator holds)."""
    if not ab.live_peaks_supported():
        pytest.skip("the live peak needs glibc's tunables")
    spec = {"backend": "torch-cpu", "dtype": "float32", "kind": "train", "B": 2, "reps": 2, "budget": 1e9}
    live = ab._run(spec, None, 600.0, live=True)
    kept = ab._run(spec, None, 600.0, as_cli=True)
    assert live["heap"].startswith("blocks of 64 KiB or more mapped") and kept["heap"].startswith("glibc")
    assert live["saved_bytes"] == kept["saved_bytes"] > 0
    assert live["saved_bytes"] <= live["peak_delta"] < kept["peak_delta"], (live["peak_delta"], kept["peak_delta"])
    with pytest.raises(ValueError, match="LIVE_TUNABLE"):
        ab._run(spec, None, 600.0, as_cli=True, live=True)


def test_the_report_gives_the_live_peaks_and_their_ratio() -> None:
    side = {"median": 1.0, "min": 1.0, "n": 3, "peak_delta": 3 * 2**30, "core_file": "x"}
    row = {"kind": "train", "batch": 32, "config": "tiny", "A": dict(side, live_peak=2000 * 2**20)}
    row["B"] = dict(side, live_peak=1500 * 2**20)
    row.update(time_ratio=1.0, round_ratios=[1.0], paired_ratio=1.0, peak_ratio=1.0, live_ratio=0.75)
    text = ab.render(_result([row], rounds=1))
    assert "| train B=32 | 2000 MiB | 1500 MiB | 0.75x |" in text and ab.LIVE_TUNABLE in text
    del row["live_ratio"]  # a machine without glibc's tunables: no live-peak table
    assert "live peak" not in ab.render(_result([row], rounds=1)).lower()


def test_compile_b_compiles_side_b_only_and_refuses_a_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--compile-b``: B's workers get ``compile`` in their spec, A's never; a B worker that ran
    eager (Terminator.compile fell back) stops the comparison instead of being reported as compiled;
    the report says what compiling cost."""
    specs: list[tuple[str, dict]] = []

    def fake_run(spec: dict, site: Path | None, timeout: float, as_cli: bool = False, live: bool = False) -> dict:
        side = "A" if site is not None else "B"
        specs.append((side, spec))
        compiled = bool(spec.get("compile")) and not fallback
        core = str((site or tmp_path / "b") / "hyperzzw_core" / "__init__.py")
        return {
            "times": [1.0],
            "median": 1.0,
            "peak_delta": 2**20,
            "core_file": core,
            "compiled": compiled,
            "first_call": 40.0 if compiled else 0.1,
        }

    monkeypatch.setattr(ab, "_run", fake_run)

    def compare_compiled(rounds: int) -> list[dict]:
        return ab.compare(
            (("train", 2),),
            tmp_path / "a",
            rounds=rounds,
            reps=1,
            config="tiny",
            log=lambda _m: None,
            live=False,
            compile_b=True,
        )

    fallback = False
    (row,) = compare_compiled(rounds=2)
    assert [(side, bool(s.get("compile"))) for side, s in specs] == [("A", False), ("B", True)] * 2
    assert row["B"]["compiled"] and not row["A"]["compiled"] and row["B"]["first_call"] == 40.0
    text = ab.render(_result([row], rounds=2, compile_b=True))
    assert "`--compile-b`" in text and "train B=2 40 s" in text
    fallback = True
    with pytest.raises(ab.ABError, match="side B did not run compiled"):
        compare_compiled(rounds=1)


def test_issue_16_targets_are_judged_on_both_estimates_and_against_the_bound() -> None:
    """Hand-made cifar10() rows against the code before issue 16, with the verdicts worked out by
    hand: a target is met only when the pooled and the per-round ratio are both within it; a time
    it allows below the roofline bound is out of reach; memory is judged on the live peak where
    there is one, else on the peak RSS. Against another revision, or another configuration, no
    verdict."""

    def row(kind: str, b: int, a_med: float, ratio: float, paired: float, bound: float, **extra: float) -> dict:
        side = {"median": a_med, "min": a_med, "n": 3, "peak_delta": 2**30, "core_file": "x"}
        r = {"kind": kind, "batch": b, "config": "cifar10", "A": side, "B": dict(side, median=a_med * ratio)}
        r.update(time_ratio=ratio, round_ratios=[paired], paired_ratio=paired, bound={"seconds": bound}, peak_ratio=1.0)
        r.update(extra)
        r["B"]["of_bound"] = bound / (a_med * ratio)
        return r

    rows = [
        row("train", 32, 2.0, 0.50, 0.60, 0.8, peak_ratio=0.6, live_ratio=0.45),  # straddles 0.55
        row("forward", 8, 0.2, 0.60, 0.62, 0.05),  # both within 0.65
        row("forward", 1, 0.01, 0.70, 0.70, 0.008),  # 0.6 · 0.01 s allowed < 0.008 s bound
        row("forward", 4, 0.1, 0.10, 0.10, 0.01),  # not one of the targets' cases
    ]
    base = {"config": "cifar10", "commit": ab.ISSUE_16_BASELINE}
    got = {v["target"]: v for v in ab.verdicts(_result(rows, rounds=1, **base))}
    assert got["train B=32 time"]["status"] == "not shown above noise"
    assert got["train B=32 time"]["needs"] == pytest.approx(0.8 / (0.55 * 2.0))
    assert got["train B=32 memory (live peak)"]["status"] == "met"
    assert got["forward B=8 time"]["status"] == "met"
    assert got["forward B=1 time"]["status"].startswith("out of reach")
    assert len(got) == 4 and not any(t.startswith("forward B=4") for t in got)
    del rows[0]["live_ratio"]  # no live peak measured: the peak RSS ratio 0.6 decides
    got = {v["target"]: v for v in ab.verdicts(_result(rows, rounds=1, **base))}
    assert got["train B=32 memory (peak RSS)"]["status"] == "not met"
    rows[0].update(time_ratio=0.6)  # neither estimate within
    text = ab.render(_result(rows, rounds=1, **base))
    assert "| train B=32 time | ≤ 0.55x | 0.60x (per round 0.60x) | **not met** |" in text
    assert "asks for 73% of the bound" in text
    assert "Issue 16's targets" not in ab.render(_result(rows, rounds=1, commit=ab.ISSUE_16_BASELINE))  # tiny()
    # A is another revision: the targets are ratios to the code before issue 16, so no verdict
    assert "Issue 16's targets" not in ab.render(_result(rows, rounds=1, config="cifar10", commit="f" * 40))


def test_the_eager_floor_is_set_against_the_time_each_target_allows() -> None:
    """Hand-made cifar10() rounds where every process of side B measured its eager floor. The row
    shows the round whose floor is the median; each target's floor is set against the time it
    allows, pooled (the median round's floor over limit × A's median) and per round (each floor
    over limit × the median of A's process of the same round), all worked out here. Only where both
    are above 100% is the target out of reach of an eager execution; a round without a call floor
    has no share, and a replay that failed on fresh values is named."""

    def worker(t: float) -> dict:
        return {"times": [t, t, t], "median": t, "peak_delta": 2**30, "core_file": "x"}

    def worker_b(t: float, floor_s: float | None, left_out: dict | None) -> dict:
        res = worker(t)
        calls = (
            {"seconds": None, "why": "B=1 4x4: other calls"}
            if floor_s is None
            else {"seconds": 0.1 * floor_s, "batch": 1, "shape": [4, 4], "call": 0.2 * floor_s}
        )
        if floor_s is not None:
            calls["kernels"] = 0.1 * floor_s
        kernels = 0.9 * (floor_s or 1.0)
        by = dict(zip(floor.CATEGORIES, (0.5 * kernels, 0.1 * kernels, 0.3 * kernels, 0.1 * kernels), strict=True))
        res["floor"] = {
            "seconds": floor_s,
            "kernels": {"seconds": kernels, "by_category": by, "n_calls": 7, "left_out": left_out or {}},
            "calls": calls,
        }
        return res

    def case(kind: str, b: int, a: list[float], floors: list[float | None], left_out: dict | None = None) -> dict:
        got = {"A": [worker(t) for t in a], "B": [worker_b(0.8 * a[0], f, left_out) for f in floors]}
        return ab.summarize(kind, b, "cifar10", got)

    rows = [
        # median floor 1.25 s (round 3): 1.25 / (0.55 × 2.0) pooled; rounds 1.3/1.1, 1.2/1.1, 1.25/1.32
        case("train", 32, [2.0, 2.0, 2.4], [1.3, 1.2, 1.25]),
        # pooled 0.7 / 0.65 is above 100%, but the rounds' median, 0.6 / 0.65, is not
        case("forward", 8, [1.0, 1.0, 3.0], [0.6, 0.72, 0.7], left_out={"multinomial": 2}),
        # only round 2 has a call floor
        case("forward", 1, [0.01, 0.02, 0.02], [None, 0.0065, None]),
    ]
    assert rows[0]["B"]["floor"]["seconds"] == 1.25 and rows[0]["B"]["floor_rounds"] == [1.3, 1.2, 1.25]
    assert rows[2]["B"]["floor"]["seconds"] == 0.0065 and rows[2]["floor_over_a"] == [None, pytest.approx(0.325), None]
    res = _result(rows, rounds=3, config="cifar10", commit=ab.ISSUE_16_BASELINE)
    got = {v["target"]: v for v in ab.verdicts(res)}
    train, b8, b1 = got["train B=32 time"], got["forward B=8 time"], got["forward B=1 time"]
    assert train["floor_share"] == pytest.approx(1.25 / 1.1)
    assert train["floor_shares"] == pytest.approx([1.3 / 1.1, 1.2 / 1.1, 1.25 / (0.55 * 2.4)])
    assert train["out_of_reach"]
    assert b8["floor_share"] == pytest.approx(0.7 / 0.65) and not b8["out_of_reach"]
    assert b8["floor_shares"] == pytest.approx([0.6 / 0.65, 0.72 / 0.65, 0.7 / (0.65 * 3.0)])
    assert b1["floor_shares"] == pytest.approx([0.0065 / (0.6 * 0.02)]) and not b1["out_of_reach"]
    text = ab.render(res)
    assert "| 1.2500 s: 114%; per round 109% (95% to 118%) (out of reach of an eager execution) |" in text
    assert "| 0.7000 s: 108%; per round 92% (36% to 111%) |" in text
    k = 0.9 * 1.25
    assert (
        f"| train B=32 | 1.6000 s | {k:.4f} s: {0.5 * k:.4f} + {0.1 * k:.4f} + {0.3 * k:.4f} + {0.1 * k:.4f} s (7) "
        in text
    )
    assert "| 1.2500 s | 78% | 1.3000, 1.2000, 1.2500 |" in text
    assert "+ 0.0630 s (7); left out, failed on fresh values: multinomial ×2 |" in text
    assert "| –, 0.0065, – |" in text


def test_the_peak_is_the_calls_own_not_the_eager_floors() -> None:
    """A worker that also measures the eager floor (side B of ``bench ab``) reports the peak of its
    timed calls: a floor that touches 512 MiB (planted in place of the real one) leaves the peak
    below that, and the peak without a floor is the same size (both far below it)."""
    code = (
        "import json, sys, numpy as np\n"
        "from hyperzzw_core.benchmarks import _worker\n"
        "def planted(*args):\n"
        "    a = np.ones(2**26)  # 512 MiB, every page touched\n"
        "    return {'seconds': float(a[-1])}\n"
        "_worker._eager_floor = planted\n"
        "out = _worker.main(json.loads(sys.argv[1]))\n"
        "print(json.dumps({'peak_delta': out['peak_delta'], 'floor': out.get('floor')}))\n"
    )
    peaks = {}
    for with_floor in (True, False):
        spec = {"backend": "torch-cpu", "dtype": "float32", "kind": "forward", "B": 2, "config": "tiny", "reps": 2}
        if with_floor:
            spec["floor"] = True
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert (out["floor"] == {"seconds": 1.0}) == with_floor  # the planted floor ran where asked
        peaks[with_floor] = out["peak_delta"]
    assert peaks[True] < 2**28 and peaks[False] < 2**28, peaks
