#!/usr/bin/env python3
"""Run a planned clipdenoise job on a Ray cluster: one Ray task per segment (each runs
`clipdenoise segment JOB_DIR I` on whichever node Ray picks), retried up to --max-retries
times when it fails or its node dies, then `clipdenoise join JOB_DIR OUT` here.

    clipdenoise plan film.mkv -o /shared/job --segments 40
    ray start --head                      # or an existing cluster: --address ray://...
    python deploy/ray/run_job.py /shared/job /shared/film-clean.mkv --num-gpus 1

JOB_DIR and the source must be at the same path on every node (a shared file system), and
`clipdenoise` on each node's PATH (or --clipdenoise). A segment already done returns at once,
so re-running the driver redoes only what is missing.
"""
import argparse
import json
import os
import subprocess
import sys

import ray


@ray.remote
def segment(clipdenoise, job_dir, index):
    r = subprocess.run(
        [clipdenoise, "segment", job_dir, str(index)], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip() or f"segment {index}: exit {r.returncode}")
    lines = r.stderr.strip().splitlines()
    return lines[-1] if lines else f"segment {index}: done"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("job_dir")
    p.add_argument("out")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "auto"))
    p.add_argument("--num-gpus", type=float, default=0, help="GPUs per segment task")
    p.add_argument("--num-cpus", type=float, default=1, help="CPUs per segment task")
    p.add_argument("--max-retries", type=int, default=3)
    p.add_argument("--clipdenoise", default=os.environ.get("CLIPDENOISE", "clipdenoise"))
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    a = p.parse_args()
    job_dir = os.path.abspath(a.job_dir)
    with open(os.path.join(job_dir, "plan.json")) as f:
        count = len(json.load(f)["segments"])
    ray.init(address=a.address, log_to_driver=False)
    task = segment.options(
        num_cpus=a.num_cpus,
        num_gpus=a.num_gpus,
        max_retries=a.max_retries,
        retry_exceptions=True,
    )
    refs = [task.remote(a.clipdenoise, job_dir, i) for i in range(count)]
    failed = []
    for i, ref in enumerate(refs):
        try:
            print(ray.get(ref), flush=True)
        except Exception as e:  # the task's last attempt failed
            failed.append(i)
            msg = str(e).strip().splitlines()
            print(f"segment {i}: failed: {msg[-1] if msg else e}", file=sys.stderr)
    if failed:
        sys.exit(f"error: segments failed: {', '.join(map(str, failed))}")
    join = [a.clipdenoise, "join", job_dir, a.out] + (["--force"] if a.force else [])
    sys.exit(subprocess.run(join).returncode)


if __name__ == "__main__":
    main()
