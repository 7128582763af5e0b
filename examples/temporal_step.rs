//! The temporal stage's cost per 640x360 frame, the tch ops against the plain Rust CPU path,
//! interleaved in one run (ratios, not absolute figures, on a loaded machine):
//! `cargo run --release --example temporal_step [-- frames [rust]]` (`rust`: the plain Rust
//! path alone, for `perf stat`'s CPU time).
//!
//! A textured pan with noise, the recursion at the default amount; each stage timed alone
//! too: motion estimation, the two warps (frame and count), the blend (3x3 means, median).

use std::time::{Duration, Instant};

use clipdenoise::temporal::{cap, fusion, motion};
use tch::{Device, Kind, Tensor};

fn time<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    *total += t.elapsed();
    r
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let rust_only = std::env::args().nth(2).as_deref() == Some("rust");
    let (h, w) = (360, 640);
    tch::manual_seed(1);
    let low = Tensor::rand([1, 3, h / 8 + 2, w / 8 + 2], (Kind::Float, Device::Cpu));
    let big = low.upsample_bilinear2d([h + 200, w + 200], false, None, None);
    let frames: Vec<Tensor> = (0..n as i64)
        .map(|i| {
            let c = big.narrow(2, 2 * i, h).narrow(3, 3 * i, w).contiguous();
            &c + c.randn_like() * 0.03
        })
        .collect();
    let c = cap(0.5);
    let names = ["step", "estimate", "warp x2", "blend"];
    let mut ops = [Duration::ZERO; 4];
    let mut rust = [Duration::ZERO; 4];
    let (mut a, mut b) = (
        fusion::Step::fresh(&frames[0]).unwrap(),
        fusion::Step::fresh(&frames[0]).unwrap(),
    );
    for f in &frames[1..] {
        // Interleaved: tch ops, then plain Rust, frame after frame.
        for (t, rust_path) in [(&mut ops, false), (&mut rust, true)] {
            if rust_only && !rust_path {
                continue;
            }
            let prev = if rust_path { &a.state } else { &b.state };
            let step = time(&mut t[0], || match rust_path {
                true => fusion::step(f, prev, c).unwrap(),
                false => fusion::step_ops(f, prev, c).unwrap(),
            });
            let l = motion::luma(f).unwrap();
            let v = time(&mut t[1], || match rust_path {
                true => motion::estimate(&l, &prev.luma).unwrap(),
                false => motion::estimate_ops(&l, &prev.luma).unwrap(),
            });
            let (frame, count) = time(&mut t[2], || match rust_path {
                true => (
                    motion::warp(&prev.frame, &v, motion::FINE).unwrap(),
                    motion::warp(&prev.count, &v, motion::FINE).unwrap(),
                ),
                false => (
                    motion::warp_ops(&prev.frame, &v, motion::FINE).unwrap(),
                    motion::warp_ops(&prev.count, &v, motion::FINE).unwrap(),
                ),
            });
            let _ = time(&mut t[3], || match rust_path {
                true => fusion::blend(f, &frame, &count, c).unwrap(),
                false => fusion::blend_ops(f, &frame, &count, c).unwrap(),
            });
            if rust_path {
                a = step;
            } else {
                b = step;
            }
        }
        assert!(rust_only || a.out.equal(&b.out), "the two paths differ");
    }
    let per = |d: Duration| d.as_secs_f64() * 1e3 / (n - 1) as f64;
    println!(
        "{h}x{w}, {} steps, ms per frame (threads {}):",
        n - 1,
        tch::get_num_threads()
    );
    println!(
        "{:>10} {:>10} {:>10} {:>8}",
        "stage", "tch ops", "rust", "ratio"
    );
    for i in 0..4 {
        let (o, r) = (per(ops[i]), per(rust[i]));
        println!("{:>10} {o:>10.2} {r:>10.2} {:>7.1}x", names[i], o / r);
    }
}
