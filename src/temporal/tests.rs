//! The temporal filter on synthetic sequences: a still scene, a pan, a moving object, a scene
//! cut, causal and with lookahead; the warm-up contract.

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

/// `frames` through one filter, each frame with up to `lookahead` later ones (0: causal).
fn run(frames: &[Tensor], lookahead: usize, amount: f64) -> (Vec<Tensor>, TemporalFilter) {
    run_from(frames, lookahead, amount, 0)
}

/// [`run`] on a part of a stream whose first frame is the stream's frame `origin`.
fn run_from(
    frames: &[Tensor],
    lookahead: usize,
    amount: f64,
    origin: u64,
) -> (Vec<Tensor>, TemporalFilter) {
    let mut f = TemporalFilter::new();
    f.set_origin(Some(origin));
    let out = (0..frames.len())
        .map(|i| {
            let later = &frames[i + 1..(i + 1 + lookahead).min(frames.len())];
            f.set_future(lookahead, Vec::new());
            let future = (!later.is_empty()).then(|| Tensor::cat(later, 0));
            f.prepare_window(&frames[i], future.as_ref(), amount)
                .unwrap()
        })
        .collect();
    (out, f)
}

fn mean_psnr(out: &[Tensor], clean: &[Tensor]) -> f64 {
    out.iter().zip(clean).map(|(y, c)| psnr(y, c)).sum::<f64>() / out.len() as f64
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
fn a_still_scene_averages_and_amount_zero_is_the_identity() {
    let clean = texture(2, 64, 96);
    let frames: Vec<Tensor> = (0..10).map(|i| noisy(&clean, 100 + i)).collect();
    let (out, mut f) = run(&frames, 0, 1.0);
    assert!(
        max_abs(&out[0], &frames[0]) == 0.0,
        "the first frame passes unchanged"
    );
    let gain = psnr(&out[9], &clean) - psnr(&frames[9], &clean);
    // 3.8 frames averaged: up to 5.8 dB; the confidence gives some of it up.
    assert!(gain > 3.0, "still scene gained {gain:.2} dB");
    let off = f.prepare(&frames[9], 0.0).unwrap();
    assert!(max_abs(&off, &frames[9]) == 0.0 && !f.is_primed());
}

#[test]
fn a_pan_is_followed() {
    let big = texture(3, 160, 256);
    // 3 pixels right and 2 down per frame.
    let clean: Vec<Tensor> = (0..12)
        .map(|i| crop(&big, 10 + 2 * i, 10 + 3 * i, 64, 96))
        .collect();
    let frames: Vec<Tensor> = clean.iter().zip(200..).map(|(c, s)| noisy(c, s)).collect();
    for lookahead in [0, 2] {
        let (out, _) = run(&frames, lookahead, 1.0);
        // Away from the edges the pan uncovers, after the first frames.
        let c = |t: &Tensor| crop(t, 8, 8, 48, 80);
        let gain = (4..10)
            .map(|i| psnr(&c(&out[i]), &c(&clean[i])) - psnr(&c(&frames[i]), &c(&clean[i])))
            .sum::<f64>()
            / 6.0;
        assert!(
            gain > 2.5,
            "panning gained only {gain:.2} dB (lookahead {lookahead})"
        );
    }
}

#[test]
fn a_moving_object_leaves_no_ghost() {
    let bg = texture(4, 96, 128);
    let obj = texture(5, 24, 24) * 0.3 + 0.6;
    // A square moving 7 pixels right and 3 down per frame over a still background.
    let at = |i: i64| (10 + 3 * i, 4 + 7 * i);
    let clean: Vec<Tensor> = (0..14)
        .map(|i| {
            let c = bg.copy();
            let (oy, ox) = at(i);
            c.narrow(2, oy, 24).narrow(3, ox, 24).copy_(&obj);
            c
        })
        .collect();
    let frames: Vec<Tensor> = clean.iter().zip(300..).map(|(c, s)| noisy(c, s)).collect();
    for lookahead in [0, 2] {
        let (out, _) = run(&frames, lookahead, 1.0);
        let (mut worst, mut gain_bg) = (f64::INFINITY, 0.0);
        for i in 2..12 {
            // The object where it was, is and will be (what it uncovers and covers).
            let (oy, ox) = at(i as i64);
            let region = |t: &Tensor| crop(t, oy - 3, ox - 7, 30, 38);
            let d = psnr(&region(&out[i]), &region(&clean[i]))
                - psnr(&region(&frames[i]), &region(&clean[i]));
            worst = worst.min(d);
            let corner = |t: &Tensor| crop(t, 70, 0, 26, 40);
            gain_bg += psnr(&corner(&out[i]), &corner(&clean[i]))
                - psnr(&corner(&frames[i]), &corner(&clean[i]));
        }
        assert!(
            worst > -0.1,
            "the moving region lost {worst:.2} dB (lookahead {lookahead})"
        );
        let gain_bg = gain_bg / 10.0;
        assert!(
            gain_bg > 2.5,
            "the background gained only {gain_bg:.2} dB ({lookahead})"
        );
    }
}

#[test]
fn a_scene_cut_leaves_no_trace() {
    let (a, b) = (texture(6, 64, 96), texture(7, 64, 96));
    let clean: Vec<&Tensor> = (0..10).map(|i| if i < 6 { &a } else { &b }).collect();
    let frames: Vec<Tensor> = clean.iter().zip(400..).map(|(c, s)| noisy(c, s)).collect();
    let (out, f) = run(&frames, 0, 1.0);
    assert_eq!(f.scene_cuts(), 1);
    assert!(
        max_abs(&out[6], &frames[6]) == 0.0,
        "the first frame after a cut is itself"
    );
    // The next ones average within the new scene only.
    assert!(psnr(&out[8], &b) > psnr(&frames[8], &b) + 1.5);
    // With lookahead: the frames before the cut see none of the next scene either.
    let (out, _) = run(&frames, 2, 1.0);
    for (i, y) in out.iter().enumerate() {
        let (own, other) = if i < 6 { (&a, &b) } else { (&b, &a) };
        assert!(psnr(y, own) > psnr(&frames[i], own) + 1.0, "frame {i}");
        assert!(psnr(y, other) < 20.0, "frame {i}");
    }
    assert!(max_abs(&out[5], &run(&frames[..6], 2, 1.0).0[5]) < 1e-6);
}

#[test]
fn a_batch_with_its_future_equals_frame_by_frame_and_a_new_size_starts_afresh() {
    let clean = texture(8, 32, 48);
    let frames: Vec<Tensor> = (0..6).map(|i| noisy(&clean, i)).collect();
    for lookahead in [0, 2] {
        let (single, _) = run(&frames, lookahead, 0.6);
        let mut f = TemporalFilter::new();
        // Frames 0-2 as one call with 3-4 as their future, then 3-5.
        f.set_future(lookahead, Vec::new());
        let first = f
            .prepare_window(
                &Tensor::cat(&frames[0..3], 0),
                Some(&Tensor::cat(&frames[3..5], 0)),
                0.6,
            )
            .unwrap();
        let second = f
            .prepare_window(&Tensor::cat(&frames[3..6], 0), None, 0.6)
            .unwrap();
        let together = Tensor::cat(&[first, second], 0);
        for (i, one) in single.iter().enumerate() {
            assert!(
                max_abs(one, &together.narrow(0, i as i64, 1)) < 1e-6,
                "frame {i}"
            );
        }
    }
    let mut f = TemporalFilter::new();
    let _ = f.prepare(&frames[0], 1.0).unwrap();
    let other = noisy(&texture(9, 32, 64), 4);
    assert!(max_abs(&f.prepare(&other, 1.0).unwrap(), &other) == 0.0);
    f.reset();
    assert!(!f.is_primed());
}

#[test]
fn offline_beats_causal_where_the_past_is_short() {
    let clean = texture(11, 64, 96);
    let frames: Vec<Tensor> = (0..9).map(|i| noisy(&clean, 700 + i)).collect();
    let cleans: Vec<Tensor> = (0..9).map(|_| clean.shallow_clone()).collect();
    let (causal, _) = run(&frames, 0, 0.5);
    let (offline, _) = run(&frames, 2, 0.5);
    let first = psnr(&offline[0], &clean) - psnr(&causal[0], &clean);
    assert!(
        first > 2.0,
        "offline's first frame gained {first:.2} dB over causal"
    );
    let gain = mean_psnr(&offline, &cleans) - mean_psnr(&causal, &cleans);
    assert!(gain > 1.0, "offline gained {gain:.2} dB over causal");
}

/// Bit for bit, across the restarts, for a start on a restart and off one; started later
/// than the warm-up, frames differ (the check can fail).
#[test]
fn after_the_warm_up_a_late_start_matches_one_pass() {
    let big = texture(10, 160, 256);
    let amount = 0.5;
    let warm = warmup_frames(amount);
    assert!(warm > 0 && warm < 100 && warmup_frames(0.0) == 0);
    assert_eq!(lookahead_frames(3), 3);
    let frames: Vec<Tensor> = (0..72i64)
        .map(|i| noisy(&crop(&big, 10 + (i % 7), 10 + i % 11, 48, 64), 600 + i))
        .collect();
    for lookahead in [0, 2] {
        let (whole, _) = run(&frames, lookahead, amount);
        for start in [5, 16] {
            let (late, _) = run_from(&frames[start..], lookahead, amount, start as u64);
            for i in start + warm..frames.len() {
                let d = max_abs(&whole[i], &late[i - start]);
                assert!(
                    d == 0.0,
                    "frame {i} differs by {d} (start {start}, lookahead {lookahead})"
                );
            }
        }
        // Too short a warm-up: the frame uses a recursion that started before the part.
        let start = 17;
        let (late, _) = run_from(&frames[start..], lookahead, amount, start as u64);
        let i = 47;
        assert!(max_abs(&whole[i], &late[i - start]) > 0.0, "frame {i}");
    }
}

/// Bit for bit equal (same shape, kind and values).
fn same(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.kind() == b.kind() && a.equal(b)
}

/// `n` noisy `h` x `w` frames of a pan across a texture (seed `seed`) with a moving 12x12
/// object, frame `cut` another picture (seed `seed + 1`: a scene cut); noise seeds from
/// `noise_seed`.
fn pan_with_object_and_cut(
    seed: i64,
    h: i64,
    w: i64,
    n: i64,
    cut: i64,
    noise_seed: i64,
) -> Vec<Tensor> {
    let big = texture(seed, h + 60, w + 60);
    let other = texture(seed + 1, h, w);
    let obj = texture(seed + 2, 12, 12) * 0.3 + 0.6;
    (0..n)
        .map(|i| {
            let c = match i == cut {
                true => other.copy(),
                false => crop(&big, 10 + 2 * i, 10 + 3 * i, h, w),
            };
            c.narrow(2, 5 + 3 * i, 12)
                .narrow(3, 4 + 5 * i, 12)
                .copy_(&obj);
            noisy(&c, noise_seed + i)
        })
        .collect()
}

#[test]
fn the_cpu_path_gives_the_tch_ops_numbers_bit_for_bit() {
    // Even and odd sizes (partial blocks, odd pyramid levels), a pan, a moving object, a cut.
    for (h, w) in [(64, 96), (45, 77), (90, 160)] {
        let frames = pan_with_object_and_cut(12, h, w, 8, 6, 800);
        for f in &frames {
            assert!(same(
                &motion::luma(f).unwrap(),
                &motion::luma_ops(f).unwrap()
            ));
        }
        for pair in frames.windows(2) {
            let (c, p) = (
                motion::luma(&pair[1]).unwrap(),
                motion::luma(&pair[0]).unwrap(),
            );
            let v = motion::estimate(&c, &p).unwrap();
            assert!(same(&v, &motion::estimate_ops(&c, &p).unwrap()), "{h}x{w}");
            for bs in [motion::FINE, motion::BLOCK] {
                let v = v
                    .narrow(1, 0, (h + bs - 1) / bs)
                    .narrow(2, 0, (w + bs - 1) / bs);
                let a = motion::warp(&pair[0], &v, bs).unwrap();
                assert!(same(&a, &motion::warp_ops(&pair[0], &v, bs).unwrap()));
            }
        }
        for cap in [cap(0.5), cap(1.0)] {
            let (mut a, mut b) = (
                fusion::Step::fresh(&frames[0]).unwrap(),
                fusion::Step::fresh(&frames[0]).unwrap(),
            );
            let mut cuts = 0;
            for (i, f) in frames.iter().enumerate().skip(1) {
                a = fusion::step(f, &a.state, cap).unwrap();
                b = fusion::step_ops(f, &b.state, cap).unwrap();
                assert_eq!(a.cut, b.cut, "frame {i}");
                cuts += a.cut as usize;
                assert!(
                    same(&a.out, &b.out),
                    "{h}x{w} frame {i}: fused frames differ"
                );
                assert!(
                    same(&a.state.count, &b.state.count),
                    "frame {i}: counts differ"
                );
                assert!(same(&a.state.luma, &b.state.luma), "frame {i}");
            }
            assert_eq!(cuts, 2, "the cuts to frame 6 and back");
        }
        // Offline mode's combination of a forward and a backward estimate.
        let mut forward = Recursion::default();
        let steps: Vec<_> = (frames[..4].iter())
            .map(|x| forward.step(x, cap(0.5)).unwrap())
            .collect();
        let (f, nf) = steps.last().unwrap();
        let (b, nb) = offline::backward(&frames[3..6], cap(0.5)).unwrap();
        let y = &frames[3];
        let a = offline::combine(y, f, nf, &b, &nb).unwrap();
        assert!(same(&a, &offline::combine_ops(y, f, nf, &b, &nb).unwrap()));
    }
}

#[test]
fn the_output_blend_corrects_a_level_shift_without_a_ghost() {
    // A still scene with a moving square; the "network" a stand-in that returns the clean
    // frame moved 0.05 up (a level shift, as the model's on compressed video): the blend
    // pulls its low frequencies towards the fused input's as far as frames were fused.
    let bg = texture(21, 64, 96);
    let obj = texture(22, 16, 16) * 0.3 + 0.6;
    let at = |i: i64| (8 + 2 * i, 6 + 6 * i);
    let clean: Vec<Tensor> = (0..8i64)
        .map(|i| {
            let c = bg.copy();
            let (oy, ox) = at(i);
            c.narrow(2, oy, 16).narrow(3, ox, 16).copy_(&obj);
            c
        })
        .collect();
    let frames: Vec<Tensor> = clean.iter().zip(900..).map(|(c, s)| noisy(c, s)).collect();
    for lookahead in [0, 2] {
        let mut f = TemporalFilter::new();
        let (mut gain, mut worst) = (0.0, f64::INFINITY);
        for i in 0..frames.len() {
            let later = &frames[i + 1..(i + 1 + lookahead).min(frames.len())];
            f.set_future(lookahead, Vec::new());
            let future = (!later.is_empty()).then(|| Tensor::cat(later, 0));
            let fused = f.prepare_window(&frames[i], future.as_ref(), 1.0).unwrap();
            let counts = f.counts.as_ref().unwrap().shallow_clone();
            let o = &clean[i] + 0.05;
            let y = f.finish(&fused, &o).unwrap();
            assert!(same(&y, &output::blend(&o, &fused, &counts).unwrap()));
            // No counts left for a second call: the network's output as it is.
            assert!(same(&f.finish(&fused, &o).unwrap(), &o));
            if counts.eq(1.0).all().int64_value(&[]) == 1 {
                assert!(same(&y, &o), "nothing fused, nothing moved (frame {i})");
            }
            let corner = |t: &Tensor| crop(t, 44, 0, 20, 40);
            gain += psnr(&corner(&y), &corner(&clean[i])) - psnr(&corner(&o), &corner(&clean[i]));
            let (oy, ox) = at(i as i64);
            let region = |t: &Tensor| crop(t, (oy - 2).max(0), (ox - 6).max(0), 20, 28);
            worst = worst
                .min(psnr(&region(&y), &region(&clean[i])) - psnr(&region(&o), &region(&clean[i])));
        }
        assert!(
            gain / 8.0 > 1.0,
            "the still corner gained {gain:.2} dB over 8 frames ({lookahead})"
        );
        assert!(
            worst > -0.1,
            "the moving region lost {worst:.2} dB ({lookahead})"
        );
        // amount 0: no fusion, so no blend.
        let fused = f.prepare(&frames[0], 0.0).unwrap();
        assert!(same(&f.finish(&fused, &clean[0]).unwrap(), &clean[0]));
    }
    let bad = Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu));
    assert!(output::blend(&bad, &bad, &bad).is_err());
}

#[test]
fn the_output_blend_in_plain_rust_gives_the_tch_ops_numbers_bit_for_bit() {
    // The network's output as it comes (channels-last, cropped from a taller padded frame)
    // and contiguous; counts from 1 to 4; a batch of two; odd sizes.
    for (n, h, w) in [(1, 64, 96), (2, 45, 77), (1, 2, 9)] {
        let fused = noisy(&texture(31, h, w).repeat([n, 1, 1, 1]), 32);
        let padded = noisy(&texture(33, h + 14, w), 34).repeat([n, 1, 1, 1]);
        let nhwc = padded
            .permute([0, 2, 3, 1])
            .contiguous()
            .permute([0, 3, 1, 2])
            .narrow(2, 0, h);
        let counts = (Tensor::rand([n, 1, h, w], (Kind::Float, Device::Cpu)) * 3.0 + 1.0).round();
        for out in [nhwc.shallow_clone(), nhwc.contiguous()] {
            let a = output::blend_cpu(&out, &fused, &counts).unwrap();
            let b = output::blend_ops(&out, &fused, &counts).unwrap();
            assert!(same(&a, &b), "{n}x{h}x{w}, strides {:?}", out.stride());
            assert!(same(&output::blend(&out, &fused, &counts).unwrap(), &a));
            // The output keeps the layout of the network's (the conversion after it is the same).
            assert_eq!(a.stride()[1] == 1, out.stride()[1] == 1);
        }
    }
}

/// The recursion in tch ops alone (the reference): each frame's fused frame and count.
fn ops_recursion(frames: &[&Tensor], cap: f64) -> Vec<(Tensor, Tensor)> {
    let mut state: Option<fusion::State> = None;
    frames
        .iter()
        .map(|f| {
            let s = match state.take() {
                Some(prev) => fusion::step_ops(f, &prev, cap).unwrap(),
                None => fusion::Step::fresh(f).unwrap(),
            };
            let r = (s.out.shallow_clone(), s.state.count.shallow_clone());
            state = Some(s.state);
            r
        })
        .collect()
}

#[test]
fn offline_mode_gives_the_tch_ops_numbers_bit_for_bit() {
    // The whole offline stage (forward recursion, backward windows, the combination and its
    // counts) against the same arithmetic in tch ops, frame by frame and in batches with a
    // future, to the stream's end; odd and even sizes, a pan, a moving object, a cut.
    for (h, w) in [(45, 77), (64, 96)] {
        let frames = pan_with_object_and_cut(21, h, w, 9, 5, 900);
        let (amount, lookahead) = (0.7, 2);
        let c = cap(amount);
        let all: Vec<&Tensor> = frames.iter().collect();
        let forward = ops_recursion(&all, c);
        let expected: Vec<(Tensor, Tensor)> = (0..frames.len())
            .map(|i| {
                let end = (i + lookahead).min(frames.len() - 1);
                let (f, nf) = &forward[i];
                if end == i {
                    return (f.shallow_clone(), nf.shallow_clone());
                }
                let window: Vec<&Tensor> = all[i..=end].iter().rev().copied().collect();
                let (b, nb) = ops_recursion(&window, c).pop().unwrap();
                let y = &frames[i];
                (
                    offline::combine_ops(y, f, nf, &b, &nb).unwrap(),
                    (nf + &nb) - 1.0,
                )
            })
            .collect();
        // One frame per call, then calls of 2 frames.
        for batch in [1, 2] {
            let mut filter = TemporalFilter::new();
            let mut i = 0;
            while i < frames.len() {
                let n = batch.min(frames.len() - i);
                let later = &frames[i + n..(i + n + lookahead).min(frames.len())];
                filter.set_future(lookahead, Vec::new());
                let future = (!later.is_empty()).then(|| Tensor::cat(later, 0));
                let x = Tensor::cat(&frames[i..i + n], 0);
                let out = filter.prepare_window(&x, future.as_ref(), amount).unwrap();
                let counts = filter.counts().unwrap().shallow_clone();
                for k in 0..n {
                    let (y, count) = &expected[i + k];
                    let at = (k as i64, i + k);
                    assert!(same(&out.narrow(0, at.0, 1), y), "{h}x{w} frame {}", at.1);
                    assert!(same(&counts.narrow(0, at.0, 1), count), "frame {}", at.1);
                }
                i += n;
            }
            assert_eq!(filter.scene_cuts(), 2, "the cut to frame 5 and back");
        }
    }
}

#[test]
fn the_future_is_converted_once_and_reused_only_for_the_same_bytes() {
    use crate::frame::{frames_to_tensor, FrameFormat, PixelFormat};
    let fmt = FrameFormat::new(PixelFormat::Rgb, 6, 4);
    let packed: Vec<Vec<u8>> = (0..4u8)
        .map(|i| {
            (0..fmt.frame_len())
                .map(|k| (k as u8) * 7 + i * 31)
                .collect()
        })
        .collect();
    let mut f = TemporalFilter::new();
    let ptr = |t: &Tensor| t.data_ptr() as usize;
    f.set_future(2, packed[1..3].to_vec());
    let first = f.take_future_frames(&fmt, Device::Cpu).unwrap();
    // The next call's future: frame 2 again (the same tensor), frame 3 new.
    f.set_future(2, packed[2..4].to_vec());
    let second = f.take_future_frames(&fmt, Device::Cpu).unwrap();
    assert_eq!(ptr(&second[0]), ptr(&first[1]));
    for (t, p) in second.iter().zip(&packed[2..4]) {
        assert!(same(t, &frames_to_tensor(&[p], &fmt, Device::Cpu).unwrap()));
    }
    assert!(f.bytes() >= 2 * (fmt.frame_len() + 3 * 6 * 4 * 4));
    // The next call's own frames, as the engine uploads them: those tensors, or None when one
    // of them was not in the future.
    let ours = f
        .converted(&[&packed[2], &packed[3]], &fmt, Device::Cpu)
        .unwrap()
        .unwrap();
    assert!(same(
        &ours,
        &frames_to_tensor(&[&packed[2], &packed[3]], &fmt, Device::Cpu).unwrap()
    ));
    let one = f
        .converted(&[&packed[3]], &fmt, Device::Cpu)
        .unwrap()
        .unwrap();
    assert_eq!(ptr(&one), ptr(&second[1]));
    assert!(f
        .converted(&[&packed[1]], &fmt, Device::Cpu)
        .unwrap()
        .is_none());
    let bgr = FrameFormat::new(PixelFormat::Bgr, 6, 4);
    assert!(f
        .converted(&[&packed[3]], &bgr, Device::Cpu)
        .unwrap()
        .is_none());
    // Other bytes of the same length, or the same bytes in another format: converted anew.
    let mut changed = packed[3].clone();
    changed[5] ^= 1;
    f.set_future(2, vec![changed.clone()]);
    let third = f.take_future_frames(&fmt, Device::Cpu).unwrap();
    assert_ne!(ptr(&third[0]), ptr(&second[1]));
    assert!(same(
        &third[0],
        &frames_to_tensor(&[&changed], &fmt, Device::Cpu).unwrap()
    ));
    f.set_future(2, vec![changed.clone()]);
    let fourth = f.take_future_frames(&bgr, Device::Cpu).unwrap();
    assert!(same(
        &fourth[0],
        &frames_to_tensor(&[&changed], &bgr, Device::Cpu).unwrap()
    ));
    assert!(!same(&fourth[0], &third[0]));
    // A reset drops them.
    f.reset();
    assert_eq!(f.bytes(), 0);
}
