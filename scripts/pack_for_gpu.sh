#!/usr/bin/env bash
# Prepare .gpu/ for scripts/gpu_check.sh on a machine with no install step and no internet:
# the wheels of the packages it lacks (hydra-core, omegaconf, antlr4-python3-runtime, at the
# versions of constraints.txt) and CIFAR-10 packed into one file (60,000 small JPEGs are slow
# to send one by one; about 57 MiB gzipped). .gpu/ is added to .git/info/exclude, so it
# never reaches a commit but travels with an untracked-files copy of the checkout.
#   bash scripts/pack_for_gpu.sh [DATA]      # DATA: the folder holding cifar10/ (default
#                                            # $TRAINREPRO_DATA, else ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${TRAINREPRO_DATA:-../shared/data}}
PY=${PYTHON:-python3}
mkdir -p .gpu/wheels
grep -qxF '.gpu/' .git/info/exclude 2> /dev/null || { mkdir -p .git/info; echo '.gpu/' >> .git/info/exclude; }

pin() { grep -E "^$1==" constraints.txt | head -n 1; }
for package in hydra-core omegaconf; do
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest .gpu/wheels "$(pin "$package")"
done
# antlr4-python3-runtime 4.9.3 is published as a source archive only: build its wheel here.
"$PY" -m pip wheel --quiet --no-deps --wheel-dir .gpu/wheels "$(pin antlr4-python3-runtime)"

if [ -d "$DATA/cifar10" ]; then
    # gzip: the tar headers and padding of 60,000 small files are a third of the plain tar
    rm -f .gpu/cifar10.tar
    tar -czf .gpu/cifar10.tar.gz -C "$DATA" cifar10
else
    echo "warning: no $DATA/cifar10: the check will benchmark on synthetic images" >&2
fi
ls -l .gpu/wheels .gpu/cifar10.tar.gz 2> /dev/null
du -sh .gpu
