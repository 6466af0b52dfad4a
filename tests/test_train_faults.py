"""Fault injection for ``hyperzzw train`` and ``show-kernels`` (issue 13: no silent pass).

Every fault must end in the documented refusal (one line on stderr, exit 2; exit 3 for a diverged
run) and lose nothing: the checkpoint that was there stays loadable and a resumed run reaches the
weights of an uninterrupted one bit for bit. SIGKILLs are delivered at points the killed process
announces on a pipe (no sleeps, no timing guesses). Runs use a small synthetic data set (48
training images of 8×8, 3 classes) and the ``tiny`` network, so the file stays within CI time.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("filelock")

from hyperzzw_core import cli  # noqa: E402
from hyperzzw_core.train import checkpoint  # noqa: E402
from hyperzzw_core.train.loop import TrainSettings, train  # noqa: E402

TIMEOUT = 300


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, spinning OpenMP threads make each epoch ~30× slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _write_data(path: Path, **changes: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.random((48, 8, 8)).astype(np.float32),
        "y_train": np.arange(48) % 3,
        "x_test": rng.random((12, 8, 8)).astype(np.float32),
        "y_test": np.arange(12) % 3,
    }
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return _write_data(tmp_path_factory.mktemp("data") / "small.npz")


def _args(data: Path, out: Path, *extra: str, epochs: int = 2) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
        "--config",
        "tiny",
        "--val-fraction",
        "0.25",
        "--batch-size",
        "12",
        "--eval-batch-size",
        "12",
        "--warmup-epochs",
        "1",
        "--epochs",
        str(epochs),
        "--dtype",
        "float64",
        "--out",
        str(out),
        *extra,
    ]


def _settings(data: Path, out: Path, **kw) -> TrainSettings:
    base = dict(
        data=str(data),
        config="tiny",
        val_fraction=0.25,
        batch_size=12,
        eval_batch_size=12,
        warmup_epochs=1,
        epochs=2,
        dtype="float64",
        out=str(out),
    )
    return TrainSettings(**{**base, **kw})


def _cli(capsys, argv: list[str]) -> tuple[int, str]:
    """Run the CLI in this process; (exit status, its last stderr line)."""
    capsys.readouterr()
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def _weights(out: Path) -> dict:
    return checkpoint.load(out / "checkpoint.pt")["model"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def reference_run(data_file, tmp_path_factory) -> Path:
    """An uninterrupted 2-epoch run: what every interrupted-and-resumed run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(_settings(data_file, out))
    return out


# --------------------------------------------------------------------------- SIGKILL

_KILLABLE = r"""
import json, os, sys
from hyperzzw_core.train import checkpoint
mode, argv = sys.argv[1], json.loads(sys.argv[2])
real_save, real_replace, saves = checkpoint.save, os.replace, []

def save(path, state):                      # announce each finished checkpoint
    real_save(path, state)
    saves.append(path)
    print(f"SAVED {len(saves)}", flush=True)

def replace(src, dst):                      # block the second save after its temporary file is written
    if mode == "in-save" and ".checkpoint.pt." in str(src) and len(saves) == 1:
        print("IN-SAVE", flush=True)
        sys.stdin.read()
    return real_replace(src, dst)

checkpoint.save, os.replace = save, replace
from hyperzzw_core.cli import main
sys.exit(main(argv))
"""


def _run_until(mode: str, argv: list[str], marker: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, mode, json.dumps(argv)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    for line in proc.stdout:
        if line.strip() == marker:
            return proc
    proc.wait(TIMEOUT)
    proc.stdin.close()
    proc.stdout.close()
    raise AssertionError(f"the run ended (exit {proc.returncode}) before {marker!r}")


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(TIMEOUT)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_during_training_then_resume_is_bit_identical(data_file, reference_run, tmp_path, capsys):
    out = tmp_path / "run"
    proc = _run_until("training", _args(data_file, out), "SAVED 1")  # epoch 2 is training
    _kill(proc)
    assert checkpoint.load(out / "checkpoint.pt")["epoch"] in (0, 1)  # loadable, digest intact
    code, last = _cli(capsys, _args(data_file, out, "--resume"))
    assert code == 0, last
    _assert_same_weights(out, reference_run)
    assert not checkpoint.leftover_temporaries(out)


def test_sigkill_during_a_save_leaves_the_old_checkpoint_and_the_temp_file_is_removed(
    data_file, reference_run, tmp_path, capsys
):
    out = tmp_path / "run"
    proc = _run_until("in-save", _args(data_file, out), "IN-SAVE")
    before = (out / "checkpoint.pt").read_bytes()
    leftovers = checkpoint.leftover_temporaries(out)
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the half-finished save
    _kill(proc)
    assert (out / "checkpoint.pt").read_bytes() == before
    assert checkpoint.load(out / "checkpoint.pt")["epoch"] == 0
    capsys.readouterr()
    assert cli.main(_args(data_file, out, "--resume")) == 0
    err = capsys.readouterr().err
    assert f"removed {leftovers[0].name}" in err and "stale" in err
    assert not checkpoint.leftover_temporaries(out)
    _assert_same_weights(out, reference_run)


# ---------------------------------------------------------------- one run per folder

_HOLDER = r"""
import sys
from hyperzzw_core.train import checkpoint
with checkpoint.run_lock(sys.argv[1]):
    print("LOCKED", flush=True)
    sys.stdin.read()
"""


def test_a_second_run_on_one_out_is_refused_and_a_killed_holders_lock_is_stale(data_file, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "LOCKED"
    code, last = _cli(capsys, _args(data_file, out, epochs=1))
    assert code == 2
    assert "another run is using this folder" in last and f"pid {holder.pid}" in last
    assert not (out / "checkpoint.pt").exists()  # refused before any training
    _kill(holder)
    capsys.readouterr()
    assert cli.main(_args(data_file, out, epochs=1)) == 0
    assert "its lock was stale" in capsys.readouterr().err
    assert not (out / checkpoint.HOLDER_NAME).exists()  # released at the end


def test_the_lock_refuses_within_one_process_too(tmp_path):
    with checkpoint.run_lock(tmp_path / "a"):
        with pytest.raises(checkpoint.RunFolderError, match=f"pid {os.getpid()}"):
            with checkpoint.run_lock(tmp_path / "a"):
                pass
    with checkpoint.run_lock(tmp_path / "a"):  # free again afterwards
        pass


def test_an_existing_run_is_not_overwritten_silently(data_file, reference_run, tmp_path, capsys):
    before = (reference_run / "checkpoint.pt").read_bytes()
    code, last = _cli(capsys, _args(data_file, reference_run))
    assert code == 2 and "already holds a run" in last and "--resume" in last
    assert (reference_run / "checkpoint.pt").read_bytes() == before


def test_an_unwritable_out_is_refused_before_training(data_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, last = _cli(capsys, _args(data_file, blocker / "run"))
    assert code == 2 and "--out" in last and "not writable" in last


# --------------------------------------------------------------- corrupted checkpoints


@pytest.fixture()
def copied_checkpoint(reference_run, tmp_path) -> Path:
    out = tmp_path / "copy"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes((reference_run / "checkpoint.pt").read_bytes())
    return out


def test_the_digest_is_the_sha256_of_the_payload(reference_run):
    wrapper = torch.load(reference_run / "checkpoint.pt", weights_only=True)
    payload = wrapper["payload"].numpy().tobytes()
    assert wrapper["format"] == checkpoint.FORMAT
    assert hashlib.sha256(payload).hexdigest() == wrapper["sha256"]


@pytest.mark.parametrize("where", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("count", [1, 64])
def test_flipped_bytes_are_refused_on_resume_and_in_show_kernels(data_file, copied_checkpoint, where, count, capsys):
    path = copied_checkpoint / "checkpoint.pt"
    raw = bytearray(path.read_bytes())
    start = int(where * len(raw))
    for i in range(start, start + count):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    code, last = _cli(capsys, _args(data_file, copied_checkpoint, "--resume", "--epochs", "3"))
    assert code == 2 and ("digest mismatch" in last or "corrupted" in last), last
    assert path.read_bytes() == bytes(raw)  # left as found, not overwritten
    code, last = _cli(capsys, ["show-kernels", str(path), "-o", str(copied_checkpoint / "k.png")])
    assert code == 2 and ("digest mismatch" in last or "corrupted" in last), last
    assert not (copied_checkpoint / "k.png").exists()


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.999])
def test_truncated_checkpoints_are_refused(copied_checkpoint, keep, capsys):
    path = copied_checkpoint / "checkpoint.pt"
    raw = path.read_bytes()
    path.write_bytes(raw[: int(keep * len(raw))])
    code, last = _cli(capsys, ["show-kernels", str(path), "-o", str(copied_checkpoint / "k.png")])
    assert code == 2 and "checkpoint" in last and "Traceback" not in last, last


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_foreign_and_malicious_checkpoints_are_refused_in_one_line(tmp_path, reference_run, capsys):
    plain = tmp_path / "plain.pt"  # a state saved without the digest
    torch.save(torch.load(reference_run / "checkpoint.pt", weights_only=True), tmp_path / "wrapped.pt")
    torch.save({"model": {}, "epoch": 0}, plain)
    code, last = _cli(capsys, ["show-kernels", str(plain)])
    assert code == 2 and "content digest" in last
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Evil()}, evil)
    code, last = _cli(capsys, ["show-kernels", str(evil)])
    assert code == 2 and "refused" in last
    code, last = _cli(capsys, ["show-kernels", str(tmp_path / "missing.pt")])
    assert code == 2 and "no checkpoint" in last


# ------------------------------------------------------------- settings on resume


@pytest.fixture(scope="module")
def half_run(data_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("half") / "run"
    train(_settings(data_file, out, stop_after=1))
    return out


@pytest.mark.parametrize(
    "extra, named",
    [
        (
            ["--lr", "0.5", "--seed", "5"],
            ["--lr 0.002 in the checkpoint, 0.5 now", "--seed 0 in the checkpoint, 5 now"],
        ),
        (["--dtype", "float32"], ["--dtype 'float64' in the checkpoint, 'float32' now"]),
        (["--optimizer", "adamw"], ["--optimizer 'kar3' in the checkpoint, 'adamw' now"]),
        (["--mode", "1d", "--config", "tiny_1d"], ["--mode '2d'", "--config 'tiny'"]),
        (["--batch-size", "6"], ["--batch-size 12 in the checkpoint, 6 now"]),
    ],
)
def test_changed_settings_on_resume_are_refused_naming_each(data_file, half_run, extra, named, capsys):
    before = (half_run / "checkpoint.pt").read_bytes()
    code, last = _cli(capsys, _args(data_file, half_run, "--resume", *extra))
    assert code == 2, last
    for text in named:
        assert text in last
    assert (half_run / "checkpoint.pt").read_bytes() == before


def test_other_data_on_resume_is_refused(data_file, half_run, tmp_path, capsys):
    other = _write_data(tmp_path / "other.npz", y_train=(np.arange(48) + 1) % 3)
    code, last = _cli(capsys, _args(other, half_run, "--resume"))
    assert code == 2 and "data arrays sha256" in last


def test_the_python_api_compares_every_setting(data_file, half_run):
    with pytest.raises(ValueError, match=r"--lr 0.002 in the checkpoint, 0.5 now"):
        train(_settings(data_file, half_run, resume=True, lr=0.5))


def test_safe_changes_are_applied_and_recorded(data_file, half_run, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes((half_run / "checkpoint.pt").read_bytes())
    # only --resume, --out and a new eval batch size: everything else comes from the checkpoint
    assert cli.main(["train", "--out", str(out), "--resume", "--eval-batch-size", "5"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finished"] and len(metrics["epochs"]) == 2
    assert metrics["settings"]["eval_batch_size"] == 5 and metrics["settings"]["lr"] == 0.002
    assert metrics["resumes"] == [{"at_epoch": 1, "changed": {"eval_batch_size": [12, 5]}}]
    assert checkpoint.load(out / "checkpoint.pt")["settings"]["eval_batch_size"] == 5


# ------------------------------------------------------------------ bad data and labels


@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            {"x_train": np.where(np.arange(48 * 64).reshape(48, 8, 8) == 200, np.nan, 0.5)},
            "x_train holds 1 non-finite value (NaN/Inf); first at index (3, 0, 1, 0) = nan",
        ),
        ({"x_test": np.full((12, 8, 8), np.inf)}, "x_test holds 768 non-finite values"),
        ({"y_train": (np.arange(48) % 3) - 1}, "y_train holds 16 negative labels; first at index 0 = -1"),
        ({"y_train": np.where(np.arange(48) == 5, 10**12, np.arange(48) % 3)}, "y_train[5] = 1000000000000 implies K"),
        ({"y_train": np.arange(48) % 3 * 2}, "2 of 5 classes never occur in y_train: [1, 3]"),
        ({"y_train": (np.arange(48) % 3).astype(np.float64)}, "y_train must hold 48 integer labels"),
        ({"x_train": np.zeros((0, 8, 8)), "y_train": np.zeros(0, np.int64)}, "the train split is empty"),
    ],
)
def test_bad_data_is_refused_before_training(tmp_path, changes, expected, capsys):
    bad = _write_data(tmp_path / "bad.npz", **changes)
    code, last = _cli(capsys, _args(bad, tmp_path / "run"))
    assert code == 2 and expected in last, last
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_labels_beyond_num_classes_are_refused(data_file, tmp_path, capsys):
    code, last = _cli(capsys, _args(data_file, tmp_path / "run", "--num-classes", "2"))
    assert code == 2 and "16 labels >= --num-classes 2" in last
    code, last = _cli(capsys, _args(data_file, tmp_path / "run", "--num-classes", "4"))
    assert code == 2 and "1 of 4 classes never occur in y_train: [3]" in last


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"just text", "not an .npz archive"),
        (None, "truncated or corrupted .npz archive"),
    ],
)
def test_unreadable_data_files_are_refused(tmp_path, data_file, content, expected, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content if content is not None else data_file.read_bytes()[:300])
    code, last = _cli(capsys, _args(bad, tmp_path / "run"))
    assert code == 2 and expected in last and "pickle" not in last.replace("never unpickled", ""), last


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
        (["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
        (["--val-fraction", "0.001"], "leaves 0 for validation"),
        (["--seed", "-3"], "--seed: expected a non-negative integer seed, got -3"),
        (["--lr", "nan"], "--lr: expected a finite number"),
        (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(data_file, tmp_path, extra, expected, capsys):
    capsys.readouterr()
    code = cli.main(_args(data_file, tmp_path / "run", *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err


def test_debug_shows_the_traceback(data_file, tmp_path):
    with pytest.raises(ValueError, match="--batch-size"):
        cli.main(_args(data_file, tmp_path / "run", "--batch-size", "0", "--debug"))


# ------------------------------------------------------------------------- divergence


def test_a_diverging_run_stops_with_exit_3_and_strict_json(data_file, tmp_path, capsys):
    out = tmp_path / "run"
    code, last = _cli(capsys, _args(data_file, out, "--optimizer", "sgd", "--lr", "1e30", "--warmup-epochs", "0"))
    assert code == 3 and "training diverged: the loss is" in last, last

    def refuse(token):
        raise AssertionError(f"metrics.json holds {token}")

    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["finished"] is False and metrics["diverged"].startswith("training diverged")
