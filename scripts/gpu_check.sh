#!/usr/bin/env bash
# The prepared GPU check of issue 20, about 8 minutes on one H200: the environment, the matmul
# peak, `python -m trainrepro.bench --device cuda` (variants, trainer against a bare loop, MFU
# against the peak of the same run, 1/2/4/8 runs at once), the CUDA-path tests
# (`pytest -m cuda`: deterministic rerun and SIGTERM + resume, fp16 scaler, host syncs, fused
# optimizers), and one medium profile end to end once papers have one. JSON and logs go to OUT
# (default results/bench/cuda/<UTC date>); summary.json there lists each step's exit status
# and seconds, so a step that fails or runs out of time never hides the others.
#
# It runs from a plain copy of the repository, with no install step and no internet:
#   bash scripts/pack_for_gpu.sh          # here: .gpu/wheels and .gpu/cifar10.tar.gz (ignored by git)
#   bash scripts/gpu_check.sh [OUT]       # there, from the copy's root
# Missing hydra-core / omegaconf / antlr4 are installed from .gpu/wheels into .gpu/site;
# .gpu/cifar10.tar.gz is unpacked into a temporary folder unless TRAINREPRO_DATA is set.
# GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 runs every step tiny on a CPU (checks the script).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=${1:-results/bench/cuda/$(date -u +%Y-%m-%d)}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
SMOKE=${GPU_CHECK_SMOKE:-0}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
STEPS="$OUT/steps.tsv"
: > "$STEPS"

step() {  # step NAME TIMEOUT_S COMMAND...: run it, log it, record its status and seconds
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout --signal=TERM --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >> "$STEPS"
    tail -n 25 "$OUT/$name.log"
    echo "== $name: exit $rc after $((SECONDS - start)) s"
}

# Packages beyond torch, torchvision, pandas, matplotlib and tqdm: from the carried wheels.
if ! "$PY" -c "import hydra, omegaconf" 2> /dev/null; then
    "$PY" -m pip install --quiet --no-index --no-deps --find-links .gpu/wheels \
        --target .gpu/site hydra-core omegaconf antlr4-python3-runtime \
        || { echo "error: hydra-core/omegaconf missing and not in .gpu/wheels"; exit 2; }
fi
export PYTHONPATH="$REPO:$REPO/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${TRAINREPRO_DATA:-}" ] && [ -f .gpu/cifar10.tar.gz ]; then
    TRAINREPRO_DATA=$(mktemp -d)
    tar -xzf .gpu/cifar10.tar.gz -C "$TRAINREPRO_DATA"
fi
export TRAINREPRO_DATA=${TRAINREPRO_DATA:-}
DATA_ARGS=()
[ -n "$TRAINREPRO_DATA" ] && DATA_ARGS=(--data "$TRAINREPRO_DATA")

step environment 30 "$PY" - <<'EOF'
import json, os, platform, subprocess, sys
import torch
info = {
    "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version(), "gpus": [torch.cuda.get_device_name(i)
    for i in range(torch.cuda.device_count())], "cpu_cores": os.cpu_count(),
    "platform": platform.platform(), "data": os.environ.get("TRAINREPRO_DATA") or None,
}
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,"
        "memory.total,clocks.max.sm,power.limit", "--format=csv,noheader"], capture_output=True,
        text=True, timeout=30).stdout.strip()
except (OSError, subprocess.TimeoutExpired) as e:
    info["nvidia_smi"] = f"unavailable: {e}"
print(json.dumps(info, indent=2))
EOF

# Time limits sum to 560 s, under the device tool's 600 s per command; svrg's medium profile
# is estimated at ~2 min (conf/profile/svrg_medium.yaml), the rest usually end early.
if [ "$SMOKE" = 1 ]; then
    BENCH=(--models lenet5 --variants fp32,bf16 --windows 2 --steps 2 --peak-size 256
           --sections variants,trainer --train-size 256)
    CONCURRENT=(--models lenet5 --windows 2 --steps 2 --peak-size 0 --sections "" --concurrent 1,2)
    TESTS=(-k cpu tests/test_cuda_paths.py)  # the CPU case of the same tests
else
    BENCH=(--models wrn16-4,resnet20,lenet5,wrn28-10 --variants fp32,channels_last,bf16,bf16+cl
           --windows 3 --window-seconds 0.5 --sections variants,trainer,pipeline)
    CONCURRENT=(--models wrn16-4 --windows 3 --window-seconds 0.5 --peak-size 0 --sections ""
                --concurrent 1,2,4,8 --concurrent-variant bf16+cl)
    TESTS=(-m cuda tests/test_cuda_paths.py tests/test_host_sync.py tests/test_optim_kernels.py)
fi
step bench 170 "$PY" -m trainrepro.bench --device "$DEVICE" "${BENCH[@]}" "${DATA_ARGS[@]}" \
    --out "$OUT/bench.json"
step concurrency 80 "$PY" -m trainrepro.bench --device "$DEVICE" "${CONCURRENT[@]}" \
    "${DATA_ARGS[@]}" --out "$OUT/concurrency.json"
step cuda_tests 100 "$PY" -m pytest -q -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml" \
    "${TESTS[@]}"

# One medium profile end to end, when the paper declares one (issue 20, ask 5).
PAPER=${GPU_CHECK_PAPER:-svrg}
if [ "$SMOKE" = 1 ]; then
    printf 'medium_profile\tnot run\t0\n' >> "$STEPS"
    echo "== medium profile: skipped in a smoke run (its runs ask for device=cuda)"
elif "$PY" -c "import sys; from trainrepro.reproduce.papers import PAPERS
sys.exit('medium' not in PAPERS['$PAPER'].profiles)"; then
    step "medium_$PAPER" 180 "$PY" -m trainrepro reproduce "$PAPER" --profile medium --gpus 0 \
        --jobs-per-gpu 8 --runs-root "$OUT/runs/$PAPER-medium" --out "$OUT/$PAPER-medium"
else
    printf 'medium_profile\tnot run\t0\n' >> "$STEPS"
    echo "== medium profile: $PAPER declares none"
fi

"$PY" - "$STEPS" "$OUT/summary.json" <<'EOF'
import json, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
steps = {name: {"exit": rc, "seconds": int(s)} for name, rc, s in rows}
json.dump({"steps": steps}, open(sys.argv[2], "w"), indent=2)
print(json.dumps(steps))
EOF
awk -F'\t' '$2 != 0 && $2 != "not run" {bad=1} END {exit bad}' "$STEPS"
