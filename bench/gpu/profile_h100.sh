#!/usr/bin/env bash
# Profile the h100 for real on a lent H100, in calls of at most 10 minutes each.
#
#   bash bench/gpu/profile_h100.sh [TARGET_SAMPLES=1000] [PROFILE_SECONDS=420]
#
# Runs from the repository root with the machine's own python3 (which holds CUDA
# PyTorch, numpy, scipy, scikit-learn, PyYAML, tqdm) and this checkout on PYTHONPATH,
# so nothing is installed. Profiles for at most PROFILE_SECONDS (a killed profile run
# loses nothing: rows are appended atomically and the next run resumes), then trains
# the predictor on every sample so far and writes to $OUT (or ./gpu-out):
#   h100.samples.jsonl, profile.json, predictor.tgz, predictor_report.json,
#   darts_v2.json, env.txt
# To continue on a fresh machine, copy $OUT/h100.samples.jsonl to
# bench/gpu/h100.samples.jsonl (untracked, so it travels with the tree) and run again.
set -euo pipefail
target=${1:-1000}
budget=${2:-420}
out=${OUT:-$PWD/gpu-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export HW_NAS_HOME=${HW_NAS_HOME:-/tmp/hw-nas-h100}
profiles=$HW_NAS_HOME/hardware_profiles
mkdir -p "$profiles"
cp "${PROFILE_YAML:-bench/gpu/h100.measured.yaml}" "$profiles/h100.yaml"  # override: dry runs
if [ -f bench/gpu/h100.samples.jsonl ] && [ ! -f "$profiles/h100.samples.jsonl" ]; then
  cp bench/gpu/h100.samples.jsonl "$profiles/h100.samples.jsonl"   # resume a prior call
fi
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(0))"
} > "$out/env.txt" 2>&1 || true
nas() { python3 -m nas.cli.main "$@"; }
# profile until the target or the time budget, whichever comes first (124: budget hit)
set +e
timeout --signal=INT "$budget" python3 -m nas.cli.main profile --hardware h100 \
    --samples "$target" --json > "$out/profile.json"
rc=$?
set -e
echo "profile exit $rc" >> "$out/env.txt"
cp "$profiles/h100.samples.jsonl" "$out/h100.samples.jsonl"
nas predictor train --hardware h100 --json > "$out/predictor_report.json"
nas latency DARTS_V2 --hardware h100 --measure --json > "$out/darts_v2.json"
tar czf "$out/predictor.tgz" -C "$profiles" h100.predictor
wc -l "$out/h100.samples.jsonl"
