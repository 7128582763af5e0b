#!/usr/bin/env python3
"""Interleaved A/B of `clipdenoise bench --json`: CPU ms per frame (user + system over the
measured frames) of several binaries or environments, round by round, and the median ratios
against the first. CPU ms rather than frames/s, because on a shared, loaded machine the cost of
a frame holds up better than its wall time; still, compare only ratios from one run.

    python3 benchmarks/bench_ab.py SIZE PRECISION ROUNDS FRAMES LABEL='[ENV=V ...] BIN [ARGS]' ...

e.g. (fused against the unfused ops of the same binary, and against another build):
    python3 benchmarks/bench_ab.py 640x360 fp32 3 16 \\
        "unfused=CLIPDENOISE_FUSED=0 target/release/clipdenoise" \\
        "fused=target/release/clipdenoise" "main=/tmp/clipdenoise-main"
ARGS go after `bench` (e.g. `--model F`); each run adds --size, --frames, --warmup 2,
--precision and --json.
"""
import json
import os
import shlex
import statistics
import subprocess
import sys


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    size, prec, rounds, frames = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    variants = [a.split("=", 1) for a in sys.argv[5:]]
    res = {label: [] for label, _ in variants}
    for r in range(rounds):
        for label, spec in variants:
            parts = shlex.split(spec)
            env = dict(os.environ)
            while parts and "=" in parts[0]:
                k, v = parts.pop(0).split("=", 1)
                env[k] = v
            cmd = parts[:1] + ["bench"] + parts[1:] + [
                "--size", size, "--frames", frames, "--warmup", "2", "--precision", prec, "--json"]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
            if out.returncode != 0:
                sys.exit(f"{label}: {' '.join(cmd)} failed: {out.stderr.strip()[-500:]}")
            j = json.loads(out.stdout.strip().splitlines()[-1])
            res[label].append(j["cpu_ms_per_frame"])
            print(f"round {r + 1} {label}: {j['cpu_ms_per_frame']:.1f} CPU ms/frame, "
                  f"{j['fps']:.2f} frames/s, peak RSS {j['peak_rss_mb']:.0f} MiB", flush=True)
    base = variants[0][0]
    mb = statistics.median(res[base])
    for label, v in res.items():
        m = statistics.median(v)
        print(f"{size} {prec} {label}: median {m:.1f} CPU ms/frame "
              f"({', '.join(f'{x:.1f}' for x in v)}); {base} / {label} = {mb / m:.3f}x")
    print("load average:", open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":
    main()
