"""Training (issue 6): data, schedule, checkpoints, resume, metrics, plots and two-process DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from hyperzzw_core import reference as R  # noqa: E402
from hyperzzw_core.train import checkpoint, data  # noqa: E402
from hyperzzw_core.train.loop import TrainSettings, train  # noqa: E402
from hyperzzw_core.train.schedule import lr_factor  # noqa: E402

QUICK = dict(config="tiny", train_limit=96, batch_size=32, warmup_epochs=1, dtype="float64")


def test_schedule_closed_form():
    warm, total = 10, 110
    assert lr_factor(0, warm, total) == pytest.approx(1e-8)
    assert lr_factor(5, warm, total) == pytest.approx(1e-8 + (1 - 1e-8) * 0.5)
    assert lr_factor(warm, warm, total) == pytest.approx(1.0)
    assert lr_factor(60, warm, total) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_factor(85, warm, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
    assert lr_factor(total, warm, total) == pytest.approx(0.0, abs=1e-15)
    assert max(lr_factor(t, warm, total) for t in range(total)) == pytest.approx(1.0)  # peak exactly lr


def test_digits_split_standardisation_and_sequences():
    d2 = data.load("digits", mode="2d")
    assert d2.x_train.shape[1:] == (1, 8, 8) and d2.num_classes == 10
    assert len(d2.x_test) == 360 and len(d2.x_val) + len(d2.x_train) == 1797 - 360
    assert abs(len(d2.x_val) - 0.1 * (1797 - 360)) <= 1
    assert abs(float(d2.x_train.mean())) < 1e-5 and abs(float(d2.x_train.std()) - 1) < 1e-3
    d1 = data.load("digits", mode="1d")
    np.testing.assert_array_equal(d1.x_train, d2.x_train.reshape(len(d2.x_train), 1, 64))
    assert d1.grid == (8, 8)
    p = data.load("digits", mode="1d", permute=3)
    perm = np.random.default_rng(3).permutation(64)
    np.testing.assert_array_equal(p.x_test, d1.x_test[:, :, perm])
    assert not np.array_equal(p.x_test, d1.x_test)


def test_npz_data_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    good = tmp_path / "good.npz"
    np.savez(
        good,
        x_train=rng.random((40, 6, 6)),
        y_train=rng.integers(0, 3, 40),
        x_test=rng.random((10, 6, 6)),
        y_test=rng.integers(0, 3, 10),
    )
    d = data.load(data=good, mode="2d", val_fraction=0.25)
    assert d.x_train.shape == (30, 1, 6, 6) and d.x_val.shape == (10, 1, 6, 6) and d.num_classes == 3
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=rng.random((4, 6, 6)), y_train=rng.integers(0, 3, 4))
    with pytest.raises(ValueError, match="missing arrays"):
        data.load(data=bad)
    rect = tmp_path / "rect.npz"
    np.savez(
        rect,
        x_train=rng.random((4, 6, 5)),
        y_train=rng.integers(0, 3, 4),
        x_test=rng.random((2, 6, 5)),
        y_test=rng.integers(0, 3, 2),
    )
    with pytest.raises(ValueError, match="square"):
        data.load(data=rect)
    with pytest.raises(ValueError, match="1d"):
        data.load(mode="2d", permute=1)


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    checkpoint.save(path, {"w": torch.ones(3), "epoch": 1})

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError):
        checkpoint.save(path, {"w": torch.zeros(3), "epoch": 2})
    monkeypatch.undo()
    state = checkpoint.load(path)  # the old checkpoint survives intact
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def _weights(out: Path) -> dict:
    return checkpoint.load(out / "checkpoint.pt")["model"]


def test_resume_reaches_the_uninterrupted_weights(tmp_path):
    full = tmp_path / "full"
    train(TrainSettings(epochs=2, out=str(full), **QUICK))
    part = tmp_path / "part"
    first = train(TrainSettings(epochs=2, out=str(part), stop_after=1, **QUICK))
    assert not first["finished"] and len(first["epochs"]) == 1
    second = train(TrainSettings(epochs=2, out=str(part), resume=True, **QUICK))
    assert second["finished"]
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    full_hist = json.loads((full / "metrics.json").read_text())["epochs"]
    for h1, h2 in zip(full_hist, second["epochs"], strict=True):
        assert h1["train_loss"] == h2["train_loss"] and h1["test_acc"] == h2["test_acc"]


def test_metrics_match_an_independent_evaluation_and_plots_are_written(tmp_path):
    out = tmp_path / "run"
    summary = train(TrainSettings(epochs=1, out=str(out), **QUICK))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(summary))
    epoch = metrics["epochs"][0]
    for key in ("train_loss", "slow_loss", "val_acc", "test_acc", "wall_seconds", "lr"):
        assert key in epoch
    assert metrics["parameters"] == R.count_params(R.init_params(R.tiny()))
    # the reported test accuracy, recomputed with the NumPy reference from the saved weights
    state = checkpoint.load(out / "checkpoint.pt")
    params = R.unflatten({k: v.numpy() for k, v in state["model"].items()})
    config = R.TerminatorConfig.from_dict(state["config"])
    d = data.load("digits", mode="2d")
    correct = 0
    for i in range(0, len(d.x_test), 64):
        logits, _ = R.terminator_forward(params, d.x_test[i : i + 64].astype(np.float64), config)
        correct += int((logits.argmax(axis=1) == d.y_test[i : i + 64]).sum())
    assert epoch["test_acc"] == pytest.approx(correct / len(d.x_test))
    for png in ("curves.png", "kernels.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "hyperzzw_core.cli",
            "show-kernels",
            str(out / "checkpoint.pt"),
            "-o",
            str(tmp_path / "k.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_clear(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "hyperzzw_core.cli", "train", "--config", "no_such_preset", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and "unknown preset" in res.stderr
    toml = tmp_path / "bad.toml"
    toml.write_text("ibs_groups = 12\nnot_a_field = 3\n")
    res = subprocess.run(
        [sys.executable, "-m", "hyperzzw_core.cli", "train", "--config", str(toml), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and "not_a_field" in res.stderr


def test_two_processes_match_one_process_on_the_global_batch(tmp_path):
    """torchrun with 2 CPU processes (gloo): identical weights on both, equal to one process.

    SGD and no L2 term: Kar3 and AdamW, and the §2.13 regulariser (a plain norm, whose gradient is
    sign(p) for a scalar), turn round-off in gradients that are zero in exact arithmetic into
    lr-sized steps, which would hide the float64-level agreement this test checks.
    """
    common = [
        "--config",
        "tiny",
        "--train-limit",
        "64",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--dtype",
        "float64",
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--l2-reg",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    multi = tmp_path / "multi"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "hyperzzw_core.cli",
            "train",
            *common,
            "--out",
            str(multi),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    single = tmp_path / "single"
    res = subprocess.run(
        [sys.executable, "-m", "hyperzzw_core.cli", "train", *common, "--out", str(single)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    metrics = json.loads((multi / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["max_parameter_difference_across_processes"] == 0.0
    a, b = _weights(multi), _weights(single)
    init = R.flatten(R.init_params(R.tiny(), 0))
    moved = 0
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-9, atol=1e-12, err_msg=k)
        moved += not np.array_equal(b[k].numpy(), init[k])
    assert moved > 0.5 * len(a)  # the run trained: most tensors changed
