#!/usr/bin/env bash
# The whole GPU check in one go, in under 5 minutes on an H100 or H200:
#
#   1. `nox --no-venv -s tests-cuda`: every package's tests on the GPU (CuPy), plus the
#      CPU/GPU equivalence tests (packages/convnet-core/tests/test_cuda_equivalence.py);
#   2. the programs: apps/train_mnist.py --device cuda for 2 epochs of MNIST, then
#      apps/evaluate.py --device cuda on the model it saved;
#   3. `benchmarks/bench_gpu.py --kernels`: one epoch of the README model and of the `best`
#      preset at batch 64 and 512, convnet on CuPy next to PyTorch CUDA, float32 and mixed
#      precision, then each fused kernel against its NumPy-style reference, then for one
#      step at batch 512 the host's time to queue it and the GPU's time to run it.
#
# Usage, from anywhere:
#   bash benchmarks/gpu_check.sh [OUTPUT_DIR]   on the GPU machine
#   bash benchmarks/gpu_check.sh --fetch-wheels on a machine with PyPI, before: fills .whl/
# Logs and bench_gpu.json go to OUTPUT_DIR (default: $OUT when set, else artifacts/gpu_check).
# Exit status: non-zero when the tests or the programs failed, or the benchmark did not finish.
# The tests get at most 220 s, run by 4 pytest-xdist processes when the machine has
# pytest-xdist (see below), and the programs 130 s; the benchmark gets 170 s, or what is
# left of 530 s when less, so the whole check ends inside a device run with timeout_s=540
# even when each part runs long (the benchmark writes its JSON after each row, so a cut
# leaves what it measured).
#
# The machine needs Python with CuPy (cupy-cuda13x), PyTorch with CUDA, numpy, attrs,
# pytest, hypothesis, h5py, Pillow, click and tqdm. It needs no package registry: our
# packages are imported from this tree (tests-cuda's --no-venv mode sets PYTHONPATH), and
# what is missing there (nox and its dependencies) comes as pure-Python wheels in .whl/ at
# the top of the checkout, installed into /tmp/site when present. `--fetch-wheels` runs:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl $WHEELS
#
# with WHEELS as below. (`.whl/` is git-ignored; carry it to the GPU machine with the
# checkout.)

set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS="nox==2026.10.20 argcomplete==3.7.2 colorlog==6.12.0 dependency-groups==1.3.2
  virtualenv==21.15.11 distlib==0.4.4 platformdirs==4.14.8 python-discovery==1.9.6
  filelock==4.3.1 packaging==26.4 humanize==4.17.0"
if [ "${1:-}" = "--fetch-wheels" ]; then
    # shellcheck disable=SC2086 # one argument per wheel
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl $WHEELS
fi
out_dir=${1:-${OUT:-artifacts/gpu_check}}
mkdir -p "$out_dir"
export PYTHONUNBUFFERED=1
start=$(date +%s)
elapsed() { echo "[$(($(date +%s) - start)) s] $*"; }

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "installing .whl/ failed"; exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 - <<'EOF'
import importlib, importlib.metadata, sys
print("python", sys.version.split()[0])
distributions = importlib.metadata.packages_distributions()  # import name -> distributions
for name in ("numpy", "cupy", "torch", "attrs", "pytest", "hypothesis", "h5py", "PIL", "click",
             "tqdm", "nox"):
    try:
        importlib.import_module(name)
        versions = [importlib.metadata.version(d) for d in distributions.get(name, [])]
        print(f"  {name:10} {' '.join(versions) or '?'}")
    except Exception as error:  # report everything, decide below
        print(f"  {name:10} MISSING ({type(error).__name__}: {error})")
EOF

status=0
# On a fresh machine CuPy compiles each kernel with NVRTC on its first use: host work, up to
# about a second each, for hundreds of element-wise and reduction kernels. pytest-xdist, where
# the machine has it, runs the tests in 4 processes, so 4 compile at a time: 4 of the 16
# cores, since each process also makes its own CUDA context (about 0.5 GB of GPU memory) and
# they share the one GPU; each process's BLAS gets 4 threads, so the cores are not
# oversubscribed. --dist loadfile keeps each test file in one process, in the order a serial
# run has (CuPy's on-disk kernel cache is shared, so a kernel is compiled once).
pytest_args=(-q -p no:cacheprovider)
threads=()
if python3 -c "import xdist" 2>/dev/null; then
    pytest_args+=(-n 4 --dist loadfile)
    threads=(OMP_NUM_THREADS=4 OPENBLAS_NUM_THREADS=4 MKL_NUM_THREADS=4)
fi
elapsed "tests-cuda (pytest ${pytest_args[*]})"
if python3 -c "import nox" 2>/dev/null; then
    env "${threads[@]}" timeout 220 python3 -m nox --no-venv -s tests-cuda -- "${pytest_args[@]}" \
        2>&1 | tee "$out_dir/tests_cuda.log" || status=1
else
    # the commands tests-cuda runs in --no-venv mode, for a machine without nox
    echo "nox is not importable (no .whl/?): running tests-cuda's commands directly"
    src=$(printf '%s:' "$PWD"/packages/*/src)
    export PYTHONPATH=${src}${PYTHONPATH:-} CONVNET_TEST_DEVICE=cuda
    python3 -m convnet_core --require-cuda || exit 1
    env "${threads[@]}" timeout 220 python3 -m pytest packages/*/tests \
        -m "not parity and not gui and not nvrtc" "${pytest_args[@]}" \
        2>&1 | tee "$out_dir/tests_cuda.log" || status=1
fi
elapsed "tests-cuda done (status $status)"

# the main job on the GPU: train (saving from device arrays), then load the file onto the
# GPU and evaluate it; its files stay in /tmp, only the logs come back
elapsed "train_mnist.py and evaluate.py with --device cuda"
app_dir=$(mktemp -d /tmp/gpu_check_app.XXXXXX)
(
    export PYTHONPATH=$(printf '%s:' "$PWD"/packages/*/src)${PYTHONPATH:-}
    timeout 100 python3 apps/train_mnist.py --device cuda --epochs 2 \
        --out "$app_dir/mnist.h5" &&
        timeout 30 python3 apps/evaluate.py "$app_dir/mnist.h5" --device cuda
) 2>&1 | tee "$out_dir/apps_cuda.log" || status=1
elapsed "apps done (status $status)"

left=$((530 - ($(date +%s) - start)))
bench_limit=$((left < 170 ? left : 170))
if [ "$bench_limit" -lt 20 ]; then  # (timeout 0 would mean no limit at all)
    elapsed "no time left for bench_gpu.py"
    status=1
else
    elapsed "bench_gpu.py (at most $bench_limit s)"
    timeout "$bench_limit" python3 benchmarks/bench_gpu.py --kernels --anatomy \
        --json "$out_dir/bench_gpu.json" \
        2>&1 | tee "$out_dir/bench_gpu.log" || status=1
fi
elapsed "all done (status $status)"
exit $status
