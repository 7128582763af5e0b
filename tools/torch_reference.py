#!/usr/bin/env python3
"""PyTorch eager reference of the CLIPDenoising network, for benchmarks.

The same architecture as src/model/ written the way the authors' code runs it (eager
nn.Modules, BatchNorm not folded, NCHW), loading the same safetensors weights file. Used by
benchmarks/run-cpu.sh right after `clipdenoise bench`, so that every figure is a ratio
ours / PyTorch on the same machine, batch, size and precision.

    python tools/torch_reference.py --model W.safetensors --size 640x360 --batch-size 4 \
        --frames 20 --precision fp32 [--autocast bf16] [--device cpu|cuda] [--channels-last] [--json]

Frames are synthetic u8 RGB, uploaded, converted to float, padded to multiples of 32,
denoised, clamped, converted back to u8 and downloaded: the same work as the Rust worker.
"""
import argparse, json, struct, sys, time, resource

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dt = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "F64": np.float64}
    meta = header.pop("__metadata__", {})
    out = {}
    for k, v in header.items():
        a, b = v["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=dt[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(arr.copy())
    return out, meta


class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            from collections import OrderedDict
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                ("0", nn.Conv2d(inplanes, planes * 4, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * 4))]))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class Encoder(nn.Module):
    def __init__(self, w, blocks):
        super().__init__()
        self.conv1 = nn.Conv2d(3, w // 2, 3, 2, 1, bias=False); self.bn1 = nn.BatchNorm2d(w // 2)
        self.conv2 = nn.Conv2d(w // 2, w // 2, 3, 1, 1, bias=False); self.bn2 = nn.BatchNorm2d(w // 2)
        self.conv3 = nn.Conv2d(w // 2, w, 3, 1, 1, bias=False); self.bn3 = nn.BatchNorm2d(w)
        inplanes = w
        for i, n in enumerate(blocks):
            planes, stride = w << i, (1 if i == 0 else 2)
            layer = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * 4
            layer += [Bottleneck(inplanes, planes, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        f1 = F.relu(self.bn3(self.conv3(x)))
        h = F.avg_pool2d(f1, 2)
        f2 = self.layer1(h); f3 = self.layer2(f2); f4 = self.layer3(f3)
        return [f1, f2, f3, f4]


class ConvBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.LeakyReLU(0.2),
                                   nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.LeakyReLU(0.2))

    def forward(self, x):
        return self.block(x)


class Up(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv_block = ConvBlock(cin, cout)


class ClipDenoise(nn.Module):
    def __init__(self, w, blocks):
        super().__init__()
        self.encoder = Encoder(w, blocks)
        shapes = [(16 * w, 8 * w), (16 * w, 4 * w), (8 * w, 2 * w), (3 * w, w), (w + 3, w)]
        self.up_path = nn.ModuleList([Up(a, b) for a, b in shapes])
        self.last = nn.Conv2d(w, 3, 3, padding=1, bias=False)

    def forward(self, x):
        f1, f2, f3, f4 = self.encoder(x)
        y = self.up_path[0].conv_block(f4)
        for up, skip in zip(self.up_path[1:], [f3, f2, f1, x]):
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
            y = up.conv_block(torch.cat([y, skip], 1))
        return self.last(y)


def load(path, device):
    sd, meta = read_safetensors(path)
    if "clipdenoise.config" in meta:
        cfg = json.loads(meta["clipdenoise.config"])
    else:  # a state dict without our metadata: infer the shape like weights::infer_config
        blocks = [sum(1 for k in sd if k.startswith(f"encoder.layer{i}.") and k.endswith(".conv1.weight"))
                  for i in (1, 2, 3)]
        cfg = {"width": sd["encoder.conv3.weight"].shape[0], "blocks": blocks}
    m = ClipDenoise(cfg["width"], cfg["blocks"])
    missing, unexpected = m.load_state_dict(sd, strict=False)
    unexpected = [k for k in unexpected if not k.startswith("encoder.layer4.")]
    if missing or unexpected:
        sys.exit(f"weights do not fit: missing {missing[:3]} unexpected {unexpected[:3]}")
    return m.eval().to(device), cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--autocast", default=None, choices=[None, "fp16", "bf16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--channels-last", action="store_true",
                    help="weights and activations in channels_last (NHWC strides), as ours runs")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    w, h = map(int, a.size.lower().split("x"))
    model, cfg = load(a.model, dev)
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    model = model.to(dtypes[a.precision])
    layout = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    frames = torch.randint(0, 256, (a.batch_size, h, w, 3), dtype=torch.uint8)
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def run_batch():
        x = frames.to(dev).permute(0, 3, 1, 2).float() / 255.0
        if (ph, pw) != (h, w):
            x = F.pad(x, (0, pw - w, 0, ph - h), mode="reflect")
        x = x.to(dtypes[a.precision]).contiguous(memory_format=layout)
        with torch.no_grad():
            if a.autocast:
                with torch.autocast(dev.type, dtype=dtypes[a.autocast]):
                    y = model(x)
            else:
                y = model(x)
        y = y[:, :, :h, :w].float().clamp(0, 1)
        out = (y * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        return out

    for _ in range(a.warmup):
        run_batch()
    sync()
    batches = max(1, a.frames // a.batch_size)
    lat = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(batches):
        t = time.perf_counter()
        run_batch()
        sync()
        lat.append(time.perf_counter() - t)
    total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = batches * a.batch_size
    res = {
        "impl": "pytorch-eager", "model": cfg, "size": a.size, "batch_size": a.batch_size,
        "precision": a.precision, "autocast": a.autocast, "device": a.device, "frames": n,
        "channels_last": a.channels_last, "fps": n / total, "cpu_ms_per_frame": 1000 * cpu / n,
        "batch_ms_p50": 1000 * float(np.percentile(lat, 50)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        res["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(res) if a.json else f"pytorch eager: {res['fps']:.2f} frames/s ({a.size}, batch {a.batch_size}, {a.precision})")


if __name__ == "__main__":
    main()
