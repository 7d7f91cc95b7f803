"""An h5py that is installed but cannot import (its HDF5 library missing, say) is named as
such in the NPZ fallback's warning and in the errors, with its import error: the advice
to install h5py would not mend it."""

import subprocess
import sys
import textwrap


def run_with_broken_h5py(tmp_path, script: str) -> subprocess.CompletedProcess:
    """Run `script` in a fresh Python whose `import h5py` fails as a broken build does."""
    fake = tmp_path / "fake_site" / "h5py"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise ImportError("libhdf5_serial.so.103: cannot open shared object file")\n'
    )
    path = [str(fake.parent), *sys.path]
    code = f"import sys; sys.path[:0] = {path!r}\n" + textwrap.dedent(script)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )


def test_a_broken_h5py_is_named_with_its_error(tmp_path):
    result = run_with_broken_h5py(
        tmp_path,
        """
        import warnings
        import convnet_io
        from convnet_core import init, layers as L
        net = L.Sequential((L.Dense(2),))
        params, state = init(net, (3,), rng=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            written = convnet_io.save("m.h5", layer=net, params=params, input_shape=(3,))
        print(written)
        print(caught[0].message)
        try:
            convnet_io.storage.write_hdf5("n.h5", {}, {})
        except ImportError as error:
            print(error)
        """,
    )
    assert result.returncode == 0, result.stderr
    written, warning, refusal = result.stdout.splitlines()
    reason = (
        "h5py is installed but failed to import (ImportError: libhdf5_serial.so.103: "
        "cannot open shared object file)"
    )
    assert written == "m.h5.npz"
    assert warning == f"{reason}: saving m.h5 as m.h5.npz (pip install h5py for HDF5)"
    assert (
        refusal
        == f"writing HDF5 needs h5py, but {reason}: pip install h5py (or save to a .npz path)"
    )
