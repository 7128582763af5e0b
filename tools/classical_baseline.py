#!/usr/bin/env python3
"""Classical denoisers (FFmpeg's hqdn3d and nlmeans) under clipdenoise's evaluation protocol:
the baseline every model must beat.

How to run
----------
1. Dump the exact noisy inputs `clipdenoise eval` feeds the model (float32 .npy, unclipped,
   same seeds; no model is loaded):

       target/release/clipdenoise eval --dump-only --dump-noisy /tmp/noisy \\
           --dataset ../shared/data/CBSD68 --dataset ../shared/data/Kodak24 \\
           --dataset ../shared/data/McMaster \\
           --noise gaussian:15,25,50 --noise correlated:40,45,50,55 --noise poisson:2,2.5,3,3.5

   (`--pairs DIR` works too: real noisy/clean pairs, output rounded to uint8.)
   Or let this script do it: pass `--dataset` / `--noise` / `--pairs` and `--bin`.

2. Run the filters (NumPy from the torch venv is enough; FFmpeg is apt-installed if missing):

       /opt/torch-2.11.0-venv/bin/python tools/classical_baseline.py --dump /tmp/noisy \\
           --jobs 2 --json baseline.json --markdown baseline.md

   Per-case results are cached in DUMP/classical_cache.jsonl, so an interrupted run resumes.
   `--limit N` uses the first N images of each set; `--check-metrics` verifies this script's
   PSNR/SSIM against tests/fixtures (the authors' values, within 1e-6) and exits.

Exact handling
--------------
- Input: the dumped float32 noisy image y (H, W, 3, [0, 1] scale, unclipped for gaussian and
  correlated noise). The filters take integer samples, so y is clipped to [0, 1] first.
- Colour space, per variant: `rgb` feeds the R, G, B planes as they are; `ycc` converts the
  clipped image to BT.601 full-range YCbCr in float64 (JPEG's matrix, Cb/Cr centred on 0.5)
  and converts the filter's output back in float64, clipped to [0, 1]. Either way the three
  planes are declared to FFmpeg as Y, U, V of `yuv444p16le` (hqdn3d: round(65535 v)) or
  `yuv444p` (nlmeans: round(255 v); FFmpeg 5.1's nlmeans has no deeper formats), so FFmpeg
  itself converts nothing (`-vf null` round trips are checked to be exact at start-up), and
  every plane gets the same strength.
- Filters, each image one frame (no temporal filtering):
  `hqdn3d=luma_spatial=S:chroma_spatial=S:luma_tmp=1e-6:chroma_tmp=1e-6` (a temporal strength
  of 0 would mean "default"; 1e-6 makes the temporal blend an identity: the purely spatial
  filter) and `nlmeans=s=S:p=7:r=15` (FFmpeg's default patch and research window; s <= 30).
  `bm3d=sigma=S:block=4:bstep=4:group=8:range=9` (FFmpeg's BM3D, basic estimate, 16x16 blocks; family
  bm3d-ycc, used for the real pairs of issue 12: `--filters hqdn3d-ycc,nlmeans-ycc,bm3d-ycc`).
  Default families: hqdn3d-rgb, hqdn3d-ycc, nlmeans-ycc (`--filters`; nlmeans-rgb was 1-2 dB
  below nlmeans-ycc in every cell of a pilot, so it is off by default to halve the run time).
  Strength grids: HQDN3D_STRENGTHS and NLMEANS_STRENGTHS below (or --hqdn3d, --nlmeans, ...).
- Output: samples / (65535 or 255) (then YCbCr -> RGB for `ycc`) * 255 as float64, not rounded
  (the protocol's synthetic rule); for real pairs rounded to uint8. PSNR (RGB, no crop) and
  MATLAB-style SSIM (11x11 Gaussian window, sigma 1.5, valid region, C1 = (0.01*255)^2,
  C2 = (0.03*255)^2, per channel then averaged), float64, against the dumped clean reference
  (the exact 8-bit values), averaged over the images of a set.
- Selection: pass 1 computes the PSNR of every variant on every image; per cell (dataset x
  noise) and family the strength with the best mean PSNR is kept, and pass 2 computes SSIM for
  those. "Best" per cell is the family with the best mean PSNR: an oracle choice of filter and
  strength per cell, which favours the baseline. A best strength at the end of its grid is
  flagged "(edge)".
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HQDN3D_STRENGTHS = [4, 8, 14, 22, 32, 45, 60, 80, 105, 135, 170, 210]
NLMEANS_STRENGTHS = [2, 3, 4.5, 6, 8, 11, 15, 20, 30]
BM3D_STRENGTHS = [2, 3, 4.5, 6, 8, 11, 15, 20]
# nlmeans-rgb is off by default: in YCbCr it was 1-2 dB better in every cell we tried.
DEFAULT_FILTERS = ["hqdn3d-rgb", "hqdn3d-ycc", "nlmeans-ycc"]
FULL_GRID = ["gaussian:15,25,50", "correlated:40,45,50,55", "poisson:2,2.5,3,3.5"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- metrics (as src/metrics.rs)

def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 * 255.0 / mse))


def _gauss(size=11, sigma=1.5):
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


_G = _gauss()


def _filt_valid(x):
    """Separable 11x11 Gaussian filter, 'valid' region, of a (..., H, W) float64 array."""
    n = len(_G)
    h, w = x.shape[-2], x.shape[-1]
    t = sum(_G[k] * x[..., :, k:k + w - n + 1] for k in range(n))
    return sum(_G[k] * t[..., k:k + h - n + 1, :] for k in range(n))


def ssim(a, b):
    """MATLAB-style SSIM of two (H, W, 3) images on 0..255, mean over channels."""
    a = np.moveaxis(a.astype(np.float64), -1, 0)
    b = np.moveaxis(b.astype(np.float64), -1, 0)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = _filt_valid(a), _filt_valid(b)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = _filt_valid(a * a) - mu1_sq
    s2 = _filt_valid(b * b) - mu2_sq
    s12 = _filt_valid(a * b) - mu12
    m = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(np.mean(m.reshape(m.shape[0], -1).mean(axis=1)))


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", v
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + s:8 + n + e], dtype="<f4").reshape(v["shape"])
    return out


def check_metrics():
    fx = os.path.join(REPO, "tests", "fixtures")
    pairs = read_safetensors(os.path.join(fx, "metrics_pairs.safetensors"))
    with open(os.path.join(fx, "metrics_expected.json")) as f:
        expected = json.load(f)
    worst = 0.0
    for e in expected:
        i = e["pair"]
        t, r = pairs[f"pair{i}_test"], pairs[f"pair{i}_reference"]
        dp, ds = abs(psnr(t, r) - e["psnr"]), abs(ssim(t, r) - e["ssim"])
        worst = max(worst, dp, ds)
        print(f"pair {i}: |dPSNR| {dp:.2e} |dSSIM| {ds:.2e}")
    ok = worst < 1e-6
    print("metrics match the reference" if ok else "METRICS DIFFER", f"(max error {worst:.2e})")
    return ok


# ---------------------------------------------------------------- FFmpeg

def ensure_ffmpeg():
    if shutil.which("ffmpeg"):
        return
    print("ffmpeg not found: installing Debian's ffmpeg (apt-get)", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "ffmpeg"], check=True, env=env)


def ffmpeg_version():
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


# BT.601 full-range YCbCr (JPEG's): Y = .299 R + .587 G + .114 B, Cb/Cr centred on 0.5.
YCC = np.array([[0.299, 0.587, 0.114],
                [-0.168735891647856, -0.331264108352144, 0.5],
                [0.5, -0.418687589158970, -0.081312410841030]])
YCC_INV = np.linalg.inv(YCC)


def rgb_to_ycc(x):
    o = x @ YCC.T
    o[..., 1:] += 0.5
    return o


def ycc_to_rgb(o):
    o = o.copy()
    o[..., 1:] -= 0.5
    return o @ YCC_INV.T


class Variant:
    """One filter at one strength in one colour space (`rgb`: the R, G, B planes as they are;
    `ycc`: BT.601 full-range YCbCr computed here in float64)."""

    def __init__(self, family, strength, space="rgb"):
        self.family = f"{family}-{space}" if family != "null" else "null"
        self.space = space
        self.strength = strength
        if family == "hqdn3d":
            self.pix_fmt, self.depth = "yuv444p16le", 16
            self.filter = (f"hqdn3d=luma_spatial={strength:g}:chroma_spatial={strength:g}"
                           ":luma_tmp=1e-6:chroma_tmp=1e-6")
        elif family == "nlmeans":
            self.pix_fmt, self.depth = "yuv444p", 8
            self.filter = f"nlmeans=s={strength:g}:p=7:r=15"
        elif family == "bm3d":
            # FFmpeg's BM3D (basic estimate): 16x16 blocks (block=4 is log2), step 4, groups of up to 8, search 9.
            self.pix_fmt, self.depth = "yuv444p", 8
            self.filter = f"bm3d=sigma={strength:g}:block=4:bstep=4:group=8:range=9"
        elif family == "null":
            self.pix_fmt, self.depth, self.filter = strength, (16 if "16" in strength else 8), "null"
        else:
            raise ValueError(family)
        self.name = f"{self.family}:{strength:g}" if family != "null" else f"null:{strength}"

    def key(self):
        """Variants sharing a key run in one FFmpeg process on the same input samples."""
        return (self.pix_fmt, self.space)


def to_planes(y, depth):
    """(H, W, 3) float in [0, 1] scale -> planar bytes (R, G, B planes), clipped and rounded."""
    m = 65535.0 if depth == 16 else 255.0
    q = np.rint(np.clip(y.astype(np.float64), 0.0, 1.0) * m)
    q = q.astype("<u2" if depth == 16 else np.uint8)
    return np.ascontiguousarray(np.moveaxis(q, -1, 0)).tobytes()


def from_planes(buf, depth, h, w):
    q = np.frombuffer(buf, dtype="<u2" if depth == 16 else np.uint8).reshape(3, h, w)
    return np.moveaxis(q, 0, -1)


def run_filters(y, variants, tmpdir):
    """Run variants (all of one pixel format) on one image in one FFmpeg process. Returns the
    integer outputs (H, W, 3) per variant."""
    h, w, _ = y.shape
    pix_fmt, depth = variants[0].pix_fmt, variants[0].depth
    n = len(variants)
    graph = f"[0:v]split={n}" + "".join(f"[i{k}]" for k in range(n)) + ";" + ";".join(
        f"[i{k}]{v.filter}[o{k}]" for k, v in enumerate(variants))
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-threads", "1", "-filter_threads", "1",
           "-filter_complex_threads", "1", "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{w}x{h}",
           "-i", "pipe:0", "-filter_complex", graph]
    outs = []
    for k in range(n):
        p = os.path.join(tmpdir, f"o{k}.raw")
        outs.append(p)
        cmd += ["-map", f"[o{k}]", "-f", "rawvideo", "-pix_fmt", pix_fmt, "-y", p]
    r = subprocess.run(cmd, input=to_planes(y, depth), capture_output=True)
    if r.returncode != 0:
        raise RuntimeError("ffmpeg failed: " + r.stderr.decode(errors="replace").strip())
    res = []
    for p in outs:
        with open(p, "rb") as f:
            res.append(from_planes(f.read(), depth, h, w))
        os.remove(p)
    return res


def self_test():
    """The raw formats round trip exactly through FFmpeg (no hidden colour conversion)."""
    rng = np.random.default_rng(0)
    y = rng.random((37, 29, 3))
    with tempfile.TemporaryDirectory() as d:
        for fmt, depth in [("yuv444p16le", 16), ("yuv444p", 8)]:
            out = run_filters(y, [Variant("null", fmt)], d)[0]
            m = 65535.0 if depth == 16 else 255.0
            q = np.rint(np.clip(y, 0, 1) * m)
            assert np.array_equal(out.astype(np.float64), q), f"{fmt} does not round trip"


# ---------------------------------------------------------------- the evaluation

def load_npy(root, rel):
    return np.load(os.path.join(root, rel))


def make_dump(args):
    cmd = [args.bin, "eval", "--dump-only", "--dump-noisy", args.dump]
    for d in args.dataset:
        cmd += ["--dataset", d]
    for p in args.pairs:
        cmd += ["--pairs", p]
    for n in (args.noise or (FULL_GRID if args.dataset else [])):
        cmd += ["--noise", n]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    print("$ " + " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def evaluate_case(root, case, variants, tmpdir, with_ssim):
    """PSNR (and SSIM if asked) of each variant on one dumped case."""
    y = np.clip(load_npy(root, case["noisy"]).astype(np.float64), 0.0, 1.0)
    clean = load_npy(root, case["clean"]).astype(np.float64)
    scores = {}
    groups = {}
    for v in variants:
        groups.setdefault(v.key(), []).append(v)
    for (_, space), group in groups.items():
        inp = rgb_to_ycc(y) if space == "ycc" else y
        outs = run_filters(inp, group, tmpdir)
        for v, q in zip(group, outs):
            out = q.astype(np.float64) / (65535.0 if v.depth == 16 else 255.0)
            if space == "ycc":
                out = np.clip(ycc_to_rgb(out), 0.0, 1.0)
            out = np.rint(out * 255.0) if case.get("round_output") else out * 255.0
            scores[v.name] = {"psnr": psnr(out, clean)}
            if with_ssim:
                scores[v.name]["ssim"] = ssim(out, clean)
    return scores


def parse_filters(args):
    """`--filters hqdn3d-rgb,hqdn3d-ycc,nlmeans-ycc` with each family's strength list."""
    variants = []
    for fam in [f.strip() for f in args.filters.split(",") if f.strip()]:
        base, _, space = fam.partition("-")
        if base not in ("hqdn3d", "nlmeans", "bm3d") or space not in ("rgb", "ycc"):
            sys.exit(f"error: unknown filter '{fam}' (hqdn3d-rgb, hqdn3d-ycc, nlmeans-rgb, nlmeans-ycc, bm3d-ycc, ...)")
        strengths = getattr(args, f"{base}_{space}") or getattr(args, base)
        variants += [Variant(base, float(x), space) for x in strengths.split(",")]
    return variants


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the header of this file for how to run it and the exact protocol.")
    ap.add_argument("--dump", help="folder written by `clipdenoise eval --dump-noisy`")
    ap.add_argument("--dataset", action="append", default=[], help="make the dump first: dataset folder")
    ap.add_argument("--pairs", action="append", default=[], help="make the dump first: pairs folder")
    ap.add_argument("--noise", action="append", default=[], help="make the dump first: noise spec")
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "clipdenoise"))
    ap.add_argument("--limit", type=int, help="first N images per set")
    ap.add_argument("--only", help="comma-separated dataset names of the dump to evaluate (default: all)")
    ap.add_argument("--filters", default=",".join(DEFAULT_FILTERS), help="families to run")
    ap.add_argument("--hqdn3d", default=",".join(map(str, HQDN3D_STRENGTHS)), help="hqdn3d strengths")
    ap.add_argument("--nlmeans", default=",".join(map(str, NLMEANS_STRENGTHS)), help="nlmeans strengths")
    ap.add_argument("--bm3d", default=",".join(map(str, BM3D_STRENGTHS)), help="bm3d strengths")
    for fam in ("hqdn3d_rgb", "hqdn3d_ycc", "nlmeans_rgb", "nlmeans_ycc", "bm3d_rgb", "bm3d_ycc"):
        ap.add_argument("--" + fam.replace("_", "-"), dest=fam, help="strengths for this family only")
    ap.add_argument("--jobs", type=int, default=1, help="images filtered in parallel")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write the Markdown tables here (also printed)")
    ap.add_argument("--check-metrics", action="store_true", help="verify PSNR/SSIM against tests/fixtures")
    args = ap.parse_args()

    if args.check_metrics:
        sys.exit(0 if check_metrics() else 1)
    if not args.dump:
        ap.error("--dump DIR is required")
    ensure_ffmpeg()
    self_test()
    if args.dataset or args.pairs:
        make_dump(args)
    with open(os.path.join(args.dump, "manifest.json")) as f:
        manifest = json.load(f)
    variants = parse_filters(args)
    families = []
    for v in variants:
        if v.family not in families:
            families.append(v.family)

    cases = manifest["cases"]
    if args.only:
        only = [d.strip() for d in args.only.split(",")]
        cases = [c for c in cases if c["dataset"] in only]
        cases.sort(key=lambda c: only.index(c["dataset"]))
    if args.limit:
        per_cell = {}
        kept = []
        for c in cases:
            imgs = per_cell.setdefault((c["dataset"], c["noise"]), [])
            if c["image"] in imgs or len(imgs) < args.limit:
                if c["image"] not in imgs:
                    imgs.append(c["image"])
                kept.append(c)
        cases = kept

    cache = Cache(os.path.join(args.dump, "classical_cache.jsonl"))
    t0 = time.time()

    # Pass 1: PSNR of every variant on every case.
    def pass1(case):
        todo = [v for v in variants if cache.get(case, v.name, "psnr") is None]
        if todo:
            with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
                cache.put(case, evaluate_case(args.dump, case, todo, d, with_ssim=False))

    run_all("pass 1 (PSNR, all variants)", cases, pass1, args.jobs)

    # Per cell and family, the strength with the best mean PSNR.
    cells = {}
    for c in cases:
        cells.setdefault((c["dataset"], c["noise"]), []).append(c)

    def mean(cell_cases, name, metric):
        return float(np.mean([cache.get(c, name, metric) for c in cell_cases]))

    best = {}
    for key, cc in cells.items():
        for fam in families:
            names = [v.name for v in variants if v.family == fam]
            best[key + (fam,)] = max(names, key=lambda n: mean(cc, n, "psnr"))

    # Pass 2: SSIM of the chosen variants.
    by_name = {v.name: v for v in variants}

    def pass2(case):
        names = [best[(case["dataset"], case["noise"], fam)] for fam in families]
        todo = [by_name[n] for n in names if cache.get(case, n, "ssim") is None]
        if todo:
            with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
                cache.put(case, evaluate_case(args.dump, case, todo, d, with_ssim=True))

    run_all("pass 2 (SSIM of the best variants)", cases, pass2, args.jobs)
    cache.close()

    report = {
        "protocol": "clipdenoise eval (MODEL.md); exact handling in tools/classical_baseline.py",
        "ffmpeg": ffmpeg_version(),
        "seed": manifest.get("seed", 0),
        "variants": [{"name": v.name, "filter": v.filter, "input": f"{v.pix_fmt}, {v.space}"}
                     for v in variants],
        "datasets": [],
    }
    datasets = []
    for c in cases:
        if c["dataset"] not in datasets:
            datasets.append(c["dataset"])
    for ds in datasets:
        rows = []
        for (d, nz), cc in cells.items():
            if d != ds:
                continue
            per_family = {}
            for fam in families:
                names = [v.name for v in variants if v.family == fam]
                b = best[(d, nz, fam)]
                per_family[fam] = {"variant": b, "psnr": mean(cc, b, "psnr"), "ssim": mean(cc, b, "ssim"),
                                   "at_grid_edge": len(names) > 1 and b in (names[0], names[-1])}
            top = max(families, key=lambda f: per_family[f]["psnr"])
            rows.append({"noise": nz, "images": len(cc), "best": dict(per_family[top], family=top),
                         "best_by_family": per_family,
                         "psnr_by_variant": {v.name: mean(cc, v.name, "psnr") for v in variants}})
        report["datasets"].append({"name": ds, "rows": rows})
    report["seconds"] = time.time() - t0

    md = render_markdown(report, families)
    print(md)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


class Cache:
    """Per (dataset, noise, image, variant) scores, appended to a JSONL file (resumable)."""

    def __init__(self, path):
        self.data = {}
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    k = (r["dataset"], r["noise"], r["image"], r["variant"])
                    self.data.setdefault(k, {}).update({m: r[m] for m in ("psnr", "ssim") if m in r})
        self.file = open(path, "a")
        self.lock = threading.Lock()

    def get(self, case, name, metric):
        return self.data.get((case["dataset"], case["noise"], case["image"], name), {}).get(metric)

    def put(self, case, scores):
        with self.lock:
            for name, m in scores.items():
                k = (case["dataset"], case["noise"], case["image"], name)
                self.data.setdefault(k, {}).update(m)
                self.file.write(json.dumps(dict(dataset=k[0], noise=k[1], image=k[2], variant=name, **m)) + "\n")
            self.file.flush()

    def close(self):
        self.file.close()


def run_all(label, cases, fn, jobs):
    t0 = time.time()
    done = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        futures = [ex.submit(fn, c) for c in cases]
        for fut in concurrent.futures.as_completed(futures):
            fut.result()
            done += 1
            if done % 10 == 0 or done == len(cases):
                el = time.time() - t0
                print(f"\r{label}: {done}/{len(cases)} cases, {el:.0f} s, "
                      f"ETA {el / done * (len(cases) - done):.0f} s   ", end="", file=sys.stderr)
    print(file=sys.stderr)


def render_markdown(report, families):
    ds = report["datasets"]
    labels = []
    for d in ds:
        for r in d["rows"]:
            if r["noise"] not in labels:
                labels.append(r["noise"])

    def row(d, lab):
        return next((r for r in d["rows"] if r["noise"] == lab), None)

    out = ["Best classical denoiser per cell (PSNR dB | SSIM | filter-space:strength), "
           "clipdenoise eval protocol, " + report["ffmpeg"].split(" Copyright")[0], ""]
    out.append("| Noise |" + "".join(f" {d['name']} PSNR | {d['name']} SSIM | {d['name']} best |" for d in ds))
    out.append("|---|" + "---:|---:|---|" * len(ds))
    flagged = False
    for lab in labels:
        line = f"| {lab} |"
        for d in ds:
            r = row(d, lab)
            if r is None:
                line += " – | – | – |"
                continue
            b = r["best"]
            flagged |= b["at_grid_edge"]
            line += f" {b['psnr']:.2f} | {b['ssim']:.4f} | {b['variant']}{' (edge)' if b['at_grid_edge'] else ''} |"
        out.append(line)
    out += ["", "Best strength per filter family (PSNR / SSIM / strength):", ""]
    out.append("| Noise | Filter |" + "".join(f" {d['name']} |" for d in ds))
    out.append("|---|---|" + "---|" * len(ds))
    for lab in labels:
        for fam in families:
            line = f"| {lab} | {fam} |"
            for d in ds:
                r = row(d, lab)
                if r is None:
                    line += " – |"
                    continue
                b = r["best_by_family"][fam]
                flagged |= b["at_grid_edge"]
                line += (f" {b['psnr']:.2f} / {b['ssim']:.4f} / {b['variant'].split(':')[1]}"
                         f"{' (edge)' if b['at_grid_edge'] else ''} |")
            out.append(line)
    if flagged:
        out += ["", "(edge): the best strength is at an end of the grid (nlmeans caps s at 30)."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
