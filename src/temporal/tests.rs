//! The temporal filter on synthetic sequences: a still scene, a pan, a moving object, a scene
//! cut; the offline window; the warm-up contract.

use tch::{Device, Kind, Tensor};

use super::*;

const SIGMA: f64 = 0.03;

/// A smooth random texture `[1, 3, h, w]` in 0.1..0.9.
fn texture(seed: i64, h: i64, w: i64) -> Tensor {
    tch::manual_seed(seed);
    let low = Tensor::rand([1, 3, h / 4 + 2, w / 4 + 2], (Kind::Float, Device::Cpu));
    low.upsample_bilinear2d([h + 8, w + 8], false, None, None)
        .narrow(2, 4, h)
        .narrow(3, 4, w)
        * 0.8
        + 0.1
}

fn noisy(clean: &Tensor, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    clean + clean.randn_like() * SIGMA
}

fn psnr(a: &Tensor, b: &Tensor) -> f64 {
    let mse = (a - b).square().mean(Kind::Double).double_value(&[]);
    -10.0 * mse.log10()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// A window `h` x `w` of `big` at (y, x).
fn crop(big: &Tensor, y: i64, x: i64, h: i64, w: i64) -> Tensor {
    big.narrow(2, y, h).narrow(3, x, w).contiguous()
}

#[test]
fn motion_finds_a_known_shift_exactly() {
    let big = texture(1, 128, 160);
    let prev = crop(&big, 20, 20, 64, 96);
    let cur = crop(&big, 25, 13, 64, 96); // cur[y, x] = prev[y + 5, x - 7]
    let v = motion::estimate(&motion::luma(&cur).unwrap(), &motion::luma(&prev).unwrap()).unwrap();
    assert_eq!(v.size(), [2, 8, 12]);
    // Blocks away from the border the shift leaves uncovered.
    let inner = v.narrow(1, 0, 7).narrow(2, 1, 11);
    assert_eq!(inner.get(0).min().int64_value(&[]), 5);
    assert_eq!(inner.get(0).max().int64_value(&[]), 5);
    assert_eq!(inner.get(1).min().int64_value(&[]), -7);
    assert_eq!(inner.get(1).max().int64_value(&[]), -7);
    let warped = motion::warp(&prev, &v, motion::FINE).unwrap();
    let a = crop(&warped, 0, 16, 48, 80);
    assert!(max_abs(&a, &crop(&cur, 0, 16, 48, 80)) < 1e-6);
    assert!(motion::max_motion() >= 16);
}

#[test]
fn a_still_scene_averages_many_frames_and_amount_zero_is_the_identity() {
    let clean = texture(2, 64, 96);
    let mut f = TemporalFilter::new();
    let mut last = None;
    for i in 0..12 {
        let x = noisy(&clean, 100 + i);
        let y = f.apply(&x, 0.5).unwrap();
        if i == 0 {
            assert!(max_abs(&y, &x) == 0.0, "the first frame passes unchanged");
        }
        last = Some((x, y));
    }
    let (x, y) = last.unwrap();
    let gain = psnr(&y, &clean) - psnr(&x, &clean);
    // 8 frames averaged: up to 9 dB; the confidence gives some of it up.
    assert!(gain > 5.0, "still scene gained {gain:.2} dB");
    let off = f.apply(&x, 0.0).unwrap();
    assert!(max_abs(&off, &x) == 0.0 && !f.is_primed());
}

#[test]
fn a_pan_is_followed() {
    let big = texture(3, 160, 256);
    let mut f = TemporalFilter::new();
    let (mut gain, mut n) = (0.0, 0);
    for i in 0..12 {
        // 3 pixels right and 2 down per frame.
        let clean = crop(&big, 10 + 2 * i, 10 + 3 * i, 64, 96);
        let x = noisy(&clean, 200 + i);
        let y = f.apply(&x, 0.5).unwrap();
        if i >= 6 {
            // Away from the edge the pan uncovers.
            let c = |t: &Tensor| crop(t, 0, 0, 48, 80);
            gain += psnr(&c(&y), &c(&clean)) - psnr(&c(&x), &c(&clean));
            n += 1;
        }
    }
    let gain = gain / n as f64;
    assert!(gain > 4.0, "panning gained only {gain:.2} dB");
}

/// The output stage alone (`apply`), or both stages around an identity network.
fn filter(f: &mut TemporalFilter, x: &Tensor, amount: f64, both: bool) -> Tensor {
    let x = match both {
        true => f.prepare(x, amount).unwrap(),
        false => x.shallow_clone(),
    };
    f.apply(&x, amount).unwrap()
}

#[test]
fn a_moving_object_leaves_no_ghost() {
    let bg = texture(4, 96, 128);
    let obj = texture(5, 24, 24) * 0.3 + 0.6;
    for both in [false, true] {
        let mut f = TemporalFilter::new();
        let (mut worst, mut gain_bg) = (f64::INFINITY, 0.0);
        for i in 0..14i64 {
            // A square moving 7 pixels right and 3 down per frame over a still background.
            let (oy, ox) = (10 + 3 * i, 4 + 7 * i);
            let clean = bg.copy();
            clean.narrow(2, oy, 24).narrow(3, ox, 24).copy_(&obj);
            let x = noisy(&clean, 300 + i);
            let y = filter(&mut f, &x, 1.0, both);
            if i >= 2 {
                // The object where it is now and where it was (uncovered background).
                let (ry, rx) = (oy - 3, ox - 7);
                let region = |t: &Tensor| crop(t, ry, rx, 27, 31);
                let d = psnr(&region(&y), &region(&clean)) - psnr(&region(&x), &region(&clean));
                worst = worst.min(d);
                let corner = |t: &Tensor| crop(t, 70, 0, 26, 40);
                gain_bg += psnr(&corner(&y), &corner(&clean)) - psnr(&corner(&x), &corner(&clean));
            }
        }
        assert!(
            worst > -0.1,
            "the moving region lost {worst:.2} dB (both stages: {both})"
        );
        let gain_bg = gain_bg / 12.0;
        assert!(
            gain_bg > 4.0,
            "the background gained only {gain_bg:.2} dB ({both})"
        );
    }
}

#[test]
fn a_scene_cut_leaves_no_trace() {
    let (a, b) = (texture(6, 64, 96), texture(7, 64, 96));
    let mut f = TemporalFilter::new();
    for i in 0..8 {
        let _ = f.apply(&noisy(&a, 400 + i), 1.0).unwrap();
    }
    let first_b = noisy(&b, 500);
    let y = f.apply(&first_b, 1.0).unwrap();
    assert_eq!(f.scene_cuts(), 1);
    assert!(
        max_abs(&y, &first_b) == 0.0,
        "the first frame after a cut is itself"
    );
    // Both stages: the same.
    let mut g = TemporalFilter::new();
    for i in 0..8 {
        let _ = filter(&mut g, &noisy(&a, 400 + i), 1.0, true);
    }
    assert!(max_abs(&filter(&mut g, &first_b, 1.0, true), &first_b) == 0.0);
    // And the next frames average within the new scene only.
    let y2 = f.apply(&noisy(&b, 501), 1.0).unwrap();
    assert!(psnr(&y2, &b) > psnr(&noisy(&b, 501), &b) + 1.5);
}

#[test]
fn a_batch_is_filtered_frame_by_frame_and_a_new_size_starts_afresh() {
    let clean = texture(8, 32, 48);
    let frames = Tensor::cat(&[noisy(&clean, 1), noisy(&clean, 2), noisy(&clean, 3)], 0);
    let together = TemporalFilter::new().apply(&frames, 0.6).unwrap();
    let mut single = TemporalFilter::new();
    for i in 0..3 {
        let one = single.apply(&frames.narrow(0, i, 1), 0.6).unwrap();
        assert!(max_abs(&one, &together.narrow(0, i, 1)) < 1e-6);
    }
    let other = noisy(&texture(9, 32, 64), 4);
    assert!(max_abs(&single.apply(&other, 1.0).unwrap(), &other) == 0.0);
    single.reset();
    assert!(!single.is_primed());
}

#[test]
fn after_the_warm_up_a_late_start_matches_one_pass() {
    let big = texture(10, 160, 256);
    let amount = 0.5;
    let warm = warmup_frames(amount);
    assert!(warm > 0 && warm < 200 && warmup_frames(0.0) == 0);
    let frame = |i: i64| noisy(&crop(&big, 10 + (i % 7), 10 + i % 11, 48, 64), 600 + i);
    let (mut whole, mut late) = (TemporalFilter::new(), TemporalFilter::new());
    let start = 5;
    for i in 0..start + warm as i64 + 2 {
        let y = whole.apply(&frame(i), amount).unwrap();
        if i >= start {
            let z = late.apply(&frame(i), amount).unwrap();
            if i >= start + warm as i64 {
                assert!(max_abs(&y, &z) < 0.5 / 255.0, "frame {i} differs");
            }
        }
    }
}

#[test]
fn offline_keeps_every_frame_in_order_and_beats_causal() {
    let clean = texture(11, 64, 96);
    let frames: Vec<Tensor> = (0..9).map(|i| noisy(&clean, 700 + i)).collect();
    let mut la = Lookahead::new(3);
    let mut causal = TemporalFilter::new();
    let mut out = Vec::new();
    let mut causal_out = Vec::new();
    for x in &frames {
        out.extend(la.push(x, 0.5).unwrap());
        assert!(la.held() <= 3);
        assert!(la.memory_bytes() <= Lookahead::max_memory_bytes(3, 64, 96));
        causal_out.push(causal.apply(x, 0.5).unwrap());
    }
    assert_eq!(out.len(), 6);
    out.extend(la.finish(0.5).unwrap());
    assert_eq!((out.len(), la.held()), (9, 0));
    // The first frames see the future: far better than causal's (the first is the input).
    let first = psnr(&out[0], &clean) - psnr(&causal_out[0], &clean);
    assert!(
        first > 4.0,
        "offline's first frame gained {first:.2} dB over causal"
    );
    let mean = |v: &[Tensor]| v.iter().map(|t| psnr(t, &clean)).sum::<f64>() / v.len() as f64;
    assert!(mean(&out) > mean(&causal_out) + 1.0);
    // In order: frame i is closest to input i's content among its neighbours (noise differs).
    for (i, y) in out.iter().enumerate() {
        assert_eq!(y.size(), [1, 3, 64, 96], "frame {i}");
    }
}

#[test]
fn offline_follows_a_cut_on_both_sides() {
    let (a, b) = (texture(12, 64, 96), texture(13, 64, 96));
    let frames: Vec<Tensor> = (0..8)
        .map(|i| noisy(if i < 4 { &a } else { &b }, 800 + i))
        .collect();
    let mut la = Lookahead::new(2);
    let mut out = Vec::new();
    for x in &frames {
        out.extend(la.push(x, 1.0).unwrap());
    }
    out.extend(la.finish(1.0).unwrap());
    assert_eq!(out.len(), 8);
    for (i, y) in out.iter().enumerate() {
        let (own, other) = if i < 4 { (&a, &b) } else { (&b, &a) };
        // No trace of the other scene: closer to its own than the noisy input is.
        assert!(psnr(y, own) > psnr(&frames[i], own), "frame {i}");
        assert!(psnr(y, other) < 20.0, "frame {i}");
    }
    // Frames next to the cut: 3 (last of a) and 4 (first of b) still gain from their side.
    assert!(psnr(&out[3], &a) > psnr(&frames[3], &a) + 1.5);
    assert!(psnr(&out[4], &b) > psnr(&frames[4], &b) + 1.5);
}
