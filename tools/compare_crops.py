#!/usr/bin/env python3
"""Side-by-side crops for looking at artefacts: noisy | clipdenoise | FFmpeg nlmeans (YCbCr).

For real noisy images without ground truth (`real-nogt-*`) and frames of compressed video,
where PSNR cannot be computed and the eye has to judge: colour shifts, banding, blocking,
ringing, plastic-looking oversmoothing, noise left in.

    /opt/torch-2.11.0-venv/bin/python tools/compare_crops.py --out docs/crops \\
        --model weights/clipdenoise-tiny.safetensors \\
        ../shared/data/real-nogt-DND-patches/01_noise.png:nlmeans=15 \\
        frame.png:nlmeans=4:at=120,80

Each argument is `PATH[:nlmeans=S][:at=X,Y]`: the nlmeans strength (default --nlmeans; choose
the one tuned on the closest set with ground truth, tools/classical_*-results.md) and the
crop's top-left corner (default: the centre crop). Writes `<stem>.png` per image (the three
crops, `--zoom` times enlarged with nearest-neighbour, 4 white pixels apart) and an
`index.md` that names them. Needs FFmpeg and NumPy (the torch venv has NumPy).
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from classical_baseline import Variant, ensure_ffmpeg, run_filters, rgb_to_ycc, ycc_to_rgb  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def image_size(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height", "-of", "csv=p=0", path],
                         capture_output=True, text=True, check=True).stdout
    w, h = out.strip().split(",")[:2]
    return int(w), int(h)


def read_rgb(path):
    w, h = image_size(path)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", path, "-frames:v", "1",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)


def write_png(path, rgb):
    h, w, _ = rgb.shape
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", f"{w}x{h}", "-i", "pipe:0", path],
                   input=np.ascontiguousarray(rgb).tobytes(), check=True)


def denoise_model(binary, model, path, tmpdir, extra=()):
    out = os.path.join(tmpdir, "model.png")
    cmd = [binary, "image", path, "-o", out, "--force"] + (["--model", model] if model else []) \
        + list(extra)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)}: {r.stderr.strip()}")
    return read_rgb(out)


def denoise_nlmeans(rgb, strength, tmpdir):
    y = rgb_to_ycc(rgb.astype(np.float64) / 255.0)
    (q,) = run_filters(y, [Variant("nlmeans", strength, "ycc")], tmpdir)
    out = np.clip(ycc_to_rgb(q.astype(np.float64) / 255.0), 0.0, 1.0)
    return np.rint(out * 255.0).astype(np.uint8)


def parse_item(item, default_strength):
    parts = item.split(":")
    path, strength, at = parts[0], default_strength, None
    for p in parts[1:]:
        key, _, val = p.partition("=")
        if key == "nlmeans":
            strength = float(val)
        elif key == "at":
            at = tuple(int(v) for v in val.split(","))
        else:
            sys.exit(f"error: unknown option '{p}' in '{item}' (nlmeans=S, at=X,Y)")
    return path, strength, at


def crop(img, at, size):
    h, w, _ = img.shape
    cw, ch = min(size, w), min(size, h)
    x, y = at if at else ((w - cw) // 2, (h - ch) // 2)
    x, y = max(0, min(x, w - cw)), max(0, min(y, h - ch))
    return img[y:y + ch, x:x + cw], (x, y)


def triptych(crops, zoom, gap=4):
    big = [np.repeat(np.repeat(c, zoom, axis=0), zoom, axis=1) for c in crops]
    h = big[0].shape[0]
    sep = np.full((h, gap, 3), 255, dtype=np.uint8)
    row = []
    for k, b in enumerate(big):
        row += ([sep] if k else []) + [b]
    return np.concatenate(row, axis=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("items", nargs="+", help="PATH[:nlmeans=S][:at=X,Y]")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--model", help="weights file (default: the binary's default model)")
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "clipdenoise"))
    ap.add_argument("--nlmeans", type=float, default=10.0, help="default nlmeans strength")
    ap.add_argument("--size", type=int, default=192, help="crop size in pixels")
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("--coarse-grain", action="store_true",
                    help="add a panel after ours: ours with --coarse-grain")
    args = ap.parse_args()
    ensure_ffmpeg()
    os.makedirs(args.out, exist_ok=True)
    panels = "noisy | clipdenoise | clipdenoise --coarse-grain" if args.coarse_grain \
        else "noisy | clipdenoise"
    lines = [f"# Side-by-side crops: {panels} | FFmpeg nlmeans (YCbCr)", "",
             f"Made by `tools/compare_crops.py` (model: `{args.model or 'default'}`), crops of "
             f"{args.size} px enlarged {args.zoom}x (nearest neighbour).", "",
             "| image | crop at | nlmeans s | file |", "|---|---|---:|---|"]
    with tempfile.TemporaryDirectory() as tmpdir:
        for item in args.items:
            path, strength, at = parse_item(item, args.nlmeans)
            noisy = read_rgb(path)
            ours = denoise_model(args.binary, args.model, path, tmpdir)
            classical = denoise_nlmeans(noisy, strength, tmpdir)
            panels = [noisy, ours]
            if args.coarse_grain:
                panels.append(denoise_model(args.binary, args.model, path, tmpdir,
                                            ["--coarse-grain"]))
            crops, where = [], None
            for img in panels + [classical]:
                c, where = crop(img, at, args.size)
                crops.append(c)
            stem = os.path.splitext(os.path.basename(path))[0]
            name = f"{stem}.png"
            write_png(os.path.join(args.out, name), triptych(crops, args.zoom))
            rel = os.path.relpath(path, REPO)
            lines.append(f"| `{rel}` | {where[0]},{where[1]} | {strength:g} | [{name}]({name}) |")
            print(f"{path} -> {os.path.join(args.out, name)}", file=sys.stderr)
    with open(os.path.join(args.out, "index.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
