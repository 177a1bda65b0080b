#!/bin/bash
# The GPU evidence of issue 16, on a machine with an NVIDIA GPU (sm_90) and no package
# registry, in two parts that each fit a 540-second command on a machine started cold:
#     bash tests/gpu/run_all.sh bench   # the benchmark: one stream, batches, mlx-audio 0.6.2
#     bash tests/gpu/run_all.sh tests   # tests/gpu, the start-up measurement among them
#     bash tests/gpu/run_all.sh         # both, one after the other
#     bash tests/gpu/run_all.sh batch   # the batches only, on MLX (no CUDA frame kernels
#                                       # to build, no mlx-audio): one stream, then
#                                       # $BATCHES (16,64,128,256) streams together
#     bash tests/gpu/run_all.sh gemm    # bench/gemm.py (the tensor-core product against
#                                       # MLX's float32 matmul), then the batches of
#                                       # $BATCHES (64,256) streams with the tensor cores
#                                       # ($TENSOR_CORES: "1 0" both, in that order)
#     bash tests/gpu/run_all.sh export  # bench/export.py: a 256-sentence book exported 64
#                                       # sentences at a time and one at a time (WAV; the
#                                       # app's pure-Python wheels in .gpu/wheels/)
# Each step has its own time limit; its output goes to $OUT/STEP.txt as it comes, and each
# finished part of the benchmark rewrites $OUT/bench.json, so a step stopped by its limit
# still leaves what it finished. $OUT defaults to gpu-out/. MLX's CUDA build and mlx-audio
# travel as wheels in the git-ignored .gpu/ folder (its README: the MLX wheel, the CUDA
# library tarball, and mlx_audio-0.6.2-py3-none-any.whl, whose imports the machine has);
# the parity cases and the reference voice in .gpu/shared.
#
# The first process to run MLX's CUDA kernels on a fresh kernel cache compiles MLX's own
# fused kernels (about two minutes on an H100); later processes sharing the cache find
# them. Each part pays that once: the benchmark in its one process (mlx-audio's process
# shares its folder), the tests in the start-up measurement, which runs first on the
# tests' own cache (tests/gpu/test_kernels.py).
set -o pipefail
cd "$(dirname "$0")/../.." || exit 1
PART=${1:-all}
case $PART in bench | tests | all | batch | export | gemm) ;; *)
    echo "usage: bash tests/gpu/run_all.sh [bench|tests|all|batch|export|gemm]" >&2
    exit 2
    ;;
esac
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
T0=$SECONDS
say() { echo "[$((SECONDS - T0)) s] $*" | tee -a "$OUT/summary.txt"; }
SITE=$(mktemp -d) &&
python3 -m pip install -q --no-index --no-deps --target "$SITE" .gpu/mlx-0.32.4-*.whl &&
python3 -c "import tarfile,sys; tarfile.open('.gpu/mlxcuda13-sm90.tar.xz').extractall(sys.argv[1], filter='data')" "$SITE" &&
ln -sf "$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])')" "$SITE/nvidia" &&
export PYTHONPATH=$SITE:$PWD || exit 1
export VVREADER_SHARED=$PWD/.gpu/shared PYTHONUNBUFFERED=1
# The kernel cache of this run only (the tests make their own), unless $KERNEL_CACHE
# names one to keep between runs on the same machine.
export VVREADER_KERNEL_CACHE=${KERNEL_CACHE:-$(mktemp -d)}
unset MLX_PTX_CACHE_DIR
status=0
step() {  # step NAME SECONDS COMMAND...: its output in $OUT/NAME.txt as it comes
    local name=$1 limit=$2
    shift 2
    say "$name: starting (limit $limit s)"
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=$?
    say "$name: exit status $rc after $((SECONDS - t0)) s"
    [ $rc -eq 0 ] || status=1
}
say "part $PART"
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv; lscpu | grep 'Model name'
  python3 -c "import mlx.core as mx; print('mlx', mx.__version__, mx.default_device(), mx.device_info())"
} 2>&1 | tee "$OUT/machine.txt"
# The full-size random weights, for the tests and the benchmark (about 25 s).
step weights 90 python3 -c "import sys; sys.path.append('bench'); from engine_paths import full_model_dir; print(full_model_dir())"

if [ "$PART" = batch ]; then
    # The batched path runs MLX's functions whatever the switch; with it off, the one
    # stream does too (its kernels need no build) and gives the MLX one-stream figure.
    export VVREADER_CUDA_KERNELS=0
    step batch "${BATCH_LIMIT:-360}" python3 bench/engine.py --frames "${FRAMES:-24}" \
        --runs "${RUNS:-2}" --batch "${BATCHES:-16,64,128,256}" --json-out "$OUT/batch.json"
elif [ "$PART" = gemm ]; then
    step gemm 150 python3 bench/gemm.py
    export VVREADER_CUDA_KERNELS=0
    for tc in ${TENSOR_CORES:-1 0}; do
        export VVREADER_TENSOR_CORES=$tc
        step "batch-tensor-cores-$tc" "${BATCH_LIMIT:-240}" python3 bench/engine.py \
            --frames "${FRAMES:-24}" --runs "${RUNS:-1}" --batch "${BATCHES:-64,256}" \
            --json-out "$OUT/batch-tensor-cores-$tc.json"
    done
elif [ "$PART" = export ]; then
    # What the export imports beyond the engine (markdown-it-py, lxml, defusedxml,
    # soundfile, ...) travels as wheels: the machine has no registry.
    python3 -m pip install -q --no-index --no-deps --target "$SITE" .gpu/wheels/*.whl || exit 1
    export VVREADER_CUDA_KERNELS=0
    step export 200 python3 bench/export.py --batch 64 --sentences 256 --single 16 --words 12 \
        --format wav
elif [ "$PART" != tests ]; then
    BASELINE=(--baseline --baseline-python python3 --baseline-timeout 120)
    if ! python3 -m pip install -q --no-index --no-deps --target "$SITE" .gpu/mlx_audio-0.6.2-*.whl; then
        say "no mlx-audio 0.6.2 wheel in .gpu/: the benchmark runs without its baseline"
        BASELINE=()
        status=1
    fi
    # The one stream first, then mlx-audio, then the batch sizes in turn.
    step bench 400 python3 bench/engine.py --frames 24 --runs 3 --batch 16,64,128 \
        --require-kernels --json-out "$OUT/bench.json" "${BASELINE[@]}"
fi

if [ "$PART" = tests ] || [ "$PART" = all ]; then
    step gpu-tests 420 python3 -m pytest -q -s -p no:cacheprovider -rs tests/gpu \
        --junitxml="$OUT/gpu-tests.xml"
    # The start-up measurement's JSON line (the first test's).
    grep '^{"cache"' "$OUT/gpu-tests.txt" | tail -1 > "$OUT/startup.json"
fi
say "done: status $status"
exit $status
