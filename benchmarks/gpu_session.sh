#!/usr/bin/env bash
# Every GPU check of this repository as one prepared run (a lent GPU is time-limited).
#
# Usage (repository root, on a CUDA machine with torch, torchvision, scikit-learn, scipy,
# matplotlib, tensorboard and pytest; the package need not be installed):
#     OUT=outputs/gpu bash benchmarks/gpu_session.sh
# Each step has its own time limit and log file under $OUT; a failing step does not stop
# the others. The order is by importance, so a run cut short still has the key numbers.
# ONLY="augment profile" runs just those steps; GPU_TESTS="-k train" narrows the GPU tests.
set -uo pipefail
OUT=${OUT:-outputs/gpu}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg

step() {  # step NAME SECONDS COMMAND...   (skipped unless NAME is in $ONLY, when set)
    local name=$1 limit=$2
    shift 2
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
    local t0=$SECONDS
    echo "=== $name"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n "${TAIL:-25}" "$OUT/$name.log"
    echo "=== $name: exit $rc, $((SECONDS - t0)) s"
    echo "$name exit=$rc seconds=$((SECONDS - t0))" >>"$OUT/summary.txt"
}

{
    date -u +"%Y-%m-%d %H:%M UTC"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)"
    nproc
} | tee "$OUT/summary.txt"

step augment 120 "$PY" benchmarks/augment.py --device cuda
step profile 240 "$PY" benchmarks/profile_step.py --device cuda
step train_eager 100 "$PY" benchmarks/train_throughput.py --device cuda
step gpu_tests 150 "$PY" -m pytest -q -m gpu tests -p no:cacheprovider -rs ${GPU_TESTS:-}
step train_compiled 180 "$PY" benchmarks/train_throughput.py --device cuda --compile --compile-mode reduce-overhead
step train_compiled_nograph 180 "$PY" benchmarks/train_throughput.py --device cuda --compile
step density 60 "$PY" benchmarks/density.py --device cuda
step localize 90 "$PY" benchmarks/localize.py --device cuda
if [ -d "${DATA:-data/synthetic_fast}" ] && { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" train_cli "* ]]; }; then  # end to end through the CLI, as a user runs it
    step train_cli 150 bash -c "
        $PY -m cutpaste_lib train --data ${DATA:-data/synthetic_fast} --category synth_grid \
            --steps ${STEPS:-1500} --image-size 256 --device cuda --out /tmp/cutpaste_run --log-every 500 \
            --no-progress --overwrite ${TRAIN_FLAGS:-} &&
        $PY -m cutpaste_lib evaluate --checkpoint /tmp/cutpaste_run/checkpoint.pt \
            --data ${DATA:-data/synthetic_fast} --category synth_grid --device cuda --out /tmp/cutpaste_run/eval"
fi
cat "$OUT/summary.txt"
