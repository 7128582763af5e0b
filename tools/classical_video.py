#!/usr/bin/env python3
"""Classical video denoisers (FFmpeg's hqdn3d, nlmeans, bm3d, atadenoise, fftdnoiz) on the exact inputs of
`clipdenoise eval-video`: the baseline the model must beat on compressed camera noise.

How to run
----------
1. Let `clipdenoise eval-video` write its frames (clean, and the decoded noisy frames per CRF):

       target/release/clipdenoise eval-video ../shared/data/video-DAVIS-bear/bear.mp4 \\
           ../shared/data/video-sam2-bedroom/bedroom.mp4 --crf 18,23,28 --dump /tmp/vdump

2. Run the filters (NumPy from the torch venv; FFmpeg from Debian):

       /opt/torch-2.11.0-venv/bin/python tools/classical_video.py --dump /tmp/vdump \\
           --markdown /tmp/vbaseline.md --json /tmp/vbaseline.json

Exact handling
--------------
- Input: DUMP/<clip>/crf<N>/NNNN.png, the decoded noisy frames. Reference (`--reference`):
  `unbiased` (the default, as `clipdenoise eval-video`'s: DUMP/<clip>/crf<N>-reference, the
  clean frames plus the decoded clip's mean bias) or `clean` (DUMP/<clip>/clean, as before
  issue 23; dumps older than the unbiased reference have only this one).
- Every filter runs on the whole clip as one FFmpeg video stream (so hqdn3d's temporal part
  works), in BT.601 full-range YCbCr declared as yuv444p (8 bit) or yuv444p16le (hqdn3d),
  converted here in float64 as in tools/classical_baseline.py; output rounded to 8 bit RGB.
- Families: `hqdn3d` (spatial S, chroma S, temporal 1.5 S: its default ratio), `nlmeans`
  (s=S, p=7, r=15; spatial), `bm3d` (sigma=S, 16x16 blocks (block=4 is log2), step 8,
  groups of up to 8, range 9, basic estimate; spatial), and the temporal ones of issue 22:
  `atadenoise` (adaptive temporal averaging over 9 frames, thresholds a = 0.01 S and
  b = 0.02 S on every plane; its defaults are S = 2) and `fftdnoiz` (sigma=S with the
  previous and the next frame, prev=1:next=1).
- Results per (reference, clip, CRF, filter, strength, frames) are cached in
  DUMP/classical_cache.jsonl, so an interrupted run resumes.
- `--strengths FAMILY=S,S,...;...` replaces a family's grid (re-scoring tuned points and their
  neighbours without the whole grid).
- Scores as `clipdenoise eval-video`: mean over frames of PSNR (RGB), PSNR of BT.601 luma,
  MATLAB-style SSIM, temporal error mean|(f_t - f_t-1) - (c_t - c_t-1)|. Per CRF and family
  the strength with the best mean PSNR over the clips' first --search-frames frames is chosen
  (an oracle choice on the test clips, which favours the baseline), then that strength runs
  on every frame; the best family is reported.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from classical_baseline import ensure_ffmpeg, ffmpeg_version, psnr, rgb_to_ycc, ssim, ycc_to_rgb  # noqa: E402

STRENGTHS = {
    "hqdn3d": [2, 3, 4, 6, 8, 11, 15],
    "nlmeans": [1, 1.5, 2, 3, 4, 6, 8],
    "bm3d": [3, 5, 8, 12],
    "atadenoise": [1, 2, 3, 4, 6, 8],
    "fftdnoiz": [2, 4, 6, 8, 12, 16],
}


def read_frames(folder):
    names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
    if not names:
        sys.exit(f"error: no PNG frames in {folder}")
    first = os.path.join(folder, names[0])
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height", "-of", "csv=p=0", first],
                           capture_output=True, text=True, check=True).stdout.strip()
    w, h = (int(v) for v in probe.split(","))
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-framerate", "30", "-i",
                          os.path.join(folder, "%04d.png"), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, h, w, 3)


def filter_clip(frames, family, strength):
    """Run one filter over a clip (N, H, W, 3) uint8 RGB; returns uint8 RGB frames."""
    n, h, w, _ = frames.shape
    deep = family == "hqdn3d"
    m = 65535.0 if deep else 255.0
    ycc = rgb_to_ycc(frames.astype(np.float64) / 255.0)
    q = np.rint(np.clip(ycc, 0.0, 1.0) * m).astype("<u2" if deep else np.uint8)
    planes = np.ascontiguousarray(np.moveaxis(q, -1, 1)).tobytes()
    s = strength
    vf = {
        "hqdn3d": f"hqdn3d=luma_spatial={s:g}:chroma_spatial={s:g}:luma_tmp={1.5 * s:g}:chroma_tmp={1.5 * s:g}",
        "nlmeans": f"nlmeans=s={s:g}:p=7:r=15",
        "bm3d": f"bm3d=sigma={s:g}:block=4:bstep=8:group=8:range=9",
        "atadenoise": "atadenoise=" + ":".join(f"{p}a={0.01 * s:g}:{p}b={0.02 * s:g}" for p in "012") + ":s=9",
        "fftdnoiz": f"fftdnoiz=sigma={s:g}:prev=1:next=1",
    }[family]
    pix = "yuv444p16le" if deep else "yuv444p"
    r = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "rawvideo", "-pix_fmt", pix,
                        "-s", f"{w}x{h}", "-r", "30", "-i", "pipe:0", "-vf", vf, "-f", "rawvideo",
                        "-pix_fmt", pix, "pipe:1"], input=planes, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError("ffmpeg failed: " + r.stderr.decode(errors="replace").strip())
    out = np.frombuffer(r.stdout, dtype="<u2" if deep else np.uint8).reshape(n, 3, h, w)
    out = np.moveaxis(out, 1, -1).astype(np.float64) / m
    return np.rint(np.clip(ycc_to_rgb(out), 0.0, 1.0) * 255.0).astype(np.uint8)


class Cache:
    def __init__(self, path):
        self.path, self.d = path, {}
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    e = json.loads(line)
                    self.d[e["key"]] = e["value"]

    def get_or(self, key, fn):
        if key not in self.d:
            self.d[key] = fn()
            with open(self.path, "a") as f:
                f.write(json.dumps({"key": key, "value": self.d[key]}) + "\n")
        return self.d[key]


def luma(x):
    return x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def score(clean, frames, with_ssim=True):
    c, f = clean.astype(np.float64), frames.astype(np.float64)
    p = np.mean([psnr(a, b) for a, b in zip(f, c)])
    py = np.mean([psnr(luma(a), luma(b)) for a, b in zip(f, c)])
    s = np.mean([ssim(a, b) for a, b in zip(f, c)]) if with_ssim else float("nan")
    t = np.mean(np.abs(np.diff(f, axis=0) - np.diff(c, axis=0)).reshape(len(f) - 1, -1).mean(axis=1))
    return {"psnr": float(p), "psnr_y": float(py), "ssim": float(s), "temporal": float(t)}


def mean_scores(rows):
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", required=True, help="folder written by `clipdenoise eval-video --dump`")
    ap.add_argument("--families", default="hqdn3d,nlmeans,bm3d")
    ap.add_argument("--search-frames", type=int, default=10, help="frames per clip for the strength search")
    ap.add_argument("--reference", choices=["unbiased", "clean"], default="unbiased",
                    help="score against DUMP/<clip>/crfN-reference (unbiased) or DUMP/<clip>/clean")
    ap.add_argument("--strengths", default="",
                    help="grids replacing the defaults: FAMILY=S,S,...;FAMILY=S,... (e.g. nlmeans=3,4,6)")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    ensure_ffmpeg()
    clips = sorted(d for d in os.listdir(args.dump) if os.path.isdir(os.path.join(args.dump, d, "clean")))
    grids = dict(STRENGTHS)
    for spec in filter(None, args.strengths.split(";")):
        fam, _, vals = spec.partition("=")
        if fam not in STRENGTHS or not vals:
            sys.exit(f"error: --strengths: expected FAMILY=S,S,... with FAMILY one of {', '.join(STRENGTHS)}, got {spec!r}")
        grids[fam] = [float(v) for v in vals.split(",")]
    crfs = sorted({int(d[3:]) for c in clips for d in os.listdir(os.path.join(args.dump, c))
                   if d.startswith("crf") and d[3:].isdigit()})
    results = {"ffmpeg": ffmpeg_version(), "reference": args.reference, "crf": {}}
    cache = Cache(os.path.join(args.dump, "classical_cache.jsonl"))
    # The cache's keys before --reference existed were scored against the clean frames.
    tag = "" if args.reference == "clean" else "unbiased/"
    for crf in crfs:
        noisy = {c: read_frames(os.path.join(args.dump, c, f"crf{crf}")) for c in clips}
        if args.reference == "clean":
            clean = {c: read_frames(os.path.join(args.dump, c, "clean")) for c in clips}
        else:
            refs = {c: os.path.join(args.dump, c, f"crf{crf}-reference") for c in clips}
            missing = [r for r in refs.values() if not os.path.isdir(r)]
            if missing:
                sys.exit(f"error: no unbiased reference {missing[0]} (an older dump: use --reference clean)")
            clean = {c: read_frames(refs[c]) for c in clips}
        cell = {"noisy": mean_scores([score(clean[c], noisy[c]) for c in clips]), "families": {}}
        for fam in args.families.split(","):
            best = None
            for s in grids[fam]:
                rows = []
                for c in clips:
                    k = min(args.search_frames, len(noisy[c]))
                    rows.append(cache.get_or(f"{tag}{c}/{crf}/{fam}/{s:g}/{k}/psnr", lambda: score(
                        clean[c][:k], filter_clip(noisy[c][:k], fam, s), with_ssim=False)))
                m = mean_scores(rows)
                print(f"CRF {crf} {fam} {s:g}: {m['psnr']:.3f} dB (Y {m['psnr_y']:.3f})", file=sys.stderr)
                if best is None or m["psnr"] > best[1]["psnr"]:
                    best = (s, m)
            s = best[0]
            rows = []
            for c in clips:
                k = len(noisy[c])
                rows.append(cache.get_or(f"{tag}{c}/{crf}/{fam}/{s:g}/{k}/all", lambda: score(
                    clean[c], filter_clip(noisy[c], fam, s))))
            edge = s in (grids[fam][0], grids[fam][-1])
            cell["families"][fam] = {"strength": s, "edge": edge, **mean_scores(rows)}
        cell["best"] = max(cell["families"], key=lambda f: cell["families"][f]["psnr"])
        results["crf"][str(crf)] = cell
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    lines = ["| CRF | filter (strength) | PSNR | Y PSNR | SSIM | temporal |", "|---:|---|---:|---:|---:|---:|"]
    for crf, cell in results["crf"].items():
        n = cell["noisy"]
        lines.append(f"| {crf} | noisy input | {n['psnr']:.2f} | {n['psnr_y']:.2f} | {n['ssim']:.4f} | {n['temporal']:.3f} |")
        for fam, r in cell["families"].items():
            mark = " **best**" if fam == cell["best"] else ""
            edge = " (edge)" if r["edge"] else ""
            lines.append(f"| {crf} | {fam} ({r['strength']:g}{edge}){mark} | {r['psnr']:.2f} | {r['psnr_y']:.2f} "
                         f"| {r['ssim']:.4f} | {r['temporal']:.3f} |")
    md = "\n".join(lines) + "\n"
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    print(md)


if __name__ == "__main__":
    main()
