//! Issue 22's temporal-fusion lab: variants of the input fusion scored on frames that
//! `clipdenoise eval-video --dump DIR` wrote (the decoded noisy frames and the unbiased
//! reference), so a variant costs the network's passes and no x264 round trip:
//! `cargo run --release --example temporal_lab -- DIR CRF VARIANT...`.
//!
//! Scores are means over the clips of DIR (PSNR RGB, against `crfN-reference/`). The network
//! sees the dumped RGB frames (GStreamer's videoconvert), not the element's own YUV
//! conversion, so figures are a few hundredths off eval-video's: compare variants here, then
//! confirm the kept one with eval-video. A variant is `name[:key=value...]`:
//! - `fbf`: frame by frame;
//! - `rec`: the shipped recursion's arithmetic (tch ops) with `cap`, `factor`, `tmin`, `tmax`
//!   (levels of 255), `la` (lookahead frames: a backward recursion combined as offline.rs),
//!   `pilot=1` (motion and confidence from the frame-by-frame outputs: two network passes),
//!   `ptmin` (the pilot's threshold floor).

use std::path::{Path, PathBuf};

use clipdenoise::inference::{Denoiser, Options};
use clipdenoise::research::imageio;
use clipdenoise::research::video_eval::score_clip;
use clipdenoise::temporal::{motion, offline};
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug)]
struct P {
    cap: f64,
    factor: f64,
    tmin: f64,
    tmax: f64,
    la: usize,
    pilot: bool,
    ptmin: f64,
    pfactor: f64,
    a: f64,
    /// Gain on the output blend's weight (n - 1) / n (`lmix`).
    g: f64,
    /// Pixels equal to the previous input frame's (all channels; a codec's copied block) add
    /// nothing to the fused frame nor to its count.
    copy: bool,
    /// `kmix`: the second, wider low-pass (pixels).
    s2: f64,
    /// `lmix`: weight (n - 1) / (n - 1 + k).
    k: f64,
    /// `dual`: the blend's target from a second fusion with this cap and lookahead.
    cap2: f64,
    la2: usize,
    /// 1: the low band from the reference, 2: the high band.
    oracle: u8,
    /// `hmix`: the share of the high band.
    h: f64,
}

impl P {
    fn parse(spec: &str) -> (String, P) {
        let mut p = P {
            cap: 2.4,
            factor: 2.0,
            tmin: 2.0,
            tmax: 10.0,
            la: 0,
            pilot: false,
            ptmin: 1.0,
            pfactor: 2.0,
            a: 0.5,
            g: 1.0,
            copy: false,
            s2: 12.0,
            k: 1.0,
            cap2: 2.4,
            la2: 2,
            oracle: 0,
            h: 0.0,
        };
        let mut it = spec.split(':');
        let name = it.next().unwrap().to_string();
        for kv in it {
            let (k, v) = kv.split_once('=').expect("key=value");
            let v: f64 = v.parse().expect("a number");
            match k {
                "cap" => p.cap = v,
                "factor" => p.factor = v,
                "tmin" => p.tmin = v,
                "tmax" => p.tmax = v,
                "la" => p.la = v as usize,
                "pilot" => p.pilot = v != 0.0,
                "ptmin" => p.ptmin = v,
                "pfactor" => p.pfactor = v,
                "a" => p.a = v,
                "g" => p.g = v,
                "copy" => p.copy = v != 0.0,
                "s2" => p.s2 = v,
                "k" => p.k = v,
                "cap2" => p.cap2 = v,
                "la2" => p.la2 = v as usize,
                "oracle" => p.oracle = v as u8,
                "h" => p.h = v,
                _ => panic!("unknown key {k}"),
            }
        }
        (name, p)
    }
}

/// The recursion's state: fused frame, its luma (or the pilot's), count.
struct State {
    frame: Tensor,
    luma: Tensor,
    count: Tensor,
    /// The previous frame's pilot (output), for pilot confidence.
    pilot: Option<Tensor>,
    /// The previous raw input frame.
    raw: Tensor,
}

fn luma(x: &Tensor) -> Tensor {
    motion::luma_ops(x).unwrap()
}

fn diff3(a: &Tensor, b: &Tensor) -> Tensor {
    a.f_sub(b)
        .unwrap()
        .avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>)
        .abs()
        .mean_dim(1, true, Kind::Float)
}

/// One step: `cur` (noisy input) with its pilot `pc` (or None).
fn step(prev: Option<State>, cur: &Tensor, pc: Option<&Tensor>, p: &P) -> (Tensor, State) {
    let fresh = |cur: &Tensor| {
        let l = match pc {
            Some(o) if p.pilot => luma(o),
            _ => luma(cur),
        };
        State {
            frame: cur.shallow_clone(),
            luma: l,
            count: cur.ones_like().narrow(1, 0, 1),
            pilot: pc.map(|t| t.shallow_clone()),
            raw: cur.shallow_clone(),
        }
    };
    let Some(prev) = prev else {
        return (cur.shallow_clone(), fresh(cur));
    };
    let cl = match pc {
        Some(o) if p.pilot => luma(o),
        _ => luma(cur),
    };
    let v = motion::estimate(&cl, &prev.luma).unwrap();
    let wf = motion::warp(&prev.frame, &v, motion::FINE).unwrap();
    let wc = motion::warp(&prev.count, &v, motion::FINE).unwrap();
    let d = diff3(cur, &wf);
    let changed = d.gt(24.0 / 255.0).to_kind(Kind::Float).mean(Kind::Float);
    if changed.double_value(&[]) > 0.4 {
        return (cur.shallow_clone(), fresh(cur));
    }
    let c = match (p.pilot, pc, &prev.pilot) {
        (true, Some(o), Some(po)) => {
            let wp = motion::warp(po, &v, motion::FINE).unwrap();
            let dp = diff3(o, &wp);
            let t = dp
                .median()
                .multiply_scalar(p.pfactor)
                .clamp(p.ptmin / 255.0, p.tmax / 255.0);
            (dp.divide(&t).neg() + 2.0).clamp(0.0, 1.0).square()
        }
        _ => {
            let t = d
                .median()
                .multiply_scalar(p.factor)
                .clamp(p.tmin / 255.0, p.tmax / 255.0);
            (d.divide(&t).neg() + 2.0).clamp(0.0, 1.0).square()
        }
    };
    let n = wc.multiply(&c).clamp_max((p.cap - 1.0).max(0.0));
    let mut out = cur.f_add(&wf.multiply(&n)).unwrap().divide(&(&n + 1.0));
    let mut count = &n + 1.0;
    if p.copy {
        // A copy (equal to the previous raw frame in every channel, where the state holds
        // at least one frame): the state moved on unchanged.
        let same = cur
            .eq_tensor(&prev.raw)
            .to_kind(Kind::Float)
            .amin(1, true)
            .multiply(&n.ge(1.0).to_kind(Kind::Float));
        let nc = wc.multiply(&c).clamp_max(p.cap.max(1.0));
        out = &out + (&wf - &out) * &same;
        count = &count + (&nc - &count) * &same;
    }
    let st = State {
        frame: out.shallow_clone(),
        luma: cl,
        count: count.shallow_clone(),
        pilot: pc.map(|t| t.shallow_clone()),
        raw: cur.shallow_clone(),
    };
    (out, st)
}

/// The fused inputs of a clip under `p` (forward recursion; with `la`, a backward one over
/// each frame's window combined as offline.rs does).
fn fused(x: &[Tensor], pilots: &[Tensor], p: &P) -> Vec<Tensor> {
    fused_counts(x, pilots, p).0
}

/// [`fused`] and each frame's per-pixel count of frames (offline: `nf + nb - 1`).
fn fused_counts(x: &[Tensor], pilots: &[Tensor], p: &P) -> (Vec<Tensor>, Vec<Tensor>) {
    let mut counts = Vec::new();
    let pil = |i: usize| if p.pilot { Some(&pilots[i]) } else { None };
    let mut st = None;
    let mut out = Vec::new();
    for i in 0..x.len() {
        let (f, s) = step(st.take(), &x[i], pil(i), p);
        let nf = s.count.shallow_clone();
        if std::env::var_os("LAB_COPIES").is_some() && i > 0 {
            let same = x[i].eq_tensor(&x[i - 1]).to_kind(Kind::Float).amin(1, true);
            eprintln!(
                "frame {i}: {:.3} of pixels copy the previous frame, mean count {:.3}",
                same.mean(Kind::Float).double_value(&[]),
                nf.mean(Kind::Float).double_value(&[])
            );
        }
        st = Some(s);
        let ahead = p.la.min(x.len() - 1 - i);
        if ahead == 0 {
            out.push(f);
            counts.push(nf);
            continue;
        }
        let mut bs: Option<State> = None;
        let mut last = None;
        for j in (i..=i + ahead).rev() {
            let (b, s) = step(bs.take(), &x[j], pil(j), p);
            last = Some((b, s.count.shallow_clone()));
            bs = Some(s);
        }
        let (b, nb) = last.unwrap();
        out.push(offline::combine_ops(&x[i], &f, &nf, &b, &nb).unwrap());
        counts.push(&nf + &nb - 1.0);
    }
    (out, counts)
}

/// `o` plus `(f - o) * w` low-passed at `p.a` pixels and the rest of `f - o` low-passed at
/// `p.s2`, `w = (n - 1) / (n - 1 + k) * g` (the `kmix` and `dual` variants).
fn two_band(o: &[Tensor], f: &[Tensor], n: &[Tensor], p: &P) -> Vec<Tensor> {
    o.iter()
        .zip(f)
        .zip(n)
        .map(|((o, f), n)| {
            let w = (n - 1.0) / (n - 1.0 + p.k) * p.g;
            let r = (f - o) * &w;
            let r2 = (f - o) * (1.0 - &w);
            o + clipdenoise::lowpass::gaussian_blur(&r, p.a).unwrap()
                + clipdenoise::lowpass::gaussian_blur(&r2, p.s2).unwrap()
        })
        .collect()
}

fn load_dir(dir: &Path) -> Vec<Tensor> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| imageio::load(f).unwrap().0).collect()
}

fn denoise(d: &Denoiser, x: &[Tensor]) -> Vec<Tensor> {
    x.iter().map(|t| d.denoise(t).unwrap()).collect()
}

fn to255(x: &[Tensor]) -> Vec<Tensor> {
    x.iter()
        .map(|t| (t.squeeze_dim(0) * 255.0).round().clamp(0.0, 255.0))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (dir, crf) = (PathBuf::from(&args[1]), &args[2]);
    let variants = &args[3..];
    let d = Denoiser::new(
        clipdenoise::weights::load_default(Device::Cpu).unwrap(),
        Options::default(),
    )
    .unwrap();
    // Clip folders only (tools/classical_video.py keeps its cache file in DIR too).
    let mut clips: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    clips.sort();
    let mut sums = vec![[0f64; 3]; variants.len()];
    for clip in &clips {
        let x = load_dir(&clip.join(format!("crf{crf}")));
        let r: Vec<Tensor> = load_dir(&clip.join(format!("crf{crf}-reference")))
            .iter()
            .map(|t| t.squeeze_dim(0) * 255.0)
            .collect();
        let pilots = denoise(&d, &x);
        // The network's outputs on a fusion, by its parameters (variants that differ only
        // after the network share one pass).
        let mut cache: std::collections::HashMap<String, Vec<Tensor>> = Default::default();
        let mut net = |f: &[Tensor], p: &P| -> Vec<Tensor> {
            let key = format!(
                "{:?}",
                (p.cap, p.factor, p.tmin, p.tmax, p.la, p.pilot, p.copy)
            );
            cache
                .entry(key)
                .or_insert_with(|| denoise(&d, f))
                .iter()
                .map(|t| t.shallow_clone())
                .collect()
        };
        for (k, v) in variants.iter().enumerate() {
            let (name, p) = P::parse(v);
            let y = match name.as_str() {
                "noisy" => x.iter().map(|t| t.shallow_clone()).collect(),
                "fbf" => pilots.iter().map(|t| t.shallow_clone()).collect(),
                "rec" => denoise(&d, &fused(&x, &pilots, &p)),
                "recin" => fused(&x, &pilots, &p),
                "mix" => {
                    let f = fused(&x, &pilots, &p);
                    let o = denoise(&d, &f);
                    o.iter()
                        .zip(&f)
                        .map(|(o, f)| o * p.a + f * (1.0 - p.a))
                        .collect()
                }
                "cmix" => {
                    // out = o + (f - o) * a * (n - 1) / n
                    let (f, n) = fused_counts(&x, &pilots, &p);
                    let o = denoise(&d, &f);
                    o.iter()
                        .zip(&f)
                        .zip(&n)
                        .map(|((o, f), n)| o + (f - o) * ((n - 1.0) / n * p.a))
                        .collect()
                }
                "wmix" => {
                    // out = o + (f - o) * (n - 1) / (n - 1 + w): the network as w frames
                    let (f, n) = fused_counts(&x, &pilots, &p);
                    let o = denoise(&d, &f);
                    o.iter()
                        .zip(&f)
                        .zip(&n)
                        .map(|((o, f), n)| o + (f - o) * ((n - 1.0) / (n - 1.0 + p.a)))
                        .collect()
                }
                "smix" => {
                    // the network as w = (sigma / s0)^2 frames, sigma the frame's noise level
                    // (noise_level::estimate_sigma, levels of 255, mean over the channels)
                    let (f, n) = fused_counts(&x, &pilots, &p);
                    let o = denoise(&d, &f);
                    (0..x.len())
                        .map(|i| {
                            let sig =
                                clipdenoise::noise_level::estimate_sigma(&(&x[i] * 255.0)).unwrap();
                            let sig = sig.iter().sum::<f64>() / 3.0;
                            let w = (sig / p.a).powi(2);
                            if i == 5 {
                                eprintln!("sigma {sig:.2} w {w:.2}");
                            }
                            &o[i] + (&f[i] - &o[i]) * ((&n[i] - 1.0) / (&n[i] - 1.0 + w))
                        })
                        .collect()
                }
                "lmix" => {
                    // out = o + blur((f - o) * (n - 1) / n, a): low frequencies only
                    let (f, n) = fused_counts(&x, &pilots, &p);
                    let o = net(&f, &p);
                    o.iter()
                        .zip(&f)
                        .zip(&n)
                        .map(|((o, f), n)| {
                            let r = (f - o) * ((n - 1.0) / (n - 1.0 + p.k) * p.g);
                            o + clipdenoise::lowpass::gaussian_blur(&r, p.a).unwrap()
                        })
                        .collect()
                }
                "kmix" => {
                    // lmix, and the rest of (f - o) at scales above s2 from f too
                    let (f, n) = fused_counts(&x, &pilots, &p);
                    let o = denoise(&d, &f);
                    two_band(&o, &f, &n, &p)
                }
                "dual" => {
                    // kmix with the target (and its counts) from a wider fusion
                    let f = fused(&x, &pilots, &p);
                    let o = denoise(&d, &f);
                    let q = P {
                        cap: p.cap2,
                        la: p.la2,
                        ..p.clone()
                    };
                    let (f2, n) = fused_counts(&x, &pilots, &q);
                    two_band(&o, &f2, &n, &p)
                }
                "hmix" => {
                    // lmix plus a share h of the high band of (f - o) * w
                    let (f, n) = fused_counts(&x, &pilots, &p);
                    let o = denoise(&d, &f);
                    o.iter()
                        .zip(&f)
                        .zip(&n)
                        .map(|((o, f), n)| {
                            let w = (n - 1.0) / (n - 1.0 + p.k) * p.g;
                            let r = (f - o) * &w;
                            let lo = clipdenoise::lowpass::gaussian_blur(&r, p.a).unwrap();
                            o + &lo + (&r - &lo) * p.h
                        })
                        .collect()
                }
                "fbfk" => pilots
                    .iter()
                    .zip(&x)
                    .map(|(o, x)| o + clipdenoise::lowpass::gaussian_blur(&(x - o), p.s2).unwrap())
                    .collect(),
                "fbfmix" => pilots
                    .iter()
                    .zip(&x)
                    .map(|(o, f)| o * p.a + f * (1.0 - p.a))
                    .collect(),
                "ofuse" => fused(&pilots, &pilots, &p),
                _ => panic!("unknown variant {name}"),
            };
            // Oracles (`orlo`/`orhi` keys): the band below/above a Gaussian of sigma 3 taken
            // from the reference, to see where the error is.
            let y: Vec<Tensor> = match p.oracle {
                0 => y,
                o => y
                    .iter()
                    .zip(&r)
                    .map(|(y, r)| {
                        let r = (r / 255.0).unsqueeze(0);
                        let g = |t: &Tensor| clipdenoise::lowpass::gaussian_blur(t, 3.0).unwrap();
                        if o == 1 {
                            y + g(&(&r - y))
                        } else {
                            g(y) + (&r - g(&r))
                        }
                    })
                    .collect(),
            };
            let s = score_clip(&r, &to255(&y)).unwrap();
            eprintln!("{} {v}: {:.3} dB", clip.display(), s.psnr);
            sums[k][0] += s.psnr;
            sums[k][1] += s.ssim;
            sums[k][2] += s.temporal;
        }
    }
    for (k, v) in variants.iter().enumerate() {
        let n = clips.len() as f64;
        println!(
            "CRF {crf} {v}: {:.3} dB, SSIM {:.4}, temporal {:.3}",
            sums[k][0] / n,
            sums[k][1] / n,
            sums[k][2] / n
        );
    }
}
