#!/bin/bash
# Submit a planned job to Slurm: the segments as one array (at most K at a time), the join
# as a job that runs when every segment succeeded. Prints both job ids.
#   deploy/slurm/submit.sh JOB_DIR OUT [K]        # GPUS=1 to ask each task for a GPU
# Extra sbatch options (partition, account, time) go in SBATCH_* variables, which sbatch reads.
set -euo pipefail
JOB_DIR=${1:?usage: submit.sh JOB_DIR OUT [K]}
OUT=${2:?usage: submit.sh JOB_DIR OUT [K]}
K=${3:-16}
here=$(cd "$(dirname "$0")" && pwd)
n=$(grep -c '"decode_start"' "$JOB_DIR/plan.json")
gres=()
if [ -n "${GPUS:-}" ]; then gres=(--gres="gpu:$GPUS"); fi
mkdir -p "$JOB_DIR/logs"
array=$(sbatch --parsable "${gres[@]}" --array="0-$((n - 1))%$K" \
    --output="$JOB_DIR/logs/segment-%a.log" "$here/segment.sbatch" "$JOB_DIR")
array=${array%%;*}
join=$(sbatch --parsable --dependency="afterok:$array" \
    --output="$JOB_DIR/logs/join.log" "$here/join.sbatch" "$JOB_DIR" "$OUT")
echo "segments: job $array (array 0-$((n - 1))%$K); join: job ${join%%;*} after them"
