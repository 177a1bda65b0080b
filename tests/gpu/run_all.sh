#!/bin/bash
# The GPU evidence of issue 16 in one command, on a machine with an NVIDIA GPU (sm_90) and
# no package registry: tests/gpu, the benchmark (one stream, batches of 8 to 64,
# mlx-audio 0.6.2 in the same run) and two starts sharing a kernel cache. Logs and JSON go
# to $OUT (default: gpu-out/). MLX's CUDA build and mlx-audio travel as wheels in the
# git-ignored .gpu/ folder (its README: the MLX wheel, the CUDA library tarball, and
# mlx_audio-0.6.2-py3-none-any.whl, whose imports the machine has); the parity cases and
# the reference voice in .gpu/shared.
#     bash tests/gpu/run_all.sh
set -o pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
SITE=$(mktemp -d) &&
python3 -m pip install -q --no-index --no-deps --target "$SITE" .gpu/mlx-0.32.4-*.whl &&
python3 -c "import tarfile,sys; tarfile.open('.gpu/mlxcuda13-sm90.tar.xz').extractall(sys.argv[1], filter='data')" "$SITE" &&
ln -sf "$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])')" "$SITE/nvidia" &&
export PYTHONPATH=$SITE:$PWD || exit 1
export VVREADER_SHARED=$PWD/.gpu/shared PYTHONUNBUFFERED=1
# The kernel caches of this run only (the tests and the start-up measurement make their own).
export VVREADER_KERNEL_CACHE=$(mktemp -d)
unset MLX_PTX_CACHE_DIR
status=0
BASELINE=(--baseline --baseline-python python3)
if ! python3 -m pip install -q --no-index --no-deps --target "$SITE" .gpu/mlx_audio-0.6.2-*.whl; then
    echo "== no mlx-audio 0.6.2 wheel in .gpu/: the benchmark runs without its baseline" |
        tee -a "$OUT/summary.txt"
    BASELINE=()
    status=1
fi
step() {  # step NAME SECONDS COMMAND...: its output in $OUT/NAME.txt, its time and status
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    echo "== $name: exit status $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    tail -25 "$OUT/$name.txt"
    [ $rc -eq 0 ] || status=1
}
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv; lscpu | grep 'Model name'
  python3 -c "import mlx.core as mx; print('mlx', mx.__version__, mx.default_device(), mx.device_info())"
} 2>&1 | tee "$OUT/machine.txt"
# The full-size random weights, once for the tests and the benchmarks (about a minute).
step weights 150 python3 -c "import sys; sys.path.append('bench'); from engine_paths import full_model_dir; print(full_model_dir())"
step gpu-tests 270 python3 -m pytest -q -s -p no:cacheprovider -rs tests/gpu --junitxml="$OUT/gpu-tests.xml"
step bench 200 python3 bench/engine.py --frames 24 --runs 3 --batch 8,16,32,64 --require-kernels \
    "${BASELINE[@]}"
grep '^{' "$OUT/bench.txt" | tail -1 > "$OUT/bench.json"
step startup 100 python3 bench/gpu.py startup
grep '^{' "$OUT/startup.txt" | tail -1 > "$OUT/startup.json"
exit $status
