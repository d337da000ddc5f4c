#!/usr/bin/env bash
# Everything this project checks on a GPU, in one device call (a few minutes on an H100): the CUDA
# tests (renderer values and gradients, registration, mixed-precision training) and the training
# throughput per profile.
#
# The device image has torch, but not SimpleITK or pydicom, and ../shared does not travel. Prepare a
# git-ignored folder .gpu/ here (under the 64 MiB the device takes; SimpleITK's wheel is ~50 MB):
#   echo /.gpu/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .gpu/wheels SimpleITK pydicom
#   mkdir -p .gpu/data/open/ct/torso_totalseg && cp ../shared/data/open/ct/torso_totalseg/*.nii.gz $_
# then run it with carry [".gpu"]:  bash benchmarks/gpu_check.sh
# The throughput figures then come from the torso CT (3 mm); pass another CT as $XVR_BENCH_CT.
set -u
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
if [ -d .gpu/wheels ]; then python3 -m pip install -q --no-index --find-links .gpu/wheels SimpleITK pydicom; fi
if [ -d .gpu/data ]; then export XVR_SHARED_DATA="$PWD/.gpu/data"; fi
export PYTHONPATH="$PWD/XVRCore${PYTHONPATH:+:$PYTHONPATH}"
ct=${XVR_BENCH_CT:-${XVR_SHARED_DATA:-../shared/data}/open/ct/torso_totalseg/torso_ct_3mm.nii.gz}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -m pytest -q -rs -p no:cacheprovider Testing/core -k cuda 2>&1 | tee "$out/cuda_tests.txt"
python3 benchmarks/bench_train.py --device cuda --seconds 40 --ct "$ct" --output "$out/bench_train_cuda.json" 2>&1 \
    | grep -v '^@@XVR' | tee "$out/bench_train_cuda.txt"
