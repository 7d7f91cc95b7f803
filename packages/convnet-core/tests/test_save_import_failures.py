"""Model.save and Model.load when convnet-io cannot be imported: "not installed" only when the
convnet_io package itself is missing; a convnet-io that is installed but fails to import (a
broken dependency such as h5py) is reported as that failure, with the real error chained."""

import sys

import pytest
from convnet_core import Model
from convnet_core.layers import Dense


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """A folder first on sys.path whose modules replace convnet_io (and h5py) for a test."""
    for name in list(sys.modules):
        if name == "convnet_io" or name.startswith("convnet_io."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, "h5py", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name, source):
        (tmp_path / f"{name}.py").write_text(source)

    return write


def refusals(xp):
    model = Model([Dense(2)], device=xp).build((3,))
    for call in (lambda: model.save("x.h5"), lambda: Model.load("x.h5")):
        with pytest.raises(ImportError) as error:
            call()
        yield error.value


def test_a_missing_convnet_io_is_not_installed(xp, monkeypatch):
    monkeypatch.setitem(sys.modules, "convnet_io", None)
    for error in refusals(xp):
        assert str(error) == (
            "saving and loading models needs the convnet-io package: pip install convnet-io"
        )


def test_a_convnet_io_that_fails_to_import_is_named_with_its_error(xp, fake_packages):
    fake_packages("convnet_io", "from convnet_core import does_not_exist\n")
    for error in refusals(xp):
        assert str(error).startswith(
            "saving and loading models needs the convnet-io package, which is installed but "
            "failed to import: ImportError: cannot import name 'does_not_exist' from "
            "'convnet_core'"
        )
        assert isinstance(error.__cause__, ImportError)
        assert error.__cause__.name == "convnet_core"


def test_a_missing_dependency_of_convnet_io_is_named(xp, fake_packages):
    fake_packages("convnet_io", "import h5py_is_not_here\n")
    for error in refusals(xp):
        assert str(error) == (
            "saving and loading models needs the convnet-io package, which is installed but "
            "failed to import: ModuleNotFoundError: No module named 'h5py_is_not_here'"
        )
        assert error.__cause__.name == "h5py_is_not_here"


@pytest.mark.parametrize(
    ("raised", "words"),
    [
        ("ImportError('libhdf5.so.310: cannot open shared object file')",
         "ImportError: libhdf5.so.310: cannot open shared object file"),
        ("ValueError('numpy.dtype size changed, may indicate binary incompatibility')",
         "ValueError: numpy.dtype size changed, may indicate binary incompatibility"),
    ],
)  # fmt: skip
def test_a_broken_h5py_is_named_with_its_error(xp, fake_packages, raised, words):
    fake_packages("h5py", f"raise {raised}\n")
    fake_packages("convnet_io", "import h5py\n")
    for error in refusals(xp):
        assert str(error) == (
            "saving and loading models needs the convnet-io package, which is installed but "
            f"failed to import: {words}"
        )
        assert f"{type(error.__cause__).__name__}: {error.__cause__}" == words
