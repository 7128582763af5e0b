//! Where the milliseconds of the causal temporal stage go per frame, on the engine's path
//! ([`clipdenoise::inference::Denoiser::denoise_groups`]: upload, the temporal input stage,
//! the network, the output blend, download), the default model in fp32 on the CPU:
//! `cargo run --release --example temporal_engine [-- frames [WxH [format]]]` (default 30,
//! 640x360, `bgra64`: what `benchmarks/temporal.sh`'s videotestsrc negotiates; `rgb`, `i420`).
//!
//! Per-frame and causal runs interleaved frame by frame in one process (ratios on a loaded
//! machine), elapsed and CPU time; the stages' parts timed apart too. Run it with glibc's
//! malloc tuned as the element tunes it (gst-plugin/src/malloc.rs), or the first touch of
//! each new frame-sized buffer dominates:
//! `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295`.

use std::time::{Duration, Instant};

use clipdenoise::frame::{frames_to_tensor, tensor_to_frames, FrameFormat, PixelFormat};
use clipdenoise::inference::{Denoiser, Options};
use clipdenoise::lowpass::{gaussian_blur, gaussian_blur_ops};
use clipdenoise::temporal::{cap, cpu, motion, output, TemporalFilter};
use tch::{Device, Kind, Tensor};

/// The CPU time of all the process's threads so far (`/proc/self/task/*/schedstat`, ns): on
/// a loaded machine the steadier measure of a stage's work than the elapsed time.
fn cpu_time() -> Duration {
    let mut ns = 0u64;
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(ns)
}

/// `f()`, its elapsed time added to `total.0`, its CPU time to `total.1`.
fn time<T>(total: &mut (Duration, Duration), f: impl FnOnce() -> T) -> T {
    let (t, c) = (Instant::now(), cpu_time());
    let r = f();
    total.1 += cpu_time().saturating_sub(c);
    total.0 += t.elapsed();
    r
}

fn main() {
    let arg = |i: usize| std::env::args().nth(i);
    let n: usize = arg(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let size = arg(2).unwrap_or_else(|| "640x360".into());
    let (w, h) = size
        .split_once('x')
        .map(|(w, h)| (w.parse().unwrap(), h.parse().unwrap()))
        .expect("WxH");
    let format = match arg(3).as_deref().unwrap_or("bgra64") {
        "bgra64" => PixelFormat::Bgra64,
        "rgb" => PixelFormat::Rgb,
        "i420" => PixelFormat::I420,
        f => panic!("format {f}: bgra64, rgb or i420"),
    };
    let fmt = FrameFormat::new(format, w, h);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("weights/clipdenoise-tiny.safetensors");
    let den = Denoiser::load(&path, Options::default()).expect("model");
    // A noisy textured pan, packed in the format.
    tch::manual_seed(1);
    let (hi, wi) = (h as i64, w as i64);
    let low = Tensor::rand([1, 3, hi / 8 + 2, wi / 8 + 2], (Kind::Float, Device::Cpu));
    let big = low.upsample_bilinear2d([hi + 200, wi + 200], false, None, None);
    let frames: Vec<Vec<u8>> = (0..n as i64)
        .map(|i| {
            let c = big
                .narrow(2, i % 100, hi)
                .narrow(3, (3 * i) % 200, wi)
                .contiguous();
            let c = (&c + c.randn_like() * 0.03).clamp(0.0, 1.0);
            tensor_to_frames(&c, &fmt, &[&vec![0u8; fmt.frame_len()]])
                .unwrap()
                .remove(0)
        })
        .collect();
    let names = [
        "upload (frames_to_tensor)",
        "temporal input (prepare)",
        "network (denoise)",
        "output blend (finish)",
        "download (tensor_to_frames)",
        "all",
    ];
    let zero = (Duration::ZERO, Duration::ZERO);
    let mut per_frame = [zero; 6];
    let mut causal = [zero; 6];
    let mut filter = TemporalFilter::new();
    let warm = 2;
    let part_names = [
        "output blend in tch ops (before)",
        "  its low-pass in plain Rust (3 planes)",
        "  the low-pass in tch's convolutions",
        "input: luma x2",
        "input: motion estimate",
        "input: two warps (frame, count)",
        "input: fusion blend (3x3 means, median, fusion)",
        "input: results to tensors (3 copies, 2 cats)",
    ];
    let mut parts = [zero; 8];
    let mut prev: Option<(Vec<f32>, Vec<f32>, Vec<f32>)> = None;
    for (i, f) in frames.iter().enumerate() {
        for (t, temporal) in [(&mut per_frame, false), (&mut causal, true)] {
            let mut d = [zero; 6];
            let (t0, c0) = (Instant::now(), cpu_time());
            if i < warm && temporal {
                parts = [zero; 8];
            }
            let x = time(&mut d[0], || {
                frames_to_tensor(&[f], &fmt, Device::Cpu).unwrap()
            });
            let xin = time(&mut d[1], || match temporal {
                true => filter.prepare(&x, 0.5).unwrap(),
                false => x.shallow_clone(),
            });
            let y = time(&mut d[2], || den.denoise(&xin).unwrap());
            if i == 0 {
                println!(
                    "network output {:?} contiguous: {}, strides {:?}",
                    y.size(),
                    y.is_contiguous(),
                    y.stride()
                );
            }
            let mut apart = zero;
            if temporal {
                // The parts of the stages, timed apart (not in "all").
                let (t1, c1) = (Instant::now(), cpu_time());
                let n = filter.counts().unwrap().shallow_clone();
                let _ = time(&mut parts[0], || output::blend_ops(&y, &xin, &n).unwrap());
                let pull = (&xin - &y) * 0.5;
                let _ = time(&mut parts[1], || {
                    gaussian_blur(&pull, output::SIGMA).unwrap()
                });
                let _ = time(&mut parts[2], || {
                    gaussian_blur_ops(&pull, output::SIGMA).unwrap()
                });
                let (hw, cur) = (h * w, x.contiguous());
                let cur =
                    unsafe { std::slice::from_raw_parts(cur.data_ptr() as *const f32, 3 * hw) };
                let luma = time(&mut parts[3], || cpu::luma(cur, hw));
                let next = if let Some((pf, pl, pn)) = &prev {
                    let v = time(&mut parts[4], || cpu::estimate(&luma, pl, h, w));
                    let fine = motion::FINE as usize;
                    let (wf, wn) = time(&mut parts[5], || {
                        (
                            cpu::warp(pf, 3, h, w, &v, fine),
                            cpu::warp(pn, 1, h, w, &v, fine),
                        )
                    });
                    let b = time(&mut parts[6], || cpu::blend(cur, &wf, &wn, h, w, cap(0.5)));
                    if let Some((fo, co)) = b {
                        let l = time(&mut parts[3], || cpu::luma(&fo, hw));
                        let _ = time(&mut parts[7], || {
                            let t = Tensor::from_slice(&fo).view([1, 3, hi, wi]);
                            let u = Tensor::from_slice(&l).view([1, 1, hi, wi]);
                            let c = Tensor::from_slice(&co).view([1, 1, hi, wi]);
                            (Tensor::cat(&[&t], 0), Tensor::cat(&[&c], 0), u)
                        });
                        Some((fo, l, co))
                    } else {
                        None
                    }
                } else {
                    Some((cur.to_vec(), luma, vec![1.0; hw]))
                };
                if next.is_some() {
                    prev = next;
                }
                apart = (t1.elapsed(), cpu_time().saturating_sub(c1));
            }
            let y = time(&mut d[3], || match temporal {
                true => filter.finish(&xin, &y).unwrap(),
                false => y,
            });
            let out = time(&mut d[4], || tensor_to_frames(&y, &fmt, &[f]).unwrap());
            d[5] = (
                t0.elapsed().saturating_sub(apart.0),
                cpu_time().saturating_sub(c0).saturating_sub(apart.1),
            );
            assert_eq!(out[0].len(), f.len());
            if i >= warm {
                for (a, b) in t.iter_mut().zip(d) {
                    (a.0, a.1) = (a.0 + b.0, a.1 + b.1);
                }
            }
        }
    }
    let m = (n - warm) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / m;
    println!(
        "{size} {format:?}, fp32, {} frames after {warm} warm-up ones",
        n - warm
    );
    println!("| ms per frame | per-frame | causal | causal - per-frame | CPU: per-frame | causal | causal - per-frame |");
    println!("|---|---|---|---|---|---|---|");
    for (k, name) in names.iter().enumerate() {
        let (a, b) = (ms(per_frame[k].0), ms(causal[k].0));
        let (ca, cb) = (ms(per_frame[k].1), ms(causal[k].1));
        println!(
            "| {name} | {a:.1} | {b:.1} | {:+.1} | {ca:.1} | {cb:.1} | {:+.1} |",
            b - a,
            cb - ca
        );
    }
    println!("| parts, timed apart | | causal | | | causal | |");
    for (k, name) in part_names.iter().enumerate() {
        println!(
            "| {name} | | {:.1} | | | {:.1} | |",
            ms(parts[k].0),
            ms(parts[k].1)
        );
    }
}
