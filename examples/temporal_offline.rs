//! The temporal stage's cost per 640x360 frame as the engine runs it (one frame per call, its
//! `lookahead` later frames as the future): causal, offline, each without and with an origin
//! (the staggered recursions of `clipdenoise video`), configurations interleaved frame by
//! frame (ratios, not absolute figures, on a loaded machine):
//! `cargo run --release --example temporal_offline [-- frames [lookahead [config]]]`
//! (`config`: `causal`, `causal+origin`, `offline` or `offline+origin` alone, for `perf`).
//! Each configuration runs twice, its recursions on two threads (the default) and on one
//! ([`clipdenoise::temporal::set_threads`]), interleaved: the ratio is the threads' gain.

use std::time::{Duration, Instant};

use clipdenoise::temporal::{set_threads, TemporalFilter};
use tch::{Device, Kind, Tensor};

fn main() {
    let arg = |i: usize| std::env::args().nth(i);
    let n: usize = arg(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let lookahead: usize = arg(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let only = arg(3);
    let (h, w) = (360, 640);
    tch::manual_seed(1);
    let low = Tensor::rand([1, 3, h / 8 + 2, w / 8 + 2], (Kind::Float, Device::Cpu));
    let big = low.upsample_bilinear2d([h + 200, w + 200], false, None, None);
    let frames: Vec<Tensor> = (0..(n + lookahead) as i64)
        .map(|i| {
            let c = big
                .narrow(2, i % 100, h)
                .narrow(3, (3 * i) % 200, w)
                .contiguous();
            (&c + c.randn_like() * 0.03).clamp(0.0, 1.0)
        })
        .collect();
    let configs = [
        ("causal", 0, None),
        ("causal+origin", 0, Some(0)),
        ("offline", lookahead, None),
        ("offline+origin", lookahead, Some(0)),
    ];
    // Each configuration with its recursions on two threads and on one.
    let configs: Vec<_> = configs
        .into_iter()
        .filter(|c| only.as_deref().is_none_or(|o| o == c.0))
        .flat_map(|c| [(c, true), (c, false)])
        .map(|((name, l, origin), threads)| (name, l, origin, threads))
        .collect();
    let mut filters: Vec<TemporalFilter> = configs
        .iter()
        .map(|&(_, l, origin, _)| {
            let mut f = TemporalFilter::new();
            f.set_origin(origin);
            f.set_future(l, Vec::new());
            f
        })
        .collect();
    let mut times = vec![Duration::ZERO; configs.len()];
    for i in 0..n {
        for (k, f) in filters.iter_mut().enumerate() {
            let l = configs[k].1;
            let future = (l > 0).then(|| Tensor::cat(&frames[i + 1..=i + l], 0));
            set_threads(configs[k].3);
            let t = Instant::now();
            let out = f.prepare_window(&frames[i], future.as_ref(), 0.5).unwrap();
            times[k] += t.elapsed();
            assert_eq!(out.size(), frames[i].size());
        }
    }
    println!(
        "{h}x{w}, {n} frames, lookahead {lookahead}, ms per frame (load {}):",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:>16} {:>10} {:>10} {:>8}",
        "", "2 threads", "1 thread", "ratio"
    );
    for (c, t) in configs.chunks(2).zip(times.chunks(2)) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / n as f64;
        let (two, one) = (ms(t[0]), ms(t[1]));
        println!("{:>16} {two:>10.2} {one:>10.2} {:>7.2}x", c[0].0, one / two);
    }
}
