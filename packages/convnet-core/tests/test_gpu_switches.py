"""The CONVNET_* switches that send a GPU fast path back to its array code.

Each takes one vocabulary, "kernels" (or "kernel") for the fast path and "arrays" for the
array code, besides its own older words ("gather", "loop", "copies"); unset or empty means
the fast path. Anything else is a ValueError when convnet_core reads it (on import): a
misspelt setting must not quietly turn a fast path off.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from convnet_core import cuda_kernels as K

# environment variable -> module attribute, its fast-path value and its array-code value
SWITCHES = {
    "CONVNET_IM2COL": ("IM2COL_ON_GPU", "gather", "copies"),
    "CONVNET_COL2IM": ("COL2IM_ON_GPU", "gather", "loop"),
    "CONVNET_MAXPOOL": ("MAXPOOL_ON_GPU", "kernels", "arrays"),
    "CONVNET_BATCHNORM": ("BATCHNORM_ON_GPU", "kernels", "arrays"),
    "CONVNET_SOFTMAX_XENT": ("SOFTMAX_XENT_ON_GPU", "kernel", "arrays"),
}


def switch_values(env):
    """The five switches' module attributes when convnet_core is imported under `env`
    (added to a copy of this environment with every CONVNET_* switch removed), or the
    import's error: (returncode, stdout, stderr)."""
    environment = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    environment.update(env)
    names = [attribute for attribute, _, _ in SWITCHES.values()]
    code = f"from convnet_core import cuda_kernels as K; print([getattr(K, n) for n in {names}])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment,
        timeout=120,
    )  # fmt: skip
    return result.returncode, result.stdout.strip(), result.stderr


def test_unset_switches_take_the_fast_paths():
    returncode, out, err = switch_values({})
    assert returncode == 0, err
    assert out == str([fast for _, fast, _ in SWITCHES.values()])


def test_a_misspelt_switch_stops_the_import_with_the_words_it_takes():
    returncode, _, err = switch_values({"CONVNET_MAXPOOL": "kernal"})
    assert returncode != 0
    assert err.strip().splitlines()[-1] == (
        "ValueError: CONVNET_MAXPOOL='kernal': use 'kernels' or 'kernel' for the GPU "
        "kernels (the default), or 'arrays' for the array code"
    )


@pytest.mark.parametrize("variable", sorted(SWITCHES))
@pytest.mark.parametrize("value", ["kernals", "array", "gathr", "on", "1"])
def test_every_switch_refuses_an_unknown_word(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    _, fast, slow = SWITCHES[variable]
    fast_words = " or ".join(repr(w) for w in dict.fromkeys(("kernels", "kernel", fast)))
    slow_words = " or ".join(repr(w) for w in dict.fromkeys(("arrays", slow)))
    want = (
        f"{variable}={value!r}: use {fast_words} for the GPU kernels (the default), "
        f"or {slow_words} for the array code"
    )
    with pytest.raises(ValueError) as error:
        K.gpu_switch(variable, fast, slow)
    assert str(error.value) == want


@pytest.mark.parametrize("variable", sorted(SWITCHES))
def test_every_switch_takes_kernels_and_arrays_and_its_own_words(monkeypatch, variable):
    _, fast, slow = SWITCHES[variable]
    spellings = {
        "": fast, "kernels": fast, "kernel": fast, " Kernels ": fast, fast: fast,
        "arrays": slow, "ARRAYS": slow, slow: slow,
    }  # fmt: skip
    for value, want in spellings.items():
        monkeypatch.setenv(variable, value)
        assert K.gpu_switch(variable, fast, slow) == want, value
    monkeypatch.delenv(variable)
    assert K.gpu_switch(variable, fast, slow) == fast


def test_the_module_reads_each_switch_with_its_words():
    # SOFTMAX_XENT_ON_GPU keeps "kernel", MAXPOOL_ON_GPU "kernels": what their readers
    # (losses.py, the layers, benchmarks/bench_gpu.py) compare with
    returncode, out, err = switch_values(
        {"CONVNET_SOFTMAX_XENT": "kernels", "CONVNET_MAXPOOL": "kernel",
         "CONVNET_COL2IM": "arrays", "CONVNET_IM2COL": "kernels", "CONVNET_BATCHNORM": "arrays"}
    )  # fmt: skip
    assert returncode == 0, err
    assert out == str(["gather", "loop", "kernels", "arrays", "kernel"])
