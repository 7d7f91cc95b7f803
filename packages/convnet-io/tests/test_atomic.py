"""A writer killed in the middle of a save leaves the previous file whole."""

import errno
import glob
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time

import convnet_io
import numpy
import pytest
from convnet_io_helpers import special_files

WRITER = textwrap.dedent(
    """
    import sys, numpy, convnet_io
    from convnet_core import layers as L
    path = sys.argv[1]
    net = L.Sequential((L.Dense(2000),))
    for k in range(1, 10**6):  # each save holds one value everywhere, and says which
        params = ({"W": numpy.full((1000, 2000), k, "float32"),
                   "b": numpy.full(2000, k, "float32")},)
        convnet_io.save(path, layer=net, params=params, input_shape=(1000,),
                        metadata={"iteration": k})
    """
)


def wait_for(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.002)
    raise AssertionError("timed out")


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_killed_writer_leaves_the_previous_file_loadable(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    temporaries = str(tmp_path / f".model{suffix}.*.tmp")
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        wait_for(path.exists)
        for _ in range(3):
            # kill while a newer version is being written beside the file
            wait_for(lambda: glob.glob(temporaries))
            time.sleep(numpy.random.default_rng().uniform(0, 0.05))
            os.kill(process.pid, signal.SIGSTOP)  # freeze it, wherever it is
            saved = convnet_io.load(path, parts=True)
            k = saved.metadata["iteration"]
            assert (saved.params[0]["W"] == k).all() and (saved.params[0]["b"] == k).all()
            os.kill(process.pid, signal.SIGCONT)
        wait_for(lambda: glob.glob(temporaries))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        saved = convnet_io.load(path, parts=True)
        k = saved.metadata["iteration"]
        assert k >= 1
        assert (saved.params[0]["W"] == k).all() and (saved.params[0]["b"] == k).all()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    from convnet_core import layers as L
    from convnet_io import storage

    net = L.Sequential((L.Dense(2),))
    old = ({"W": numpy.ones((3, 2), "float32"), "b": numpy.zeros(2, "float32")},)
    path = tmp_path / "m.npz"
    convnet_io.save(path, layer=net, params=old, input_shape=(3,))
    mode = os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # as open() would have made it, not mkstemp's 0600

    def broken_writer(file, attributes, arrays):
        with open(file, "wb") as f:
            f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(storage, "write_npz", broken_writer)
    new = ({"W": numpy.full((3, 2), 7, "float32"), "b": numpy.zeros(2, "float32")},)
    with pytest.raises(OSError, match="disk full"):
        convnet_io.save(path, layer=net, params=new, input_shape=(3,))
    assert os.listdir(tmp_path) == ["m.npz"]
    assert (convnet_io.load(path, parts=True).params[0]["W"] == 1).all()


def test_saving_into_a_missing_folder_names_the_target(tmp_path):
    from convnet_core import layers as L

    net = L.Sequential((L.Dense(2),))
    params = ({"W": numpy.ones((3, 2), "float32"), "b": numpy.zeros(2, "float32")},)
    target = tmp_path / "no-such-folder" / "model.h5"
    with pytest.raises(FileNotFoundError, match=r"cannot save .*model\.h5.*does not exist"):
        convnet_io.save(target, layer=net, params=params, input_shape=(3,))
    assert not (tmp_path / "no-such-folder").exists()


# ---------------------------------------------------------------------------------------
# What is at the path: links are followed, only regular files are ever replaced


def small_save(path, value):
    from convnet_core import layers as L

    params = ({"W": numpy.full((3, 2), value, "float32"), "b": numpy.zeros(2, "float32")},)
    return convnet_io.save(path, layer=L.Sequential((L.Dense(2),)), params=params, input_shape=(3,))


def saved_value(path):
    return float(convnet_io.load(path, parts=True).params[0]["W"][0, 0])


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_saving_through_a_symlink_updates_the_file_it_points_to(tmp_path, suffix):
    (tmp_path / "runs").mkdir()
    run = tmp_path / "runs" / f"run3{suffix}"
    small_save(run, 1)
    latest = tmp_path / f"latest{suffix}"
    latest.symlink_to(os.path.join("runs", run.name))  # a relative link, as `ln -s` makes

    assert small_save(latest, 2) == str(latest)

    assert latest.is_symlink() and os.readlink(latest) == os.path.join("runs", run.name)
    assert saved_value(run) == 2 and saved_value(latest) == 2
    assert sorted(os.listdir(tmp_path)) == sorted(["runs", latest.name])
    assert os.listdir(tmp_path / "runs") == [run.name]  # no temporary left beside it


def test_saving_through_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "latest.h5"
    link.symlink_to("new.h5")
    small_save(link, 5)
    assert link.is_symlink() and saved_value(tmp_path / "new.h5") == 5


@pytest.mark.parametrize("suffix", ["", ".npz"])
def test_special_files_are_refused_and_left_as_they_are(tmp_path, suffix):
    made, server = special_files(tmp_path)
    try:
        for path, kind in made:
            before = os.lstat(path)
            target = str(path) + suffix if suffix else path
            if suffix:  # the same kinds of file under a model-like name
                os.rename(path, target)
                before = os.lstat(target)
            with pytest.raises(
                OSError, match=f"cannot save {re.escape(str(target))}: it is {kind}"
            ):
                small_save(target, 1)
            after = os.lstat(target)
            assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode)
            assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
            # a link to it is refused the same way, and stays a link
            link = tmp_path / f"link-to-{os.path.basename(target)}"
            link.symlink_to(target)
            with pytest.raises(OSError, match=f"cannot save {re.escape(str(link))}: it is {kind}"):
                small_save(link, 1)
            assert link.is_symlink()
        assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    finally:
        server.close()


def test_paths_naming_a_folder_are_refused(tmp_path):
    (tmp_path / "adir").mkdir()
    for path in (
        str(tmp_path / "trail") + os.sep,  # not there: must not become a file named "trail"
        str(tmp_path / "adir") + os.sep,
        str(tmp_path / "adir"),
        str(tmp_path / "adir" / "."),
    ):
        with pytest.raises(IsADirectoryError, match=f"cannot save {re.escape(path)}"):
            small_save(path, 1)
    with pytest.raises(ValueError, match="empty path"):
        small_save("", 1)
    assert sorted(os.listdir(tmp_path)) == ["adir"] and os.listdir(tmp_path / "adir") == []


# ---------------------------------------------------------------------------------------
# Errors name the path given, never the temporary file


def test_a_folder_that_cannot_be_written_is_named_with_the_target(tmp_path, monkeypatch):
    from convnet_io import atomic

    target = tmp_path / "m.h5"

    def refused(prefix, suffix, dir):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, prefix + suffix))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refused)
    with pytest.raises(PermissionError) as info:
        small_save(target, 1)
    assert info.value.errno == errno.EACCES and info.value.filename == str(target)
    assert "cannot create a file in the folder" in str(info.value)
    assert ".tmp" not in str(info.value)


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
@pytest.mark.parametrize("with_errno", [True, False])
def test_errors_while_writing_name_the_target(tmp_path, monkeypatch, suffix, with_errno):
    from convnet_io import storage

    target = tmp_path / f"m{suffix}"
    small_save(target, 1)
    before = target.read_bytes()

    def failing_writer(file, attributes, arrays):
        with open(file, "wb") as f:
            f.write(b"half a file")
        if with_errno:
            raise OSError(errno.ENOSPC, "No space left on device", file)
        raise OSError(  # as HDF5's file driver words a full disk
            "Can't write data (file write failed: time = Thu Nov 26 17:00:00 2026\n, "
            f"filename = '{file}', file descriptor = 5, errno = 28, error message = 'No "
            "space left on device', buf = 0x55d0c0, total write size = 4096, bytes this "
            "sub-write = 4096, bytes actually written = 18446744073709551615, offset = 0)"
        )

    monkeypatch.setattr(storage, "write_hdf5" if suffix == ".h5" else "write_npz", failing_writer)
    with pytest.raises(OSError) as info:
        small_save(target, 2)
    assert str(info.value) == f"[Errno 28] No space left on device: '{target}'"
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == before and os.listdir(tmp_path) == [target.name]


def test_a_file_that_may_not_be_written_is_kept(tmp_path, monkeypatch):
    from convnet_io import atomic

    target = tmp_path / "m.h5"
    small_save(target, 1)
    before = target.read_bytes()
    real_access = os.access
    monkeypatch.setattr(
        atomic.os, "access", lambda p, mode: False if p == str(target) else real_access(p, mode)
    )
    with pytest.raises(PermissionError, match="read-only") as info:
        small_save(target, 2)
    assert info.value.filename == str(target) and ".tmp" not in str(info.value)
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["m.h5"]


READ_ONLY_CHECK = textwrap.dedent(
    """
    import os, pathlib, sys, numpy, convnet_io
    from convnet_core import layers as L

    def small_save(path, value):
        params = ({"W": numpy.full((3, 2), value, "float32"), "b": numpy.zeros(2, "float32")},)
        convnet_io.save(path, layer=L.Sequential((L.Dense(2),)), params=params, input_shape=(3,))

    def refused(path):
        try:
            small_save(path, 2)
        except PermissionError as error:
            assert error.filename == str(path) and ".tmp" not in str(error), error
            return
        raise AssertionError(f"saving to {path} was not refused")

    root = pathlib.Path(sys.argv[1])
    folder = root / "ro"
    folder.mkdir()
    os.chmod(folder, 0o555)
    refused(folder / "m.h5")
    target = root / "m.npz"
    small_save(target, 1)
    before = target.read_bytes()
    os.chmod(target, 0o444)
    refused(target)
    assert target.read_bytes() == before
    assert sorted(os.listdir(root)) == ["m.npz", "ro"], os.listdir(root)
    os.chmod(folder, 0o755)
    print("refused both")
    """
)


def without_root_powers() -> list[str]:
    """The command prefix that runs a program without root's power to ignore file
    permissions (CAP_DAC_OVERRIDE), so that read-only really means read-only; none when
    the tests do not run as root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:  # util-linux, on every Debian and Ubuntu system
        pytest.skip("running as root without setpriv (util-linux) to drop its file powers")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]


def test_read_only_folder_and_file_for_real(tmp_path):
    result = subprocess.run(
        [*without_root_powers(), sys.executable, "-c", READ_ONLY_CHECK, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "refused both" in result.stdout, result.stderr


# ---------------------------------------------------------------------------------------
# Durability: the new file's bytes reach the disk before the rename, the rename after it


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_the_file_is_synced_before_the_rename_and_its_folder_after(tmp_path, monkeypatch, suffix):
    target = tmp_path / f"m{suffix}"
    small_save(target, 1)
    folder = os.stat(tmp_path)
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        kind = "folder" if stat.S_ISDIR(st.st_mode) else "file"
        events.append(("fsync", kind, (st.st_dev, st.st_ino), st.st_size))
        real_fsync(fd)

    def replace(src, dst, **kwargs):
        st = os.stat(src)
        events.append(("replace", os.fspath(src), os.fspath(dst), (st.st_dev, st.st_ino)))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    small_save(target, 2)
    monkeypatch.undo()

    assert saved_value(target) == 2
    final = os.stat(target)
    renames = [e for e in events if e[0] == "replace"]
    assert len(renames) == 1
    _, src, dst, renamed = renames[0]
    assert dst == str(target) and os.path.dirname(src) == str(tmp_path)
    assert renamed == (final.st_dev, final.st_ino)  # the temporary file became the target
    at = events.index(renames[0])
    # the new file, whole (its final size), was synced before it was renamed over the target
    assert ("fsync", "file", renamed, final.st_size) in events[:at], events
    # and the folder was synced after the rename, so that the rename itself is durable
    assert ("fsync", "folder", (folder.st_dev, folder.st_ino)) in [e[:3] for e in events[at:]]


def test_saving_over_a_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "m.npz"
    small_save(target, 1)
    old_umask = os.umask(0o022)  # a new file would be 0o644
    try:
        os.chmod(target, 0o604)
        small_save(target, 2)
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o604
        os.chmod(target, 0o600)
        small_save(target, 3)
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
        fresh = tmp_path / "new.npz"
        small_save(fresh, 4)
        assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o644
    finally:
        os.umask(old_umask)
    assert saved_value(target) == 3


DYING_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from convnet_io.atomic import atomic_path
    with atomic_path(sys.argv[1]) as temporary:
        with open(temporary, "wb") as f:
            f.write(b"half a model")
        print(temporary, flush=True)
        sys.stdin.readline()
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-save: the temporary stays
    """
)


def test_a_save_removes_the_temporaries_of_dead_writers_only(tmp_path):
    from convnet_core import layers as L

    path = tmp_path / "m.h5"
    writer = subprocess.Popen(
        [sys.executable, "-c", DYING_WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        temporary = writer.stdout.readline().strip()
        match = re.fullmatch(
            r"\.m\.h5\.([0-9a-f]{8})-(\d+)\.\w{8}\.tmp", os.path.basename(temporary)
        )
        assert match and int(match[2]) == writer.pid, temporary

        def save():
            params = ({"W": numpy.ones((4, 2), "float32"), "b": numpy.zeros(2, "float32")},)
            net = L.Sequential((L.Dense(2),))
            convnet_io.save(path, layer=net, params=params, input_shape=(4,))

        save()
        assert os.path.exists(temporary)  # its writer is alive: it may still rename it
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.wait(timeout=30) == -signal.SIGKILL
        tag, dead = match[1], writer.pid
        other_tag = "ffffffff" if tag != "ffffffff" else "00000000"  # another machine's
        kept = [
            f".m.h5.{other_tag}-{dead}.abcdefgh.tmp",
            f".m.h5.{tag}-{os.getpid()}.abcdefgh.tmp",  # a save of this process in a thread
            ".m.h5.abcdefgh.tmp",  # no owner in the name
            f".other.h5.{tag}-{dead}.abcdefgh.tmp",  # another file's
            f".m.h5.{tag}-{dead}.abcdefgh.tmp.bak",
        ]
        for name in kept:
            (tmp_path / name).write_bytes(b"x")
        save()
        assert sorted(os.listdir(tmp_path)) == sorted(["m.h5", *kept])
        assert convnet_io.load(path, parts=True).params[0]["W"].shape == (4, 2)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


@pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="Linux tells its boot's id"
)
def test_the_temporaries_tag_names_the_host_the_boot_and_the_pid_namespace():
    # two machines of one host name on a shared file system both have the initial PID
    # namespace, whose inode number is the same everywhere: the boot's id tells them apart
    import hashlib
    import socket

    from convnet_io.atomic import _owner_tag

    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
        boot = file.read().strip()
    namespace = os.stat("/proc/self/ns/pid").st_ino
    owner = f"{socket.gethostname()}\0{boot}\0{namespace}"
    assert _owner_tag() == hashlib.sha256(owner.encode()).hexdigest()[:8]
