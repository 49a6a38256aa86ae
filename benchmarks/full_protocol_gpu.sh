#!/usr/bin/env bash
# Wall time of the paper's full protocol on a GPU machine, in one command:
#     convert -> plan (+ measured batch size) -> pretext 80 epochs -> segmentation folds 0..4 at fraction 0.2
#
#     benchmarks/full_protocol_gpu.sh RAW_DIR [WORK_DIR]
#
# RAW_DIR holds images/ and labels/ with matching names (the UFBA-425 layout: 512x512 JPEG radiographs,
# PNG label maps). Everything is written under WORK_DIR (default: a new folder in /tmp), never into the
# repository: the radiographs are licensed clinical data. The goal of issue 7 is pretext + five folds
# under 10 minutes on one GPU.
#
# Environment:
#   NPROC=1          GPUs per training run; >1 runs every stage under torchrun (DDP)
#   COMPILE=0        1: rbmnet_train --compile
#   DATA_PATH=auto   rbmnet_train --data-path (auto | device | workers)
#   WORKERS=8        CPU batch workers (-np) for the worker data path and preprocessing
#   PROBE=1          rbmnet_plan_and_preprocess --probe-batch-size (0: the memory model's batch size)
#   PLAN_ARGS=""     extra arguments for rbmnet_plan_and_preprocess, e.g. "--set segmentation.epochs=50"
#   PYTHON           default: the repository's .venv/bin/python, else python3
set -euo pipefail

if [[ $# -lt 1 || ! -d "$1/images" || ! -d "$1/labels" ]]; then
    echo "usage: $0 RAW_DIR [WORK_DIR]   (RAW_DIR must hold images/ and labels/)" >&2
    exit 2
fi
RAW_SOURCE=$(cd "$1" && pwd)
WORK=${2:-$(mktemp -d /tmp/rbmnet_protocol.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$([[ -x "$REPO/.venv/bin/python" ]] && echo "$REPO/.venv/bin/python" || echo python3)}
NPROC=${NPROC:-1}
WORKERS=${WORKERS:-8}
DATASET=UFBA425

export RBMNET_RAW="$WORK/rbmnet_raw" RBMNET_PREPROCESSED="$WORK/rbmnet_preprocessed" RBMNET_RESULTS="$WORK/rbmnet_results"
TIMES="$WORK/protocol_times.tsv"
: > "$TIMES"

train=("$PYTHON" -m rbmnet.cli.train)
if [[ "$NPROC" -gt 1 ]]; then
    train=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m rbmnet.cli.train)
fi
train_flags=(-d "$DATASET" --overwrite -np "$WORKERS" --data-path "${DATA_PATH:-auto}")
[[ "${COMPILE:-0}" == 1 ]] && train_flags+=(--compile)
plan_flags=(-d "$DATASET" -np "$WORKERS" --overwrite-plans)
[[ "${PROBE:-1}" == 1 ]] && plan_flags+=(--probe-batch-size)

step() {  # step NAME COMMAND...: run it, log its wall time
    local name=$1; shift
    echo "=== $name: $*" >&2
    local start end
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    awk -v name="$name" -v start="$start" -v end="$end" 'BEGIN { printf "%s\t%.1f\n", name, end - start }' \
        | tee -a "$TIMES" >&2
}

cd "$REPO"
"$PYTHON" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" >&2
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv >&2 || true

step convert "$PYTHON" -m rbmnet.cli.convert folder --images "$RAW_SOURCE/images" --labels "$RAW_SOURCE/labels" \
    -d "$DATASET" --overwrite -np "$WORKERS"
# shellcheck disable=SC2086
step plan "$PYTHON" -m rbmnet.cli.plan_and_preprocess "${plan_flags[@]}" ${PLAN_ARGS:-}
step pretext "${train[@]}" pretext "${train_flags[@]}"
for fold in 0 1 2 3 4; do
    step "seg_fold_$fold" "${train[@]}" seg "$fold" --fraction 0.2 --init pretext "${train_flags[@]}"
done

# summary: JSON next to the run and in benchmarks/results (ignored by git)
"$PYTHON" - "$TIMES" "$WORK" "$NPROC" <<'EOF'
import json, sys
from pathlib import Path

times_path, work, nproc = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
steps = dict(line.split("\t") for line in times_path.read_text().splitlines())
steps = {name: float(seconds) for name, seconds in steps.items()}
training = sum(v for k, v in steps.items() if k == "pretext" or k.startswith("seg_fold_"))
plan = json.loads((work / "rbmnet_preprocessed" / "UFBA425" / "plans.json").read_text())
crossval = sorted((work / "rbmnet_results" / "UFBA425").glob("seg__*/crossval_summary.json"))
import torch
summary = {
    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "gpus": nproc,
    "step_seconds": steps, "pretext_plus_five_folds_seconds": round(training, 1),
    "all_seconds": round(sum(steps.values()), 1), "goal_seconds": 600, "met_goal": training < 600,
    "plan": {"input_size": plan["input_size"], "batch_size": [plan["pretext"]["batch_size"], plan["segmentation"]["batch_size"]],
             "epochs": [plan["pretext"]["epochs"], plan["segmentation"]["epochs"]],
             "iterations_per_epoch": [plan["pretext"]["iterations_per_epoch"], plan["segmentation"]["iterations_per_epoch"]],
             "data_path": plan["augmentation"]["data_path"], "batch_size_rule": plan["derivation"].get("batch_size_rule")},
    "crossval_summary": json.loads(crossval[0].read_text()) if crossval else None,
}
text = json.dumps(summary, indent=2)
(work / "full_protocol_gpu.json").write_text(text + "\n")
results = Path("benchmarks/results"); results.mkdir(parents=True, exist_ok=True)
(results / "full_protocol_gpu.json").write_text(text + "\n")
print(text)
print(f"pretext + five folds: {training / 60:.1f} min (goal: under 10 min)")
EOF
