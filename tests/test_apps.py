"""The programs in apps/ run end to end as processes, on a small subset of the bundled MNIST.

Each program is started as `python apps/X.py ...` in a temporary working folder; the
tests check exit codes, what is printed, and the files written (the model loads and
predicts, the history JSON holds the epochs, the PNGs are PNGs). The error cases check
for one clear line on stderr, a non-zero exit and no traceback.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
APPS = ROOT / "apps"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK = ["--device", "cpu", "--limit-train", "600", "--limit-test", "200", "--seed", "3"]

try:
    import matplotlib  # noqa: F401

    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False


def run_app(script: str, *args: str, cwd: pathlib.Path, timeout: float = 120, env=None):
    """Run apps/<script> with this interpreter; the CompletedProcess (text output)."""
    environment = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    environment.pop("CONVNET_DEBUG", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, str(APPS / script), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


def assert_clear_error(result, *words: str, code: int | None = None) -> str:
    """A non-zero exit with one line on stderr holding every word, and no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    if code is not None:
        assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word.lower() in errors[0].lower(), errors[0]
    return errors[0]


def is_png(path: pathlib.Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One quick training run (600 digits, 1 epoch) shared by the tests that read its files."""
    folder = tmp_path_factory.mktemp("train")
    result = run_app("train_mnist.py", *QUICK, "--epochs", "1", "--out", "m/model.h5", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, result


# ---------------------------------------------------------------------------------------
# train_mnist.py


def test_help_explains_every_option(tmp_path):
    result = run_app("train_mnist.py", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in (
        "--arch", "--epochs", "--batch-size", "--optimizer", "--lr", "--weight-decay",
        "--clip-norm", "--val-split", "--early-stopping", "--no-early-stopping", "--patience",
        "--lr-schedule", "--augment", "--no-augment", "--seed", "--device", "--threads",
        "--data", "--out", "--resume", "--plot", "--quiet", "--limit-train", "--limit-test",
    ):  # fmt: skip
        assert re.search(rf"{re.escape(option)}\b", result.stdout), option
    assert "readme" in result.stdout and "best" in result.stdout
    assert "slowest-learned" in result.stdout.lower()


def test_training_prints_the_report(trained):
    _, result = trained
    out = result.stdout
    assert "device: CPU" in out
    assert "BLAS threads: 1 " in out  # the readme preset's default, read back from BLAS
    assert "Total" in out or "total" in out  # the model summary
    accuracy = re.search(r"test accuracy: ([\d.]+)%", out)
    assert accuracy, out
    assert 30.0 < float(accuracy.group(1)) <= 100.0  # 600 digits, one epoch: well above chance
    matrix_rows = [line for line in out.splitlines() if re.match(r"^\s+\d\s+(\s+\d+){10}\s", line)]
    assert len(matrix_rows) == 10, out
    assert sum(int(n) for row in matrix_rows for n in row.split()[1:11]) == 200
    assert "slowest-learned digits:" in out and "after epoch 1" in out


def test_training_writes_a_model_that_loads(trained):
    import convnet_io

    folder, result = trained
    model = convnet_io.load(str(folder / "m" / "model.h5"))
    probabilities = np.asarray(model.predict(np.zeros((3, 1, 28, 28), np.float32)))
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (folder / "m" / "model.ckpt.h5").is_file()
    assert not [p for p in (folder / "m").iterdir() if p.name.endswith(".tmp")]


def test_training_writes_history_and_curves(trained):
    folder, result = trained
    record = json.loads((folder / "m" / "model.history.json").read_text())
    assert len(record["history"]["loss"]) == 1 and len(record["history"]["acc"]) == 1
    assert record["epochs_completed"] == 1
    printed = float(re.search(r"test accuracy: ([\d.]+)%", result.stdout).group(1))
    assert abs(100 * record["test"]["accuracy"] - printed) < 0.01
    matrix = np.array(record["test"]["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 200
    assert abs(np.trace(matrix) / 200 - record["test"]["accuracy"]) < 1e-9
    assert record["settings"]["arch"] == "readme"
    reference = folder / "m" / "reference.txt"
    reference.write_text("made with open()")  # the mode any new file gets under this umask
    mode = reference.stat().st_mode & 0o777
    assert (folder / "m" / "model.history.json").stat().st_mode & 0o777 == mode
    curves = folder / "m" / "model.curves.png"
    if HAVE_MATPLOTLIB:
        assert is_png(curves)
        assert curves.stat().st_mode & 0o777 == mode
    else:
        assert not curves.exists() and "matplotlib is not installed" in result.stdout


def test_resume_continues_to_the_total_epochs(trained, tmp_path):
    folder, _ = trained
    checkpoint = folder / "m" / "model.ckpt.h5"
    result = run_app(
        "train_mnist.py", *QUICK, "--epochs", "2", "--resume", checkpoint, "--out",
        "resumed.h5", "--quiet", "--no-augment", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((tmp_path / "resumed.history.json").read_text())
    assert record["epochs_completed"] == 2
    assert len(record["history"]["loss"]) == 2
    first = json.loads((folder / "m" / "model.history.json").read_text())
    assert record["history"]["loss"][0] == first["history"]["loss"][0]  # kept, not retrained
    assert "test accuracy" in result.stdout


def test_threads_option_sets_the_blas_thread_count(tmp_path):
    """The count BLAS reports for itself (OpenBLAS through ctypes, else threadpoolctl)."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import _common\n"
        "_common.set_blas_threads(int(sys.argv[2]))\n"
        "count = _common.openblas_threads()\n"
        "if count is None:\n"
        "    from threadpoolctl import threadpool_info\n"
        "    count = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'][0]\n"
        "print(count)\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    counts = []
    for wanted in (1, 2):
        result = subprocess.run(
            [sys.executable, "-c", probe, str(APPS), str(wanted)],
            capture_output=True,
            text=True,
            timeout=60,
            env=environment,
        )
        assert result.returncode == 0, result.stderr
        counts.append(result.stdout.strip())
    assert counts == ["1", "2"]


def test_threads_can_be_changed_after_numpy_is_imported(tmp_path):
    """Without threadpoolctl, OpenBLAS's own setter resizes the pool of a loaded NumPy."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import numpy, _common\n"
        "sys.modules['threadpoolctl'] = None  # as if it were not installed\n"
        "before = _common.openblas_threads()\n"
        "_common.set_blas_threads(1)\n"
        "print(before, _common.openblas_threads())\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    environment["OPENBLAS_NUM_THREADS"] = "2"
    result = subprocess.run(
        [sys.executable, "-c", probe, str(APPS)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "1"]


def test_training_on_missing_data_dir_is_one_clear_line(tmp_path):
    result = run_app("train_mnist.py", "--data", tmp_path / "nowhere", *QUICK[:2], cwd=tmp_path)
    assert_clear_error(result, "nowhere", "does not exist", code=1)
    assert not (tmp_path / "models" / "mnist.h5").exists()


def test_training_on_a_corrupt_data_file_is_one_clear_line(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    for source in (ROOT / "data" / "mnist").glob("*.gz"):
        (data / source.name).symlink_to(source)
    (data / "t10k-labels-idx1-ubyte.gz").unlink()
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b this is not gzip data")
    result = run_app("train_mnist.py", "--data", data, *QUICK, cwd=tmp_path)
    assert_clear_error(result, "t10k-labels", code=1)


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--arch", "huge"], "--arch"),
        (["--lr", "-1"], "--lr"),
        (["--no-such-option"], "no-such-option"),
        (["--early-stopping"], "val-split"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--clip-norm", "nan"], "--clip-norm"),
        (["--weight-decay", "nan"], "--weight-decay"),
        (["--val-split", "nan"], "--val-split"),
    ],
)
def test_bad_arguments_are_one_clear_line(tmp_path, args, word):
    result = run_app("train_mnist.py", *args, cwd=tmp_path)
    assert_clear_error(result, word, code=2)


def test_resuming_asks_for_more_epochs_than_the_checkpoint_has(trained, tmp_path):
    """--epochs is the total: a checkpoint that has them all is refused before any work, not
    'trained' for 0 epochs and saved over --out."""
    folder, _ = trained
    checkpoint = folder / "m" / "model.ckpt.h5"  # one epoch
    result = run_app(
        "train_mnist.py", *QUICK, "--epochs", "1", "--resume", checkpoint, "--out", "again.h5",
        cwd=tmp_path,
    )  # fmt: skip
    line = assert_clear_error(result, "--epochs", "model.ckpt.h5", "more than 1", code=2)
    assert "already trained 1 epoch" in line
    assert "data:" not in result.stdout  # refused before loading the data
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def sgd_checkpoint(tmp_path_factory):
    """A one-epoch checkpoint of the readme network trained with sgd, lr 0.05 (not the
    preset's adam, lr 0.002)."""
    folder = tmp_path_factory.mktemp("sgd")
    result = run_app(
        "train_mnist.py", *QUICK, "--limit-train", "300", "--epochs", "1", "--optimizer", "sgd",
        "--lr", "0.05", "--no-augment", "--quiet", "--out", "sgd.h5", cwd=folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return folder / "sgd.ckpt.h5"


@pytest.mark.parametrize(
    ("option", "given", "saved"),
    [
        ("--optimizer", "adam", "optimizer sgd"),
        ("--lr", "0.5", "lr 0.05"),
        ("--weight-decay", "0.001", "weight decay 0"),
        ("--clip-norm", "1", "clip norm none"),
    ],
)
def test_resuming_refuses_an_optimizer_option_the_checkpoint_contradicts(
    sgd_checkpoint, tmp_path, option, given, saved
):
    """The checkpoint's optimizer continues (with its state): an option that would be
    silently ignored is refused, before the data is loaded."""
    result = run_app(
        "train_mnist.py", *QUICK, "--epochs", "2", "--resume", sgd_checkpoint, option, given,
        "--out", "again.h5", cwd=tmp_path,
    )  # fmt: skip
    line = assert_clear_error(result, code=2)
    assert line == (
        f"train_mnist.py: error: Invalid value for {option}: {given} was given, but the "
        f"checkpoint {sgd_checkpoint} has {saved}; resuming continues the checkpoint's "
        f"optimizer: leave {option} out, or train afresh without --resume "
        "(see train_mnist.py --help)"
    )
    assert "data:" not in result.stdout and not list(tmp_path.iterdir())


def test_resuming_shows_and_records_the_checkpoints_optimizer(sgd_checkpoint, tmp_path):
    """Not the preset's adam, lr 0.002: the banner and history.json give what is in effect.
    An option equal to the checkpoint's is accepted."""
    result = run_app(
        "train_mnist.py", *QUICK, "--limit-train", "300", "--epochs", "2", "--resume",
        sgd_checkpoint, "--lr", "0.05", "--no-augment", "--out", "resumed.h5", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "training 'readme': 2 epochs, batch 64, sgd lr 0.05, schedule cosine" in result.stdout
    settings = json.loads((tmp_path / "resumed.history.json").read_text())["settings"]
    assert {key: settings[key] for key in ("optimizer", "lr", "weight_decay", "clip_norm")} == {
        "optimizer": "sgd",
        "lr": 0.05,
        "weight_decay": 0.0,
        "clip_norm": None,
    }


def test_resuming_with_another_arch_names_the_one_that_matches(trained, tmp_path):
    folder, _ = trained
    checkpoint = folder / "m" / "model.ckpt.h5"  # the readme network
    result = run_app(
        "train_mnist.py", *QUICK, "--arch", "best", "--epochs", "2", "--resume", checkpoint,
        cwd=tmp_path,
    )  # fmt: skip
    line = assert_clear_error(result, code=2)
    assert line == (
        f"train_mnist.py: error: Invalid value for --arch: 'best' does not match the checkpoint "
        f"{checkpoint}, which holds the 'readme' network: give --arch readme to resume it "
        "(see train_mnist.py --help)"
    )
    other = save_small_model(tmp_path / "other.ckpt.h5")  # Flatten-Dense: no preset
    result = run_app("train_mnist.py", *QUICK, "--epochs", "2", "--resume", other, cwd=tmp_path)
    line = assert_clear_error(result, code=1)
    assert line == (
        f"train_mnist.py: error: {other}: its network is none of the presets (readme, best), "
        "so it is not a checkpoint of train_mnist.py"
    )


def test_resuming_from_a_corrupt_or_missing_checkpoint_is_one_clear_line(tmp_path):
    result = run_app("train_mnist.py", *QUICK, "--resume", tmp_path / "gone.ckpt.h5", cwd=tmp_path)
    assert_clear_error(result, "gone.ckpt.h5", "does not exist", code=1)
    corrupt = tmp_path / "bad.ckpt.h5"
    corrupt.write_bytes(b"not a model at all")
    result = run_app("train_mnist.py", *QUICK, "--resume", corrupt, cwd=tmp_path)
    assert_clear_error(result, "bad.ckpt.h5", code=1)


def test_unwritable_output_fails_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    started = time.perf_counter()
    result = run_app("train_mnist.py", *QUICK, "--out", blocker / "model.h5", cwd=tmp_path)
    assert_clear_error(result, "a-file", code=1)
    assert time.perf_counter() - started < 30  # refused at once, not after training


@pytest.mark.skipif(not pathlib.Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_that_takes_no_files_fails_before_the_work(tmp_path):
    """Even root, whom permissions do not stop, cannot create files in /proc: the apps try
    one up front instead of failing on the save after the training or the evaluation."""
    result = run_app("train_mnist.py", *QUICK, "--out", "/proc/mnist.h5", cwd=tmp_path)
    assert_clear_error(result, "/proc", code=1)
    assert "epoch" not in result.stdout and "data:" not in result.stdout
    result = run_app(
        "evaluate.py", tmp_path / "no-model.h5", "--wrong", "/proc/wrong.png", cwd=tmp_path
    )
    assert_clear_error(result, "/proc", code=1)  # before even looking for the model


# Runs a program with os.access saying that the file argv[1] may not be written, as it says
# to a user other than root for a read-only file (root may write any file, so a test that
# made the file read-only would see nothing when run as root).
READ_ONLY_DRIVER = """
import os, runpy, sys
denied = os.path.realpath(sys.argv[1])
real_access = os.access
def access(path, mode, *args, **kwargs):
    if mode & os.W_OK and isinstance(path, (str, os.PathLike)):
        if os.path.realpath(path) == denied:
            return False
    return real_access(path, mode, *args, **kwargs)
os.access = access
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_writable_refuses_a_read_only_file(tmp_path, monkeypatch):
    """check_writable asks what convnet-io's atomic save asks before it writes (os.access),
    so a read-only model file is heard of before a run, not when saving after it."""
    monkeypatch.syspath_prepend(str(APPS))
    import _common

    path = tmp_path / "m.h5"
    path.write_bytes(b"a model")
    _common.check_writable(path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: mode != os.W_OK and real_access(p, mode))
    with pytest.raises(_common.AppError) as raised:
        _common.check_writable(path)
    assert str(raised.value) == f"cannot write {path}: permission denied (the file is read-only)"
    _common.check_writable(tmp_path / "new.h5")  # a file not there yet is created, not replaced


@pytest.mark.parametrize("name", ["m.h5", "m.ckpt.h5"])
def test_a_read_only_model_or_checkpoint_fails_before_training(tmp_path, name):
    """--out, or the checkpoint beside it, is a file the user may not replace: refused
    before the data is even loaded, and left as it was."""
    target = tmp_path / name
    target.write_bytes(b"an older model")
    target.chmod(0o444)
    result = subprocess.run(
        [sys.executable, "-c", READ_ONLY_DRIVER, str(target), str(APPS / "train_mnist.py"),
         *QUICK, "--epochs", "1", "--out", "m.h5"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )  # fmt: skip
    line = assert_clear_error(result, code=1)
    assert line == (
        f"train_mnist.py: error: cannot write {name}: permission denied (the file is read-only)"
    )
    assert "data:" not in result.stdout and "epoch" not in result.stdout
    assert target.read_bytes() == b"an older model"


def test_full_disk_while_saving_is_one_clear_line(tmp_path):
    """ENOSPC from the file system (simulated in the saving function) ends cleanly."""
    driver = (
        "import errno, runpy, sys\n"
        "import convnet_io.format as fmt, convnet_io.checkpoint as ck\n"
        "def full(path, *args, **kwargs):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
        "fmt.save = ck.save = full\n"
        "import convnet_io; convnet_io.save = full\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", driver, str(APPS / "train_mnist.py"), *QUICK, "--epochs", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert_clear_error(result, "no space left", code=1)
    assert not (tmp_path / "models" / "mnist.h5").exists()


def start_training(folder: pathlib.Path, *args: str) -> subprocess.Popen:
    environment = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    environment.pop("CONVNET_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, str(APPS / "train_mnist.py"), *map(str, args)],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


def test_ctrl_c_keeps_out_saves_the_progress_beside_it_and_says_how_to_resume(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    earlier = b"the model of an earlier, finished run"
    (models / "mnist.h5").write_bytes(earlier)
    process = start_training(tmp_path, *QUICK, "--epochs", "500", "--quiet")
    checkpoint = models / "mnist.ckpt.h5"
    deadline = time.monotonic() + 90
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert checkpoint.exists(), "no checkpoint was written after the first epoch"
    # The file appears when the save renames it into place; the callback records it a few
    # milliseconds later, once the save returns. An interrupt in between would rightly not
    # name it, so give the save time to return (a busy machine stretches those milliseconds).
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert "--resume models/mnist.ckpt.h5 --epochs 500" in stderr
    assert "models/mnist.interrupted.h5" in stderr and "left as it was" in stderr
    import convnet_io

    assert (models / "mnist.h5").read_bytes() == earlier  # only a finished run replaces it
    assert not (models / "mnist.history.json").exists()
    assert convnet_io.load(str(models / "mnist.interrupted.h5")).epoch >= 1
    assert convnet_io.load(str(checkpoint)).epoch >= 1


SWALLOWED_INTERRUPT = """
import os, signal, sys, weakref
sys.path.insert(0, sys.argv[1])
import _common

class Holder:
    pass

def callback(_):  # as h5py's clean-up runs: an exception here is printed and dropped
    os.kill(os.getpid(), signal.SIGINT)
    total = 0
    for step in range(100000):  # the handler runs here, inside the callback
        total += step

with _common.InterruptWatch() as watch:
    holder = Holder()
    ref = weakref.ref(holder, callback)
    del holder
    print("went on; interrupts counted:", watch.interrupts, flush=True)
    try:
        watch.on_epoch_end(None, 1, {})
    except KeyboardInterrupt:
        print("raised again at the epoch's end")
print("handler restored:", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""


def test_a_ctrl_c_swallowed_by_a_weakref_callback_is_raised_at_the_epochs_end():
    # Python drops an exception raised in a weakref callback ("Exception ignored in"): the
    # watch counts the Ctrl-C, and its fit callback raises it again
    result = subprocess.run(
        [sys.executable, "-c", SWALLOWED_INTERRUPT, str(APPS)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Exception ignored" in result.stderr and "KeyboardInterrupt" in result.stderr
    assert result.stdout.splitlines() == [
        "went on; interrupts counted: 1",
        "raised again at the epoch's end",
        "handler restored: True",
    ]


def test_ctrl_c_before_the_first_epoch_ends_saves_nothing(tmp_path):
    """The files of an earlier run (another architecture) stay, and the hint does not point
    at the earlier run's checkpoint."""
    models = tmp_path / "models"
    models.mkdir()
    earlier = {name: f"{name} of an earlier run".encode() for name in ("mnist.h5", "mnist.ckpt.h5")}
    for name, content in earlier.items():
        (models / name).write_bytes(content)
    process = start_training(tmp_path, "--device", "cpu", "--arch", "best", "--limit-test", "200")
    for line in process.stdout:  # the whole training set: the first epoch takes a while
        if line.startswith("training 'best'"):
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert "nothing was saved" in stderr and "models/mnist.h5 is left as it was" in stderr
    assert "--resume" not in stderr
    assert sorted(path.name for path in models.iterdir()) == sorted(earlier)
    for name, content in earlier.items():
        assert (models / name).read_bytes() == content


# ---------------------------------------------------------------------------------------
# evaluate.py and show_filters.py


def test_evaluate_reports_and_draws_wrong_digits(trained):
    folder, _ = trained
    result = run_app("evaluate.py", folder / "m" / "model.h5", "--limit-test", "300", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", result.stdout).group(1))
    assert 30.0 < accuracy <= 100.0
    assert re.search(r"test loss: [\d.]+", result.stdout)
    matrix_rows = [
        line for line in result.stdout.splitlines() if re.match(r"^\s+\d\s+(\s+\d+){10}\s", line)
    ]
    assert sum(int(n) for row in matrix_rows for n in row.split()[1:11]) == 300
    wrong = folder / "m" / "model.wrong.png"
    if HAVE_MATPLOTLIB:
        assert is_png(wrong)
    else:
        assert "matplotlib is not installed" in result.stdout


def test_show_filters_draws_filters_and_feature_maps(trained):
    folder, _ = trained
    result = run_app("show_filters.py", folder / "m" / "model.h5", "--digit", "3", cwd=folder)
    if not HAVE_MATPLOTLIB:
        assert_clear_error(result, "matplotlib", code=1)
        return
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 filters" in result.stdout  # the readme model's first Conv2D
    assert is_png(folder / "m" / "model.filters.png")
    assert is_png(folder / "m" / "model.features.png")


def nested_conv_models():
    """Networks whose first Conv2D sits inside combinators, by name: (layers, the path to
    that conv, the paths of the layers its feature maps go through, in order)."""
    from convnet_core import layers as L

    relu = L.Activation("relu")
    conv = L.Conv2D(3, (3, 3), padding="valid")
    head = [L.Flatten(), L.Dense(10)]
    block = L.Sequential([conv, L.BatchNorm2D(), relu, L.MaxPool2D((2, 2))])
    residual = L.Residual(L.Sequential([L.Conv2D(2, (3, 3)), relu]), L.Conv2D(2, (1, 1)))
    return {
        "sequential": ([L.MaxPool2D((2, 2)), block, *head], (1, 0), [(0,), (1, 0), (1, 1), (1, 2)]),
        "residual-body": ([residual, *head], (0, "body", 0), [(0, "body", 0), (0, "body", 1)]),
        "residual-shortcut": (
            [L.Residual(relu, L.Conv2D(1, (3, 3))), *head],  # "same" padding keeps the shape
            (0, "shortcut"),
            [(0, "shortcut")],
        ),
    }


def layer_at(model, path):
    """(layer, params, state) of the layer at `path` in the model (keys as show_filters uses)."""
    layer, params, state = model.network, model.params, model.state
    for key in path:
        layer = layer.layers[key] if isinstance(key, int) else getattr(layer, key)
        params, state = params[key], state[key]
    return layer, params, state


@pytest.mark.parametrize("name", list(nested_conv_models()))
def test_show_filters_finds_the_first_conv_inside_combinators(monkeypatch, name):
    """The maps are those of the conv where the model has it: after the layers that come
    first, then through its BatchNorm and activation; checked against those layers run one
    by one."""
    monkeypatch.syspath_prepend(str(APPS))
    import convnet_core as cn
    import show_filters

    layers, path, through = nested_conv_models()[name]
    model = cn.Model(layers, seed=1, device="cpu")
    model.build((1, 28, 28))
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    assert show_filters.first_conv_path(model.network) == path
    maps, last = show_filters.feature_maps(model, path, x)
    assert last == through[-1]
    expected = x
    for step in through:
        layer, params, state = layer_at(model, step)
        expected, _, _ = cn.apply(layer, params, state, expected, training=False, xp=np)
    np.testing.assert_array_equal(maps, expected[0])


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="show_filters draws with matplotlib")
def test_show_filters_draws_a_conv_inside_a_sequential(tmp_path):
    layers, _, _ = nested_conv_models()["sequential"]
    path = save_small_model(tmp_path / "nested.h5", layers)
    result = run_app("show_filters.py", path, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"3 filters of layer 1.0 (Conv2D): {tmp_path / 'nested.filters.png'}" in result.stdout
    assert is_png(tmp_path / "nested.filters.png") and is_png(tmp_path / "nested.features.png")


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="show_filters draws with matplotlib")
def test_show_filters_and_evaluate_take_a_float64_model(tmp_path):
    import convnet_core as cn

    layers = [cn.layers.Conv2D(3, (3, 3)), cn.layers.Flatten(), cn.layers.Dense(10)]
    path = save_small_model(tmp_path / "m64.h5", layers, dtype="float64")
    shown = run_app("show_filters.py", path, cwd=tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert is_png(tmp_path / "m64.filters.png") and is_png(tmp_path / "m64.features.png")
    evaluated = run_app("evaluate.py", path, "--limit-test", "100", "--device", "cpu", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr


def test_evaluate_reports_the_loss_the_model_was_trained_with(tmp_path):
    """A model compiled with mse gives raw outputs, not probabilities: its test loss is its
    own mse against one-hot rows, as Model.evaluate computes it, and is named."""
    import convnet_core as cn
    import convnet_data

    model = cn.Model([cn.layers.Flatten(), cn.layers.Dense(10)], seed=0, device="cpu")
    model.build((1, 28, 28))
    model.compile(loss="mse", optimizer="sgd", lr=0.01)
    model.save(str(tmp_path / "mse.h5"))
    result = run_app(
        "evaluate.py", "mse.h5", "--limit-test", "100", "--device", "cpu", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    printed = re.search(r"test loss: ([\d.]+) \(mse\)", result.stdout)
    assert printed, result.stdout
    test = convnet_data.load_mnist()[1].subset(100)
    x = np.asarray(test.images, np.float32) / 255.0
    expected, _ = model.evaluate(x, np.asarray(test.labels))
    assert abs(float(printed.group(1)) - expected) < 1e-4


def save_small_model(
    path: pathlib.Path, layers=None, input_shape=(1, 28, 28), dtype="float32"
) -> pathlib.Path:
    """Save an untrained model (by default Flatten-Dense(10) for MNIST digits) at `path`."""
    import convnet_core as cn

    layers = layers or [cn.layers.Flatten(), cn.layers.Dense(10)]
    model = cn.Model(layers, seed=0, device="cpu", dtype=dtype)
    model.build(input_shape)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    model.save(str(path))
    return path


@pytest.mark.parametrize("script", ["evaluate.py", "show_filters.py"])
def test_a_model_for_other_inputs_is_refused_before_anything_is_written(tmp_path, script):
    """A model for (3, 32, 32) images: the error names the file and says it is not an MNIST
    model, and neither PNG (nor any other file) is written."""
    import convnet_core as cn

    layers = [cn.layers.Conv2D(4, (3, 3)), cn.layers.Flatten(), cn.layers.Dense(10)]
    path = save_small_model(tmp_path / "cifar.h5", layers, input_shape=(3, 32, 32))
    result = run_app(script, path, cwd=tmp_path)
    line = assert_clear_error(result, code=1)
    assert line == (
        f"{script}: error: {path}: not an MNIST model: it takes inputs of shape (3, 32, 32) "
        "(channels, height, width), and MNIST digits are (1, 28, 28)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar.h5"]


def test_evaluate_refuses_a_model_without_ten_outputs_before_predicting(tmp_path):
    import convnet_core as cn

    path = save_small_model(tmp_path / "five.h5", [cn.layers.Flatten(), cn.layers.Dense(5)])
    result = run_app("evaluate.py", path, "--device", "cpu", cwd=tmp_path)
    line = assert_clear_error(result, code=1)
    assert line == (
        f"evaluate.py: error: {path}: not an MNIST classifier: expected 10 outputs per digit "
        "(one per class), but it gives shape (5,)"
    )
    assert "test digits" not in result.stdout


def test_a_truncated_model_file_is_described_once(tmp_path):
    path = save_small_model(tmp_path / "cut.h5")
    path.write_bytes(path.read_bytes()[:-100])
    result = run_app("evaluate.py", path, "--device", "cpu", cwd=tmp_path)
    line = assert_clear_error(result, code=1)
    problem = "the file is corrupted or truncated (its SHA-256 does not match)"
    assert line == f"evaluate.py: error: {path}: {problem}"


def test_a_model_saved_as_npz_loads_by_the_name_given_to_save(tmp_path):
    """Without h5py, save("v.hdf5") writes v.hdf5.npz and Model.load("v.hdf5") finds it;
    so do the apps."""
    save_small_model(tmp_path / "v.hdf5.npz")
    result = run_app("evaluate.py", "v.hdf5", "--limit-test", "50", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test digits: 50" in result.stdout
    result = run_app("evaluate.py", "w.hdf5", "--device", "cpu", cwd=tmp_path)
    assert (
        assert_clear_error(result, code=1) == "evaluate.py: error: model file w.hdf5 does not exist"
    )


@pytest.mark.parametrize("script", ["evaluate.py", "show_filters.py"])
def test_a_fifo_given_as_the_model_is_refused_at_once(tmp_path, script):
    """Not read (which would wait for a writer for ever): refused as not a regular file."""
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    result = run_app(script, fifo, cwd=tmp_path, timeout=60)
    line = assert_clear_error(result, code=1)
    assert line == f"{script}: error: {fifo}: it is a FIFO (named pipe), not a regular file"


@pytest.mark.parametrize("script", ["evaluate.py", "show_filters.py"])
def test_missing_and_corrupt_model_files_are_one_clear_line(tmp_path, script):
    result = run_app(script, tmp_path / "absent.h5", cwd=tmp_path)
    assert_clear_error(result, "absent.h5", code=1)
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    result = run_app(script, corrupt, cwd=tmp_path)
    assert_clear_error(result, "corrupt.h5", code=1)


# Outputs that name a file the run reads, or another output: (script, arguments, the error
# after "Invalid value for "). The folder holds the model m.h5 (with a Conv2D, so that
# show_filters.py draws it), the model n.npz (read as "n"), link.h5 -> m.h5, the empty
# folder sub/ and the symbolic link m.history.json -> m.h5.
OUTPUT_CLASHES = {
    "evaluate-wrong-is-the-model": (
        "evaluate.py",
        ["m.h5", "--wrong", "m.h5"],
        "--wrong: m.h5 is the model MODEL: writing the PNG of wrong digits there would replace it",
    ),
    "evaluate-wrong-spelled-otherwise": (
        "evaluate.py",
        ["link.h5", "--wrong", "sub/../m.h5"],
        "--wrong: sub/../m.h5 is the model MODEL (link.h5): writing the PNG of wrong digits "
        "there would replace it",
    ),
    "evaluate-wrong-is-the-npz-read-for-name": (
        "evaluate.py",
        ["n", "--wrong", "n.npz"],
        "--wrong: n.npz is the model MODEL: writing the PNG of wrong digits there would replace it",
    ),
    "show-filters-filters-is-the-model": (
        "show_filters.py",
        ["m.h5", "--filters", "m.h5"],
        "--filters: m.h5 is the model MODEL: writing the filters PNG there would replace it",
    ),
    "show-filters-features-is-the-model": (
        "show_filters.py",
        ["m.h5", "--features", "m.h5"],
        "--features: m.h5 is the model MODEL: writing the feature-maps PNG there would replace it",
    ),
    "show-filters-both-images-at-one-path": (
        "show_filters.py",
        ["m.h5", "--filters", "x.png", "--features", "x.png"],
        "--features: x.png is the filters PNG: the feature-maps PNG would replace it",
    ),
    "train-plot-is-out": (
        "train_mnist.py",
        [*QUICK, "--epochs", "1", "--out", "t.h5", "--plot", "t.h5"],
        "--plot: t.h5 is the --out model: the training-curves PNG would replace it",
    ),
    "train-plot-is-the-checkpoint": (
        "train_mnist.py",
        [*QUICK, "--epochs", "1", "--out", "t.h5", "--plot", "sub/../t.ckpt.h5"],
        "--plot: sub/../t.ckpt.h5 is the checkpoint written beside --out (t.ckpt.h5): the "
        "training-curves PNG would replace it",
    ),
    "train-plot-is-the-resumed-checkpoint": (
        "train_mnist.py",
        [*QUICK, "--epochs", "2", "--resume", "m.h5", "--out", "t.h5", "--plot", "link.h5"],
        "--plot: link.h5 is the --resume checkpoint (m.h5): writing the training-curves PNG "
        "there would replace it",
    ),
    "train-history-is-out-through-a-link": (
        "train_mnist.py",
        [*QUICK, "--epochs", "1", "--out", "m.h5"],
        "--out: m.history.json is the --out model (m.h5): the history written beside --out "
        "would replace it",
    ),
}


@pytest.mark.parametrize("case", list(OUTPUT_CLASHES))
def test_an_output_naming_an_input_or_another_output_is_a_usage_error(tmp_path, case):
    """However the paths are spelled (sub/../m.h5, a symbolic link, NAME for NAME.npz), an
    output over the model read, the checkpoint resumed or another output is refused before
    anything runs: nothing is written, exit status 2."""
    import convnet_core as cn

    script, args, problem = OUTPUT_CLASHES[case]
    layers = [cn.layers.Conv2D(2, (3, 3)), cn.layers.Flatten(), cn.layers.Dense(10)]
    save_small_model(tmp_path / "m.h5", layers)
    save_small_model(tmp_path / "n.npz", layers)
    (tmp_path / "link.h5").symlink_to("m.h5")
    (tmp_path / "m.history.json").symlink_to("m.h5")
    (tmp_path / "sub").mkdir()
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    result = run_app(script, *args, cwd=tmp_path)
    line = assert_clear_error(result, code=2)
    assert line == (
        f"{script}: error: Invalid value for {problem}; give another path (see {script} --help)"
    )
    assert result.stdout == ""
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    assert after == before


def test_a_model_may_be_saved_over_the_model_it_continues(tmp_path, monkeypatch):
    """--resume m.ckpt.h5 with --out m.h5 writes its checkpoint over m.ckpt.h5, and --out may
    be the --resume file: each is the same training carried on. Without h5py a model named
    NAME is written to NAME.npz, which another output may not be."""
    monkeypatch.syspath_prepend(str(APPS))
    import _common
    import click
    from convnet_io import storage

    FileUse = _common.FileUse
    out = FileUse(tmp_path / "m.h5", "the --out model", "--out", model=True)
    checkpoint = FileUse(tmp_path / "m.ckpt.h5", "the checkpoint", "--out", model=True)
    save_small_model(checkpoint.path)
    resume = FileUse(checkpoint.path, "the --resume checkpoint", "--resume", model=True)
    _common.check_distinct_files([out, checkpoint], [resume])
    _common.check_distinct_files([out], [resume._replace(path=out.path)])
    plot = FileUse(tmp_path / "m.h5.npz", "the PNG", "--plot")
    _common.check_distinct_files([out, plot])  # h5py writes m.h5 itself
    monkeypatch.setattr(storage, "H5PY_AVAILABLE", False)
    with pytest.raises(click.BadParameter) as raised:
        _common.check_distinct_files([out, plot])
    assert raised.value.format_message() == (
        f"Invalid value for --plot: {plot.path} is the --out model: the PNG would replace "
        "it; give another path"
    )


# ---------------------------------------------------------------------------------------
# mnist_gui.py (what needs no display; tests/test_gui_app.py draws in the window)

GUI_MODEL = ROOT / "packages" / "convnet-gui" / "tests" / "data" / "reference_mnist.h5"


def run_gui(*args: str, cwd: pathlib.Path, env=None):
    """apps/mnist_gui.py with no display: it fails once the model is loaded, if not before."""
    environment = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    environment.pop("CONVNET_DEBUG", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, str(APPS / "mnist_gui.py"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )


def test_gui_errors_follow_the_apps_rules(tmp_path):
    """One line `mnist_gui.py: error: ...`, 2 for bad arguments, 1 for the rest."""
    result = run_gui("--device", "tpu", cwd=tmp_path)
    line = assert_clear_error(result, code=2)
    assert line.startswith("mnist_gui.py: error: Invalid value for '--device': 'tpu'")
    assert line.endswith("(see mnist_gui.py --help)")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"this is not a model")
    result = run_gui("--model", bad, "--device", "auto", cwd=tmp_path)  # auto as in the others
    line = assert_clear_error(result, code=1)
    assert line.startswith(f"mnist_gui.py: error: cannot use the model {bad} on auto: {bad}: ")
    result = run_gui("--model", GUI_MODEL, cwd=tmp_path)
    line = assert_clear_error(result, code=1)
    assert line.startswith("mnist_gui.py: error: cannot open a window: ")
    result = run_gui("--model", bad, cwd=tmp_path, env={"CONVNET_DEBUG": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("mnist_gui.py: error: cannot use the model")


def test_gui_default_model_is_where_training_saves_it(tmp_path):
    from convnet_gui.predictor import DEFAULT_MODEL

    result = run_gui("--help", cwd=tmp_path)
    assert f"[default: {DEFAULT_MODEL}, where" in " ".join(result.stdout.split())
    result = run_gui(cwd=tmp_path)  # no models/mnist.h5 here: the window would say so
    assert f"No model at {DEFAULT_MODEL}" in result.stderr


@pytest.mark.parametrize("threads", ["1", "2"])
def test_gui_threads_option_sets_the_blas_thread_count(tmp_path, threads):
    """--threads as in the other apps: the window (replaced here) runs with that many."""
    driver = (
        "import runpy, sys, types\n"
        "window = types.ModuleType('convnet_gui.app')\n"
        "def run(predict_fn, *, message=None):\n"
        "    import _common\n"
        "    print(_common.blas_description(), predict_fn is not None)\n"
        "window.run = run\n"
        "sys.modules['convnet_gui.app'] = window\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    result = subprocess.run(
        [sys.executable, "-c", driver, str(APPS / "mnist_gui.py"), "--model", GUI_MODEL,
         "--threads", threads],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=environment,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.match(rf"BLAS threads: {threads} \(.*\) True$", result.stdout.strip()), result.stdout


# ---------------------------------------------------------------------------------------
# _common


def test_convnet_debug_is_read_as_the_nn_variables_are(monkeypatch, capsys):
    """0, false, no, off or nothing: no traceback; 1, true, yes, on: the traceback, for an
    unexpected error and for one the user can fix; anything else is named on the line."""
    monkeypatch.syspath_prepend(str(APPS))
    import _common
    import click

    @click.command()
    @click.argument("kind")
    def fails(kind):
        raise _common.AppError("no such digit") if kind == "app" else LookupError("lost")

    hint = " (set CONVNET_DEBUG=1 for the traceback)"
    cases = [
        (None, "other", False, f"LookupError: lost{hint}"),
        ("", "other", False, f"LookupError: lost{hint}"),
        ("0", "other", False, f"LookupError: lost{hint}"),
        ("off", "app", False, "no such digit"),
        ("1", "other", True, "LookupError: lost"),
        (" Yes ", "other", True, "LookupError: lost"),
        ("true", "app", True, "no such digit"),
    ]
    for value, kind, shown, message in cases:
        if value is None:
            monkeypatch.delenv("CONVNET_DEBUG", raising=False)
        else:
            monkeypatch.setenv("CONVNET_DEBUG", value)
        assert _common.run_command(fails, "prog", [kind]) == 1
        stderr = capsys.readouterr().err
        assert ("Traceback" in stderr) == shown, (value, stderr)
        assert stderr.splitlines()[-1] == f"prog: error: {message}", value
    monkeypatch.setenv("CONVNET_DEBUG", "maybe")
    assert _common.run_command(fails, "prog", ["other"]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith(
        "prog: error: LookupError: lost (no traceback: CONVNET_DEBUG='maybe': "
    )
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1


def test_convnet_debug_0_keeps_an_app_error_to_one_line(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not a model at all")
    result = run_app("evaluate.py", bad, cwd=tmp_path, env={"CONVNET_DEBUG": "0"})
    assert_clear_error(result, "bad.h5", "neither HDF5 nor NPZ", code=1)
    result = run_app("evaluate.py", bad, cwd=tmp_path, env={"CONVNET_DEBUG": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"evaluate.py: error: {bad}: not a model file")


def test_companion_files_are_replaced_atomically_keeping_their_permissions(tmp_path, monkeypatch):
    """write_json and the PNGs go through convnet-io's atomic_path, as the models do."""
    monkeypatch.syspath_prepend(str(APPS))
    import _common

    target = tmp_path / "run.history.json"
    _common.write_json(target, {"epochs": 1})
    target.chmod(0o640)
    _common.write_json(target, {"epochs": 2})
    assert json.loads(target.read_text()) == {"epochs": 2}
    assert target.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode

    def fails_halfway(tmp: str) -> None:
        pathlib.Path(tmp).write_text('{"epo')
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    with pytest.raises(OSError):
        _common.write_atomic(target, fails_halfway)
    assert json.loads(target.read_text()) == {"epochs": 2}
    assert [path.name for path in tmp_path.iterdir()] == ["run.history.json"]


# ---------------------------------------------------------------------------------------
# Wording: input shapes, counts, a missing model


@pytest.mark.parametrize("script", ["evaluate.py", "show_filters.py"])
def test_a_flat_input_shape_is_not_called_channels_height_width(tmp_path, script):
    path = save_small_model(tmp_path / "flat.h5", input_shape=(784,))
    result = run_app(script, path, cwd=tmp_path)
    line = assert_clear_error(result, code=1)
    assert line == (
        f"{script}: error: {path}: not an MNIST model: it takes inputs of shape (784,), "
        "and MNIST digits are (1, 28, 28) (channels, height, width)"
    )


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="show_filters draws with matplotlib")
def test_show_filters_says_1_filter(tmp_path):
    import convnet_core as cn

    layers = [cn.layers.Conv2D(1, (3, 3)), cn.layers.Flatten(), cn.layers.Dense(10)]
    path = save_small_model(tmp_path / "one.h5", layers)
    result = run_app("show_filters.py", path, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"1 filter of layer 0 (Conv2D): {tmp_path / 'one.filters.png'}\n" in result.stdout


def test_training_says_1_epoch(trained):
    _, result = trained
    assert "training 'readme': 1 epoch, batch 64," in result.stdout


def test_evaluate_names_a_missing_model_before_choosing_a_device(tmp_path):
    """Nothing about the device (neither the notice nor the device line) for a file that
    is not there."""
    result = run_app("evaluate.py", "missing.h5", cwd=tmp_path, env={"NN_DISABLE_CUDA": "1"})
    line = assert_clear_error(result, code=1)
    assert line == "evaluate.py: error: model file missing.h5 does not exist"
    assert result.stdout == ""
    assert result.stderr == line + "\n"


# ---------------------------------------------------------------------------------------
# Digits without test samples


def test_evaluate_lists_only_the_digits_it_has_test_samples_of(tmp_path):
    """The first test digit is a 7: the other rows have no accuracy and no digit but 7 is
    named as the lowest."""
    path = save_small_model(tmp_path / "m.h5")
    result = run_app("evaluate.py", path, "--limit-test", "1", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lowest accuracy: digit 7\n" in result.stdout
    assert "nan" not in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"^\s+\d\s", line)]
    assert [row[0] for row in rows] == [str(d) for d in range(10)]
    assert [row[-1] for row in rows if row[0] != "7"] == ["n/a"] * 9
    assert re.match(r"(0|100)\.0%", rows[7][-1])


def test_format_confusion_shows_n_a_for_a_digit_without_samples(monkeypatch):
    monkeypatch.syspath_prepend(str(APPS))
    import _common

    matrix = np.array([[3, 1, 0], [0, 0, 0], [0, 2, 2]])
    assert _common.format_confusion(matrix).splitlines() == [
        "true\\pred    0    1    2   acc",
        "        0    3    1    0   75.0%",
        "        1    0    0    0     n/a",
        "        2    0    2    2   50.0%",
    ]
    assert _common.lowest_accuracy(_common.per_class_accuracy(matrix), 3) == [2, 0]


def test_slowest_learned_skips_digits_without_test_samples(monkeypatch):
    monkeypatch.syspath_prepend(str(APPS))
    import train_mnist

    nan = float("nan")
    after = np.array([nan, 0.5, 0.9, 0.25, nan])
    final = np.array([nan, 0.9, 1.0, 0.75, nan])
    assert train_mnist.slowest_learned(after, final) == [3, 1, 2]
    assert train_mnist.slowest_learned(None, np.array([nan, 1.0, nan, nan])) == [1]


# ---------------------------------------------------------------------------------------
# The test files alone


def copy_test_files(folder: pathlib.Path) -> pathlib.Path:
    """A folder holding only the MNIST test files (t10k-*) of the bundled data."""
    import shutil

    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(ROOT / "data" / "mnist" / name, folder / name)
    return folder


@pytest.mark.parametrize("script", ["evaluate.py", "show_filters.py"])
def test_evaluate_and_show_filters_need_only_the_test_files(tmp_path, script):
    data = copy_test_files(tmp_path / "t10k")
    layers = None
    if script == "show_filters.py":
        import convnet_core as cn

        layers = [cn.layers.Conv2D(1, (3, 3)), cn.layers.Flatten(), cn.layers.Dense(10)]
    path = save_small_model(tmp_path / "m.h5", layers)
    result = run_app(script, path, "--data", data, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    if script == "evaluate.py":
        assert "test digits: 10000" in result.stdout
    (data / "t10k-labels-idx1-ubyte.gz").unlink()
    result = run_app(script, path, "--data", data, cwd=tmp_path)
    line = assert_clear_error(result, code=1)
    assert line == (
        f"{script}: error: MNIST file t10k-labels-idx1-ubyte.gz (or t10k-labels-idx1-ubyte) "
        f"not found in {data}"
    )


@pytest.mark.parametrize("script", ["evaluate.py", "show_filters.py"])
def test_evaluate_and_show_filters_find_only_the_test_files_through_the_data_variable(
    tmp_path, script
):
    """CONVNET_DATA_DIR may point at a folder holding only the t10k files, as --data may;
    without them the error names the two files looked for."""
    data = copy_test_files(tmp_path / "t10k")
    import convnet_core as cn

    layers = [cn.layers.Conv2D(1, (3, 3)), cn.layers.Flatten(), cn.layers.Dense(10)]
    path = save_small_model(tmp_path / "m.h5", layers)
    options = ["--limit-test", "20", "--device", "cpu"] if script == "evaluate.py" else []
    result = run_app(script, path, *options, cwd=tmp_path, env={"CONVNET_DATA_DIR": str(data)})
    assert result.returncode == 0, result.stdout + result.stderr
    if script == "evaluate.py":
        assert "test digits: 20" in result.stdout
    (data / "t10k-labels-idx1-ubyte.gz").unlink()
    result = run_app(script, path, cwd=tmp_path, env={"CONVNET_DATA_DIR": str(data)})
    line = assert_clear_error(result, code=1)
    assert line == (
        f"{script}: error: MNIST files t10k-images-idx3-ubyte(.gz) and "
        f"t10k-labels-idx1-ubyte(.gz) not found where $CONVNET_DATA_DIR points ({str(data)!r}). "
        f"Looked in:; {data}; {data / 'mnist'}; Point CONVNET_DATA_DIR at the folder holding "
        "these files, or unset it to use the bundled data/mnist/ of a source checkout."
    )


def test_evaluate_checks_the_test_files_checksums(tmp_path):
    import gzip

    data = copy_test_files(tmp_path / "t10k")
    labels = data / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # still a digit, but not MNIST's
    labels.write_bytes(gzip.compress(bytes(raw)))
    path = save_small_model(tmp_path / "m.h5")
    result = run_app("evaluate.py", path, "--data", data, "--device", "cpu", cwd=tmp_path)
    line = assert_clear_error(result, code=1)
    assert line.startswith(f"evaluate.py: error: {labels}: checksum mismatch: ")


# ---------------------------------------------------------------------------------------
# Models with custom layers: --import MODULE

#: A module that registers a custom layer, as a user's own would (written into the
#: working folder of the test, where --import finds it).
CUSTOM_LAYERS = '''
import attrs
import convnet_core as cn


@cn.register_layer(name="appstest.Scale")
@attrs.frozen
class Scale:
    """y = s * x with one learned factor s."""

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        return {"s": xp.full((1,), 2.0, dtype=dtype)}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        return params["s"] * x, state, x

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        return {"s": (dy * cache).sum().reshape(1)}, params["s"] * dy
'''

SAVE_CUSTOM_MODEL = """
import convnet_core as cn
from convnet_core import layers as L
import applayers

model = cn.Model(
    [L.Conv2D(2, (3, 3)), applayers.Scale(), L.Flatten(), L.Dense(10)], seed=0, device="cpu"
)
model.build((1, 28, 28))
model.compile(loss="categorical_crossentropy", optimizer="adam")
model.save("custom.h5")
"""


@pytest.fixture
def custom_model(tmp_path):
    """tmp_path/custom.h5, a model with the custom layer of tmp_path/applayers.py."""
    (tmp_path / "applayers.py").write_text(CUSTOM_LAYERS)
    saved = subprocess.run(
        [sys.executable, "-c", SAVE_CUSTOM_MODEL], cwd=tmp_path, capture_output=True, text=True
    )
    assert saved.returncode == 0, saved.stderr
    return tmp_path / "custom.h5"


@pytest.mark.parametrize("script", ["evaluate.py", "show_filters.py"])
def test_a_model_with_custom_layers_loads_with_import(custom_model, script):
    """Without --import the error names the layer class and the option; with it the
    model is used."""
    folder = custom_model.parent
    result = run_app(script, "custom.h5", cwd=folder)
    line = assert_clear_error(result, "unknown layer class 'appstest.Scale'", code=1)
    assert line.endswith("(give --import MODULE to import the module that registers it)"), line
    options = ["--limit-test", "20", "--device", "cpu"] if script == "evaluate.py" else []
    result = run_app(script, "custom.h5", "--import", "applayers", *options, cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    if script == "evaluate.py":
        assert "test digits: 20" in result.stdout
    else:
        assert "2 filters of layer 0 (Conv2D)" in result.stdout


def test_the_gui_loads_a_model_with_custom_layers_with_import(custom_model):
    folder = custom_model.parent
    result = run_gui("--model", "custom.h5", cwd=folder)
    line = assert_clear_error(result, "unknown layer class 'appstest.Scale'", code=1)
    assert line.endswith("(give --import MODULE to import the module that registers it)"), line
    result = run_gui("--model", "custom.h5", "--import", "applayers", cwd=folder)
    line = assert_clear_error(result, code=1)  # loaded: only the window is missing
    assert line.startswith("mnist_gui.py: error: cannot open a window: ")


@pytest.mark.parametrize("script", ["evaluate.py", "show_filters.py", "mnist_gui.py"])
def test_an_import_that_fails_is_a_usage_error_naming_the_module(tmp_path, script):
    (tmp_path / "broken.py").write_text("import os\nraise ValueError('no layers here')\n")
    (tmp_path / "fine.py").write_text("")
    cases = {
        "nosuchmodule": "ModuleNotFoundError: No module named 'nosuchmodule'",
        "broken": f"ValueError: no layers here ({tmp_path / 'broken.py'}, line 2)",
        "fine.py": "give the module's name, not its file name: --import fine",
    }
    for module, cause in cases.items():
        args = ["--model", "absent.h5"] if script == "mnist_gui.py" else ["absent.h5"]
        result = run_app(script, *args, "--import", "fine", "--import", module, cwd=tmp_path)
        line = assert_clear_error(result, code=2)
        assert line == (
            f"{script}: error: Invalid value for --import: cannot import {module}: {cause} "
            f"(see {script} --help)"
        )
        assert result.stdout == ""
    args = ["--import", "broken"] + ([] if script == "mnist_gui.py" else ["absent.h5"])
    result = run_app(script, *args, cwd=tmp_path, env={"CONVNET_DEBUG": "1"})
    assert result.returncode == 2 and "Traceback" in result.stderr
    assert f'File "{tmp_path / "broken.py"}", line 2' in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"{script}: error: Invalid value for --import")


@pytest.mark.parametrize("script", ["evaluate.py", "show_filters.py", "mnist_gui.py"])
def test_help_explains_the_import_option(tmp_path, script):
    result = run_app(script, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "--import MODULE" in text
    assert "@register_layer" in text and "current directory" in text and "repeat" in text


def test_import_takes_the_module_of_the_current_directory_before_the_standard_library(
    custom_model,
):
    """`--import code` imports the code.py of the current directory, as `python -c
    "import code"` there would, not the standard library's module `code`."""
    folder = custom_model.parent
    (folder / "code.py").write_text(CUSTOM_LAYERS)
    options = ["--limit-test", "20", "--device", "cpu"]
    result = run_app("evaluate.py", "custom.h5", "--import", "code", *options, cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test digits: 20" in result.stdout


#: Runs _common.import_modules(argv[2:]) in the working folder, apps/ being argv[1]; prints
#: the error's message, or where the current directory is on sys.path afterwards.
IMPORT_DRIVER = """
import os, sys
sys.path.insert(0, sys.argv[1])
import click, _common
if os.environ.get("PRELOAD"):
    __import__(os.environ["PRELOAD"])
here = os.getcwd()
try:
    _common.import_modules(tuple(sys.argv[2:]))
except click.BadParameter as error:
    print(error.message)
    raise SystemExit(0)
import calendar
print(sys.path.count(here), sys.path.index(here) == len(sys.path) - 1, calendar.__file__)
"""


def run_import_driver(folder: pathlib.Path, *names: str, preload: str = ""):
    result = subprocess.run(
        [sys.executable, "-P", "-c", IMPORT_DRIVER, str(APPS), *names],  # -P: no "" on the path
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "PRELOAD": preload},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_refuses_a_module_of_the_current_directory_already_loaded_from_elsewhere(
    tmp_path,
):
    """A module already in sys.modules cannot be replaced: the error names both files
    rather than the program silently using the loaded one."""
    import code

    (tmp_path / "code.py").write_text(CUSTOM_LAYERS)
    message = run_import_driver(tmp_path, "code", preload="code")
    assert message == (
        f"cannot import code: {tmp_path / 'code.py'} cannot be imported as code, because a "
        f"module of that name is already loaded from {code.__file__}; rename code.py and "
        "give --import with the new name"
    )
    (tmp_path / "applayers.py").write_text(CUSTOM_LAYERS)  # loaded from here: no error
    assert run_import_driver(tmp_path, "applayers", "applayers").startswith("1 True ")


def test_after_the_imports_the_current_directory_is_last_on_the_path(tmp_path):
    """The program's own later imports are not taken from the current directory."""
    import calendar

    (tmp_path / "applayers.py").write_text(CUSTOM_LAYERS)
    (tmp_path / "calendar.py").write_text("raise ImportError('the wrong calendar')\n")
    assert run_import_driver(tmp_path, "applayers") == f"1 True {calendar.__file__}"


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ("./mylayers.py", "give the module's name, not its file name: --import mylayers"),
        ("mylayers.py", "give the module's name, not its file name: --import mylayers"),
        ("pkg/layers.py", "give the module's name, not its file name: --import pkg.layers"),
        ("pkg/layers", "give the module's name, not its path: --import pkg.layers"),
        ("./pkg/__init__.py", "give the module's name, not its file name: --import pkg"),
        (
            "{tmp}/elsewhere/mylayers.py",
            "give the module's name, not its file name; {tmp}/elsewhere is outside the "
            "current directory: run from {tmp}/elsewhere (or put it on PYTHONPATH) and give "
            "--import mylayers",
        ),
        (
            "../elsewhere/mylayers",
            "give the module's name, not its path; {tmp}/elsewhere is outside the current "
            "directory: run from {tmp}/elsewhere (or put it on PYTHONPATH) and give "
            "--import mylayers",
        ),
    ],
)
def test_import_of_a_file_name_suggests_the_module_name(tmp_path, monkeypatch, given, hint):
    monkeypatch.syspath_prepend(str(APPS))
    monkeypatch.setattr(sys, "path", list(sys.path))
    import _common
    import click

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    given = given.format(tmp=tmp_path)
    with pytest.raises(click.BadParameter) as raised:
        _common.import_modules((given,))
    assert raised.value.message == f"cannot import {given}: {hint.format(tmp=tmp_path)}"
