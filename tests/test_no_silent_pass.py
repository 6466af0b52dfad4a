"""Unit checks of issue 13 (no silent pass): config fields, seeds, labels on every loss path,
float64 standardisation statistics, and one-line CLI failures for every subcommand.

Values are compared with independent computations (the NumPy reference, a per-channel loop with
``math.fsum``), never with the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import hyperzzw_core as core
from hyperzzw_core import cli
from hyperzzw_core import reference as R
from hyperzzw_core.reference._config import check_seed

# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "field, value",
    [
        ("bottleneck_factors", (2.9, 2, 2, 2)),
        ("bottleneck_factors", (2.0, 2, 2, 2)),
        ("global_layers", (2, 1, 1.5, 1)),
        ("local_kernel_sizes", (3, 9, "5", 7)),
        ("num_concat_pre", (0, 0, True, 2)),
        ("num_classes", 2.5),
        ("ibs_groups", 2.0),
        ("hi_layers", True),
        ("omega_0", math.inf),
        ("alpha", -math.inf),
        ("slow_loss_weight", math.nan),
        ("label_smoothing", math.nan),
        ("eps", math.nan),
        ("dropout", (0.0, math.nan, 0.0, 0.0)),
        ("grid", (8.5, 8)),
    ],
)
def test_config_fields_refuse_non_integers_and_non_finite_numbers(field, value):
    with pytest.raises(ValueError, match=f"TerminatorConfig.{field}"):
        R.tiny().replace(**{field: value})


def test_integer_fields_accept_numpy_integers_unchanged():
    c = R.tiny().replace(bottleneck_factors=np.array([2, 2, 2, 2]), ibs_groups=np.int64(2))
    assert c == R.tiny() and all(type(b) is int for b in c.bottleneck_factors) and type(c.ibs_groups) is int


@pytest.mark.parametrize(
    "line, field",
    [
        ("bottleneck_factors = [2.9, 2, 2, 2]", "bottleneck_factors"),
        ("slow_loss_weight = nan", "slow_loss_weight"),
        ("omega_0 = inf", "omega_0"),
        ("ibs_groups = 2.0", "ibs_groups"),
    ],
)
def test_toml_configs_are_checked_the_same_way(tmp_path, line, field):
    pytest.importorskip("torch")
    from hyperzzw_core.train.loop import load_config

    toml = tmp_path / "c.toml"
    base = {k: v for k, v in R.tiny().to_dict().items() if v is not None and k != field}
    toml.write_text(
        "".join(f"{k} = {v!r}\n".replace("'", '"').replace("(", "[").replace(")", "]") for k, v in base.items())
        + line
        + "\n"
    )
    with pytest.raises(ValueError, match=f"TerminatorConfig.{field}"):
        load_config(str(toml), "2d")


@pytest.mark.parametrize("seed", [-1, 2.9, 3.0, True, "1"])
def test_seeds_must_be_non_negative_integers(seed):
    with pytest.raises(ValueError, match="seed"):
        R.init_params(R.tiny(), seed)
    with pytest.raises(ValueError, match="seed"):
        core.init_params(R.tiny(), seed)
    with pytest.raises(ValueError, match="--seed"):
        check_seed("--seed", seed)


# ------------------------------------------------------------------------------ labels


def _reference_ce(logits: np.ndarray, labels: np.ndarray, eps: float) -> float:
    """The §2.13 formula in a plain loop (float64)."""
    total = 0.0
    for row, y in zip(logits, labels, strict=True):
        m = max(row)
        logp = [v - m - math.log(sum(math.exp(u - m) for u in row)) for v in row]
        total += -(eps / len(row)) * sum(logp) - (1 - eps) * logp[int(y)]
    return total / len(labels)


@pytest.mark.parametrize("labels", [[-1, 0, 1], [0, 4, 1], [-1, 10, 99]])
@pytest.mark.parametrize("check_finite", [True, False])
def test_core_cross_entropy_refuses_out_of_range_labels_on_every_path(labels, check_finite):
    logits = np.random.default_rng(0).standard_normal((3, 4))
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 4\)"):
        core.label_smoothing_cross_entropy(logits, np.array(labels), check_finite=check_finite)


def test_core_cross_entropy_opt_out_keeps_the_value():
    logits = np.random.default_rng(1).standard_normal((5, 4))
    labels = np.array([0, 3, 1, 2, 3])
    for flag in (True, False):
        got = float(core.label_smoothing_cross_entropy(logits, labels, 0.09, check_labels=flag))
        assert got == pytest.approx(_reference_ce(logits, labels, 0.09), rel=1e-12)


def test_torch_adapter_loss_refuses_bad_labels_and_matches_the_reference():
    torch = pytest.importorskip("torch")
    from hyperzzw_core.adapters.torch import LabelSmoothingCrossEntropy, Terminator

    config = R.tiny()
    model = Terminator(config, seed=0, dtype=torch.float64)
    x = np.random.default_rng(2).standard_normal((3, 1, 8, 8))
    xt = torch.as_tensor(x)
    for bad in ([-1, 10, 99], [0, 1, 10], [-1, 0, 1]):
        with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 10\)"):
            model.loss(xt, torch.tensor(bad))
        with pytest.raises(ValueError, match="labels"):
            LabelSmoothingCrossEntropy()(torch.zeros(3, 10, dtype=torch.float64), torch.tensor(bad))
    labels = np.array([0, 9, 4])
    expected = float(R.terminator_loss(R.init_params(config, 0), x, labels, config))
    for flag in (True, False):
        got = float(model.loss(xt, torch.as_tensor(labels), check_labels=flag).detach())
        assert got == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------------- standardisation


def test_large_magnitude_float32_data_does_not_standardise_to_zeros():
    pytest.importorskip("torch")
    from hyperzzw_core.train import data

    x = (np.random.default_rng(3).random((20, 2, 4, 4)) * 1e30).astype(np.float32)
    x_te = x[:5] * np.float32(0.5)
    got_tr, got_te = data.standardise(x, x_te)
    for c in range(2):
        v = x[:, c].astype(np.float64).ravel()
        mean = math.fsum(v) / len(v)
        std = math.sqrt(math.fsum((v - mean) ** 2) / len(v))
        np.testing.assert_allclose(
            got_tr[:, c], (x[:, c].astype(np.float64) - mean) / (std + 1e-6), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            got_te[:, c], (x_te[:, c].astype(np.float64) - mean) / (std + 1e-6), rtol=1e-5, atol=1e-5
        )
    assert abs(float(got_tr.std()) - 1.0) < 1e-3


# -------------------------------------------------------------------------------- CLI


def test_an_unexpected_failure_is_one_line_with_exit_1(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "_verify", broken)
    assert cli.main(["verify", "--impl", "x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hyperzzw verify: RuntimeError: boom; second line (run with --debug for the traceback)"]
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["verify", "--impl", "x", "--debug"])


def test_bench_failures_are_one_line(monkeypatch, capsys):
    import hyperzzw_core.benchmarks as bench

    def broken(argv, prog):
        raise ValueError("--repeat: expected a positive integer, got 0")

    monkeypatch.setattr(bench, "main", broken)
    assert cli.main(["bench", "run"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "hyperzzw bench: --repeat: expected a positive integer, got 0"
    ]


def test_verify_of_a_missing_implementation_is_one_line_with_exit_2(capsys):
    assert cli.main(["verify", "--impl", "no_such_module_xyz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hyperzzw verify: cannot load implementation")


@pytest.mark.parametrize("grad", [True, False], ids=["grad mode", "no_grad: inference mode"])
def test_terminator_refuses_bad_inputs_with_and_without_gradients(grad):
    """The eval forward without gradients runs under inference mode (Terminator.forward_with_kernels):
    its inputs are refused as with gradients, one error naming the argument, expected and actual."""
    torch = pytest.importorskip("torch")
    from hyperzzw_core.adapters.torch import Terminator

    model = Terminator(R.tiny(), seed=0, dtype=torch.float64).eval()
    good = torch.zeros((2, 1, 8, 8), dtype=torch.float64)
    cases = [
        (np.zeros((2, 1, 8, 8)), TypeError, r"x: expected a torch\.Tensor, got ndarray"),
        (torch.zeros((2, 1, 8, 9), dtype=torch.float64), ValueError, r"x: expected \(B, 1, 8, 8\).*got \(2, 1, 8, 9\)"),
        (torch.zeros((0, 1, 8, 8), dtype=torch.float64), ValueError, r"x: expected \(B, 1, 8, 8\).*got \(0, 1, 8, 8\)"),
        (good.float(), TypeError, r"x: expected torch\.float64 on cpu .*got torch\.float32 on cpu"),
    ]
    with torch.set_grad_enabled(grad):
        for x, kind, message in cases:
            for call in (
                model,
                lambda t: model.forward_with_kernels(t)[0],
                lambda t: model.loss(t, torch.zeros(t.shape[0], dtype=torch.int64)),
            ):
                with pytest.raises(kind, match=message):
                    call(x)
        with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 10\)"):
            model.loss(good, torch.tensor([0, 10]))
        assert torch.isfinite(model(good)).all()  # the same model takes good input after each refusal


@pytest.mark.parametrize("which", ["x_pre", "x_pre_pre"])
def test_sfne_block_refuses_earlier_outputs_whose_channels_do_not_divide(which):
    """x_pre and x_pre_pre are tiled to the block's C channels (§1.3): a width that does not divide C
    is refused, naming the argument, its width and C, by the reference, the array-API block and the
    torch module in eval mode without gradients (where the block's bottleneck weights come from the
    kernel cache, formed without x_pre's width, and its layout is checked at the call)."""
    torch = pytest.importorskip("torch")
    from hyperzzw_core.adapters.torch import SFNEBlock

    cfg = R.tiny()
    bp, c = R.init_params(cfg, 0)["blocks"][3], cfg.block_channels[3]  # block 3 takes both
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, c) + cfg.spatial_shape)
    pre = {"x_pre": rng.standard_normal((2, cfg.out_channels[1]) + cfg.spatial_shape)}
    pre["x_pre_pre"] = rng.standard_normal((2, cfg.out_channels[0]) + cfg.spatial_shape)
    pre[which] = rng.standard_normal((2, 3) + cfg.spatial_shape)  # 3 does not divide c = 8
    message = rf"{which}: its 3 channels must divide the block's {c} input channels"
    module = SFNEBlock(cfg, 3, seed=0, dtype=torch.float64).eval()
    as_torch = {k: torch.from_numpy(v) for k, v in pre.items()}
    for call in (
        lambda: R.sfne_block(bp, z, **pre, groups=cfg.ibs_groups),
        lambda: core.sfne_block(bp, z, **pre, groups=cfg.ibs_groups),
        lambda: module(torch.from_numpy(z), **as_torch),
    ):
        with torch.no_grad(), pytest.raises(ValueError, match=message):
            call()
