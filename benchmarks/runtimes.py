#!/usr/bin/env python3
"""Ours against other runtimes on the same weights and the same work per frame, in one run.

Run through benchmarks/runtimes.sh (it makes the venv for ONNX Runtime and OpenVINO). For each
size and precision, in rounds that interleave the implementations (so a change in the
machine's load hits them alike), it runs, each in its own process with 2 intra-op threads:

  ours          `clipdenoise bench --json` (the engine the element uses; fused convolutions)
  ours-unfused  the same with CLIPDENOISE_FUSED=0 (the separate conv / activation / add passes
                the network ran before the fused path)
  pytorch       tools/torch_reference.py --channels-last (PyTorch eager, BatchNorm unfolded)
  onnxruntime   ONNX Runtime (CPU provider, all graph optimisations) on the ONNX export of the
                same network and weights (fp32 only: its CPU provider has no bf16 convolutions)
  openvino      OpenVINO (CPU plugin, INFERENCE_PRECISION_HINT f32 or bf16) on the same ONNX file

Work per frame, for every one of them: a synthetic u8 RGB frame, converted to float in [0, 1],
reflect-padded to multiples of 32, the network, cropped, clamped, rounded back to u8, batch 1.
It prints a Markdown table per size: frames/s and CPU ms per frame (user + system of the
whole process over the measured frames: the work, steadier than frames/s on a shared machine)
as medians over the rounds, and the ratios ours / each (frames/s) and each / ours (CPU ms).

    python benchmarks/runtimes.py --bin target/release/clipdenoise \\
        --model weights/clipdenoise-tiny.safetensors --sizes 640x360,1920x1080 --rounds 3

Worker modes (run by the orchestrator in the ONNX Runtime / OpenVINO venv):
    runtimes.py export --model W --size WxH --out F.onnx --torch-site DIR
    runtimes.py onnxruntime|openvino --onnx F.onnx --size WxH --precision P --frames N
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
THREADS = 2


def padded(w, h):
    return -(-w // 32) * 32, -(-h // 32) * 32


# ---------------------------------------------------------------- workers (bench venv)

def export(a):
    """The PyTorch reference network (tools/torch_reference.py) with the weights file, to ONNX
    at the padded frame size (fixed shape, as every runtime here runs one size)."""
    sys.path.append(a.torch_site)
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import torch
    import torch_reference
    model, _ = torch_reference.load(a.model, torch.device("cpu"))
    w, h = map(int, a.size.lower().split("x"))
    pw, ph = padded(w, h)
    x = torch.rand(1, 3, ph, pw)
    torch.onnx.export(model, (x,), a.out, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"])


def run_frames(a, infer, extra):
    """Time `infer` (float32 NCHW in, float32 NCHW out) on the common per-frame work."""
    import numpy as np
    w, h = map(int, a.size.lower().split("x"))
    pw, ph = padded(w, h)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2)]

    def one(frame):
        x = frame.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        x = np.pad(x, ((0, 0), (0, 0), (0, ph - h), (0, pw - w)), mode="reflect")
        y = infer(np.ascontiguousarray(x, dtype=np.float32))[:, :, :h, :w]
        return (np.clip(y, 0.0, 1.0) * 255.0).round().astype(np.uint8)[0].transpose(1, 2, 0).copy()

    for i in range(a.warmup):
        one(frames[i % 2])
    t0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(a.frames):
        one(frames[i % 2])
    total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    res = {"size": a.size, "precision": a.precision, "frames": a.frames, "threads": THREADS,
           "fps": a.frames / total, "cpu_ms_per_frame": 1000 * cpu / a.frames}
    res.update(extra)
    print(json.dumps(res))


def onnxruntime(a):
    import onnxruntime as ort
    if a.precision != "fp32":
        sys.exit("onnxruntime: fp32 only (its CPU provider has no bf16 convolutions)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])
    run_frames(a, lambda x: sess.run(None, {"x": x})[0],
               {"impl": "onnxruntime", "version": ort.__version__})


def openvino(a):
    import openvino as ov
    core = ov.Core()
    hint = {"fp32": "f32", "bf16": "bf16"}[a.precision]
    compiled = core.compile_model(core.read_model(a.onnx), "CPU", {
        "INFERENCE_NUM_THREADS": THREADS, "INFERENCE_PRECISION_HINT": hint,
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
    got = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    req = compiled.create_infer_request()
    run_frames(a, lambda x: req.infer({0: x})[compiled.output(0)],
               {"impl": "openvino", "version": ov.__version__, "inference_precision": got})


# ---------------------------------------------------------------- orchestrator

def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(a):
    sizes = a.sizes.split(",")
    precisions = a.precisions.split(",")
    torch_py = os.path.join(a.torch_venv, "bin", "python")
    bench_py = os.path.join(a.bench_venv, "bin", "python") if a.bench_venv else None
    torch_site = subprocess.run([torch_py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="clipdenoise-runtimes-")
    onnx = {}
    if bench_py:
        for size in sizes:
            onnx[size] = os.path.join(tmp, f"model-{size}.onnx")
            subprocess.run([bench_py, __file__, "export", "--model", a.model, "--size", size,
                            "--out", onnx[size], "--torch-site", torch_site], check=True,
                           capture_output=True)
    env = {"OMP_NUM_THREADS": str(THREADS), "OMP_WAIT_POLICY": "PASSIVE"}
    results = {}  # (size, precision, impl) -> [json per round]
    log = []
    for rnd in range(a.rounds):
        for size in sizes:
            w, h = map(int, size.split("x"))
            # About the same seconds per row at every size (a 1080p frame is ~9x 640x360).
            frames = max(3, round(a.frames * 640 * 360 / (w * h)))
            for prec in precisions:
                jobs = [("ours", [a.bin, "bench", "--model", a.model, "--size", size, "--precision", prec,
                                  "--device", "cpu", "--frames", str(frames), "--warmup", "2", "--json"], {}),
                        ("ours-unfused", [a.bin, "bench", "--model", a.model, "--size", size, "--precision",
                                          prec, "--device", "cpu", "--frames", str(frames), "--warmup", "2",
                                          "--json"], {"CLIPDENOISE_FUSED": "0"}),
                        ("pytorch", [torch_py, os.path.join(ROOT, "tools", "torch_reference.py"), "--model",
                                     a.model, "--size", size, "--precision", prec, "--frames", str(frames),
                                     "--warmup", "2", "--threads", str(THREADS), "--channels-last", "--json"], {})]
                if bench_py:
                    common = ["--onnx", onnx[size], "--size", size, "--precision", prec,
                              "--frames", str(frames), "--warmup", "2"]
                    if prec == "fp32":
                        jobs.append(("onnxruntime", [bench_py, __file__, "onnxruntime"] + common, {}))
                    jobs.append(("openvino", [bench_py, __file__, "openvino"] + common, {}))
                for impl, cmd, extra in jobs:
                    r = run_json(cmd, {**env, **extra})
                    results.setdefault((size, prec, impl), []).append(r)
                    log.append({"round": rnd, "impl": impl, **r})
                    print(f"round {rnd + 1}/{a.rounds} {size} {prec} {impl}: {r['fps']:.2f} frames/s, "
                          f"{r['cpu_ms_per_frame']:.1f} CPU ms/frame", file=sys.stderr, flush=True)
    if a.log:
        with open(a.log, "w") as f:
            for entry in log:
                f.write(json.dumps(entry) + "\n")
    print("| size | precision | implementation | frames/s | CPU ms/frame | ours / it (frames/s) | it / ours (CPU ms) |")
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        for prec in precisions:
            med = {impl: (statistics.median(r["fps"] for r in rs),
                          statistics.median(r["cpu_ms_per_frame"] for r in rs))
                   for (s, p, impl), rs in results.items() if s == size and p == prec}
            ours_fps, ours_cpu = med["ours"]
            for impl, (fps, cpu) in med.items():
                print(f"| {size} | {prec} | {impl} | {fps:.2f} | {cpu:.1f} | {ours_fps / fps:.2f}x | {cpu / ours_cpu:.2f}x |")
    print(f"\nmedians of {a.rounds} rounds, {THREADS} threads each, batch 1; "
          f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode")
    e = sub.add_parser("export")
    e.add_argument("--model", required=True)
    e.add_argument("--size", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--torch-site", required=True)
    for name in ("onnxruntime", "openvino"):
        r = sub.add_parser(name)
        r.add_argument("--onnx", required=True)
        r.add_argument("--size", required=True)
        r.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
        r.add_argument("--frames", type=int, default=20)
        r.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "clipdenoise"))
    ap.add_argument("--model", default=os.path.join(ROOT, "weights", "clipdenoise-tiny.safetensors"))
    ap.add_argument("--sizes", default="640x360,1920x1080")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--frames", type=int, default=30, help="frames per 640x360 row (fewer at larger sizes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--torch-venv", default=os.environ.get("TORCH_VENV", "/opt/torch-2.11.0-venv"))
    ap.add_argument("--bench-venv", default=os.environ.get("BENCH_VENV"),
                    help="venv with onnxruntime and openvino (none: ours and PyTorch only)")
    ap.add_argument("--log", help="write every measurement as JSON lines here")
    a = ap.parse_args()
    {"export": export, "onnxruntime": onnxruntime, "openvino": openvino}.get(a.mode, main)(a)
