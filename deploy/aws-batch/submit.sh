#!/bin/bash
# Submit a planned job to AWS Batch: the segments as an array job, the join as a job that
# depends on the whole array (it starts when every child succeeded).
#   deploy/aws-batch/submit.sh QUEUE /data/job /data/film-clean.mkv
# Needs the job definition of segment-job.json registered (its command with the join's
# arguments is overridden here) and the aws CLI.
set -euo pipefail
QUEUE=${1:?usage: submit.sh QUEUE JOB_DIR OUT}
JOB_DIR=${2:?usage: submit.sh QUEUE JOB_DIR OUT}
OUT=${3:?usage: submit.sh QUEUE JOB_DIR OUT}
n=$(grep -c '"decode_start"' "$JOB_DIR/plan.json")
array=$(aws batch submit-job --job-name clipdenoise-segments --job-queue "$QUEUE" \
  --job-definition clipdenoise-segment --array-properties "size=$n" \
  --parameters "job_dir=$JOB_DIR" --query jobId --output text)
join=$(aws batch submit-job --job-name clipdenoise-join --job-queue "$QUEUE" \
  --job-definition clipdenoise-segment --depends-on "jobId=$array" \
  --container-overrides "{\"command\":[\"clipdenoise\",\"join\",\"$JOB_DIR\",\"$OUT\"]}" \
  --query jobId --output text)
echo "segments: array job $array ($n children); join: job $join after them"
