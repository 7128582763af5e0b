//! The temporal stage on the CPU: the arithmetic of [`super::motion`]'s and
//! [`super::fusion`]'s tch ops in plain Rust over f32 planes, operation for operation and in
//! libtorch's order (sums in row-major order from 0, a division by the count, first index on a
//! tie), so the vectors and fused frames are bit for bit those of the tch path (tests.rs
//! compares them) at a fraction of the cost: the block search keeps one accumulator per
//! candidate shift instead of a full-size difference image per candidate, the warps index
//! rows directly, the median is a selection instead of a sort.
//!
//! Planes are row-major `h * w` slices; a frame is three planes one after the other.
//!
//! The functions are `#[inline(always)]` so that a caller compiled for AVX2
//! ([`super::fusion`]'s step, where the CPU has it) gets them in that instruction set: twice
//! the SIMD width of the SSE2 baseline, the same numbers (Rust never fuses a multiply and an
//! add, nor reorders a float sum, so the vectorised loops compute each value as before).

use std::borrow::Cow;

use super::fusion::{CUT_FRACTION, CUT_LEVEL, NOISE_FACTOR, T_MAX, T_MIN};
use super::motion::{BLOCK, FINE, LEVELS, SEARCH, SHIFT_PENALTY};

/// Integer block vectors `(dy, dx)` of a grid `hb` x `wb` (row-major).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vectors {
    pub hb: usize,
    pub wb: usize,
    pub v: Vec<(i32, i32)>,
}

impl Vectors {
    fn zeros(hb: usize, wb: usize) -> Self {
        Vectors {
            hb,
            wb,
            v: vec![(0, 0); hb * wb],
        }
    }
}

fn ceil_div(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

/// BT.601 luma of a frame (three planes): `(r * 0.299 + g * 0.587) + b * 0.114`, each product
/// rounded (libtorch's mul then sum over the channels).
#[inline(always)]
pub fn luma(frame: &[f32], hw: usize) -> Vec<f32> {
    let mut out = vec![0f32; hw];
    luma_into(frame, &mut out);
    out
}

/// [`luma`] written into `out` (`hw` long).
#[inline(always)]
pub fn luma_into(frame: &[f32], out: &mut [f32]) {
    let hw = out.len();
    let (r, rest) = frame.split_at(hw);
    let (g, b) = rest.split_at(hw);
    for (((o, &r), &g), &b) in out.iter_mut().zip(r).zip(g).zip(&b[..hw]) {
        let (pr, pg, pb) = (r * 0.299f32, g * 0.587f32, b * 0.114f32);
        *o = pr + pg + pb;
    }
}

/// A 2x2 average with ceil mode (a last odd row or column averaged over what it has).
#[inline(always)]
fn half(x: &[f32], h: usize, w: usize) -> (Vec<f32>, usize, usize) {
    let (h2, w2) = (ceil_div(h, 2), ceil_div(w, 2));
    if h % 2 == 0 && w % 2 == 0 {
        // Every window whole: `((a + b) + c) + d` (from 0) over 4.
        let mut out = vec![0f32; h2 * w2];
        for (oy, o) in out.chunks_exact_mut(w2).enumerate() {
            let (r0, r1) = (
                &x[2 * oy * w..(2 * oy + 1) * w],
                &x[(2 * oy + 1) * w..(2 * oy + 2) * w],
            );
            for (ox, o) in o.iter_mut().enumerate() {
                let mut sum = 0f32;
                sum += r0[2 * ox];
                sum += r0[2 * ox + 1];
                sum += r1[2 * ox];
                sum += r1[2 * ox + 1];
                *o = sum / 4.0;
            }
        }
        return (out, h2, w2);
    }
    let mut out = Vec::with_capacity(h2 * w2);
    for oy in 0..h2 {
        let (y0, y1) = (2 * oy, (2 * oy + 2).min(h));
        for ox in 0..w2 {
            let (x0, x1) = (2 * ox, (2 * ox + 2).min(w));
            let mut sum = 0f32;
            for y in y0..y1 {
                for &p in &x[y * w + x0..y * w + x1] {
                    sum += p;
                }
            }
            out.push(sum / ((y1 - y0) * (x1 - x0)) as f32);
        }
    }
    (out, h2, w2)
}

/// `x` (`h` x `w`, `c` planes) moved by the block vectors `v` (blocks of `bs` pixels):
/// `out[y, x] = x[clamp(y + dy), clamp(x + dx)]`.
#[inline(always)]
pub fn warp(x: &[f32], c: usize, h: usize, w: usize, v: &Vectors, bs: usize) -> Vec<f32> {
    let mut out = vec![0f32; c * h * w];
    warp_into(x, c, h, w, v, bs, &mut out);
    out
}

/// [`warp`] written into `out` (`c * h * w` long), every value of it.
#[inline(always)]
pub fn warp_into(x: &[f32], c: usize, h: usize, w: usize, v: &Vectors, bs: usize, out: &mut [f32]) {
    for ch in 0..c {
        let src = &x[ch * h * w..(ch + 1) * h * w];
        let dst = &mut out[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            let row = &v.v[(y / bs) * v.wb..(y / bs + 1) * v.wb];
            let d = &mut dst[y * w..(y + 1) * w];
            // Runs of blocks with one vector are one span of one source row: one copy.
            let mut bx = 0;
            while bx < row.len() {
                let (dy, dx) = row[bx];
                let run = row[bx..].iter().take_while(|&&u| u == (dy, dx)).count();
                let sy = (y as i64 + dy as i64).clamp(0, h as i64 - 1) as usize;
                let s = &src[sy * w..(sy + 1) * w];
                let (x0, x1) = (bx * bs, ((bx + run) * bs).min(w));
                copy_shifted(&mut d[x0..x1], s, x0, dx);
                bx += run;
            }
        }
    }
}

/// `dst[i] = src[clamp(x0 + i + dx)]`: a copy where the span lies inside `src`.
#[inline(always)]
fn copy_shifted(dst: &mut [f32], src: &[f32], x0: usize, dx: i32) {
    let start = x0 as i64 + dx as i64;
    if start >= 0 && start as usize + dst.len() <= src.len() {
        dst.copy_from_slice(&src[start as usize..start as usize + dst.len()]);
        return;
    }
    for (i, o) in dst.iter_mut().enumerate() {
        *o = src[(start + i as i64).clamp(0, src.len() as i64 - 1) as usize];
    }
}

/// `x` with its border replicated `r` pixels out: `(h + 2r) x (w + 2r)`.
#[inline(always)]
fn pad(x: &[f32], h: usize, w: usize, r: usize) -> Vec<f32> {
    let pw = w + 2 * r;
    let mut out = Vec::with_capacity((h + 2 * r) * pw);
    for py in 0..h + 2 * r {
        let y = py.saturating_sub(r).min(h - 1);
        let row = &x[y * w..(y + 1) * w];
        out.extend(std::iter::repeat_n(row[0], r));
        out.extend_from_slice(row);
        out.extend(std::iter::repeat_n(row[w - 1], r));
    }
    out
}

/// The first index of the smallest value (libtorch's argmin).
#[inline(always)]
fn argmin(costs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &c) in costs.iter().enumerate() {
        if c < costs[best] {
            best = i;
        }
    }
    best
}

/// The shift within `radius` that best matches each block (`bs` pixels) of `cur` with the
/// already warped `warped`: mean absolute difference plus the shift penalty.
#[inline(always)]
fn best_shift(
    cur: &[f32],
    warped: &[f32],
    h: usize,
    w: usize,
    radius: usize,
    bs: usize,
) -> Vectors {
    const K: usize = 2 * SEARCH as usize + 1;
    const KK: usize = K * K;
    match radius {
        1 => search::<3, 9>(cur, warped, h, w, bs),
        r if r == SEARCH as usize => search::<K, KK>(cur, warped, h, w, bs),
        r => unreachable!("a search radius of {r}"),
    }
}

/// [`best_shift`] over the `K` x `K` shifts (`KK` of them): one accumulator per shift, each
/// summing its block's differences in row-major order (libtorch's average pool).
#[inline(always)]
fn search<const K: usize, const KK: usize>(
    cur: &[f32],
    warped: &[f32],
    h: usize,
    w: usize,
    bs: usize,
) -> Vectors {
    let radius = K / 2;
    let padded = pad(warped, h, w, radius);
    let pw = w + 2 * radius;
    let mut penalty = [0f32; KK];
    for (i, p) in penalty.iter_mut().enumerate() {
        let (dy, dx) = (i / K, i % K);
        *p = (dy.abs_diff(radius) + dx.abs_diff(radius)) as f32 * SHIFT_PENALTY as f32;
    }
    let (hb, wb) = (ceil_div(h, bs), ceil_div(w, bs));
    let mut out = Vectors::zeros(hb, wb);
    for by in 0..hb {
        let (y0, y1) = (by * bs, ((by + 1) * bs).min(h));
        for bx in 0..wb {
            let (x0, x1) = (bx * bs, ((bx + 1) * bs).min(w));
            let mut acc = [0f32; KK];
            for y in y0..y1 {
                let c = &cur[y * w + x0..y * w + x1];
                for (ky, a) in acc.chunks_exact_mut(K).enumerate() {
                    // padded[y + ky, x + kx] = warped[y + ky - r, x + kx - r], clamped.
                    let row = &padded[(y + ky) * pw + x0..(y + ky) * pw + x1 + K - 1];
                    for (i, &c) in c.iter().enumerate() {
                        let p: &[f32; K] = row[i..i + K].try_into().unwrap();
                        for (a, &p) in a.iter_mut().zip(p) {
                            *a += (p - c).abs();
                        }
                    }
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as f32;
            for (a, p) in acc.iter_mut().zip(&penalty) {
                *a = *a / n + p;
            }
            let best = argmin(&acc);
            out.v[by * wb + bx] = (
                (best / K) as i32 - radius as i32,
                (best % K) as i32 - radius as i32,
            );
        }
    }
    out
}

/// Per-block motion of `cur` against `prev` (luma planes `h` x `w`), coarse to fine, then
/// each [`FINE`] block's best of its block's vector and its four neighbours': vectors for
/// blocks of [`FINE`] pixels such that `cur[y, x]` matches `prev[y + dy, x + dx]`.
#[inline(always)]
pub fn estimate(cur: &[f32], prev: &[f32], h: usize, w: usize) -> Vectors {
    let (block, levels) = (BLOCK as usize, LEVELS as usize);
    let (hb, wb) = (ceil_div(h, block), ceil_div(w, block));
    let mut curs = vec![(Cow::Borrowed(cur), h, w)];
    let mut prevs = vec![Cow::Borrowed(prev)];
    for l in 1..levels {
        let (c, lh, lw) = &curs[l - 1];
        let (hc, h2, w2) = half(c, *lh, *lw);
        let (hp, _, _) = half(&prevs[l - 1], *lh, *lw);
        curs.push((Cow::Owned(hc), h2, w2));
        prevs.push(Cow::Owned(hp));
    }
    let mut v = Vectors::zeros(hb, wb);
    for l in (0..levels).rev() {
        let coarsest = l + 1 == levels;
        if !coarsest {
            v.v.iter_mut()
                .for_each(|(dy, dx)| (*dy, *dx) = (2 * *dy, 2 * *dx));
        }
        let bs = block >> l;
        let radius = if coarsest { SEARCH as usize } else { 1 };
        let (c, lh, lw) = &curs[l];
        let shift = match coarsest {
            // The zero vectors move nothing.
            true => best_shift(c, &prevs[l], *lh, *lw, radius, bs),
            false => best_shift(
                c,
                &warp(&prevs[l], 1, *lh, *lw, &v, bs),
                *lh,
                *lw,
                radius,
                bs,
            ),
        };
        for (a, s) in v.v.iter_mut().zip(&shift.v) {
            *a = (a.0 + s.0, a.1 + s.1);
        }
    }
    best_neighbour(cur, prev, h, w, &v)
}

/// Each [`FINE`] block's best vector among its block's `v` and the four neighbours'.
#[inline(always)]
fn best_neighbour(cur: &[f32], prev: &[f32], h: usize, w: usize, v: &Vectors) -> Vectors {
    let fine = FINE as usize;
    let (hf, wf) = (ceil_div(h, fine), ceil_div(w, fine));
    let ratio = (BLOCK / FINE) as usize;
    let mut out = Vectors::zeros(hf, wf);
    let at = |by: usize, bx: usize, dy: i64, dx: i64| {
        let y = (by as i64 + dy).clamp(0, v.hb as i64 - 1) as usize;
        let x = (bx as i64 + dx).clamp(0, v.wb as i64 - 1) as usize;
        v.v[y * v.wb + x]
    };
    for fy in 0..hf {
        let (y0, y1) = (fy * fine, ((fy + 1) * fine).min(h));
        for fx in 0..wf {
            let (x0, x1) = (fx * fine, ((fx + 1) * fine).min(w));
            let (by, bx) = (fy / ratio, fx / ratio);
            let candidates = [
                at(by, bx, 0, 0),
                at(by, bx, -1, 0),
                at(by, bx, 1, 0),
                at(by, bx, 0, -1),
                at(by, bx, 0, 1),
            ];
            let mut costs = [0f32; 5];
            let mut moved = [0f32; FINE as usize];
            for (i, &(dy, dx)) in candidates.iter().enumerate() {
                // A repeated candidate costs the same (and loses the tie).
                if candidates[..i].contains(&(dy, dx)) {
                    costs[i] = f32::INFINITY;
                    continue;
                }
                let mut sum = 0f32;
                // The moved span inside the frame: read in place (no copy).
                let start = x0 as i64 + dx as i64;
                let inside = start >= 0 && (start as usize + x1 - x0) <= w;
                for y in y0..y1 {
                    let sy = (y as i64 + dy as i64).clamp(0, h as i64 - 1) as usize;
                    let src = &prev[sy * w..(sy + 1) * w];
                    let moved = match inside {
                        true => &src[start as usize..start as usize + x1 - x0],
                        false => {
                            copy_shifted(&mut moved[..x1 - x0], src, x0, dx);
                            &moved[..x1 - x0]
                        }
                    };
                    for (&p, &c) in moved.iter().zip(&cur[y * w + x0..y * w + x1]) {
                        sum += (p - c).abs();
                    }
                }
                costs[i] = sum / ((y1 - y0) * (x1 - x0)) as f32;
            }
            out.v[fy * wf + fx] = candidates[argmin(&costs)];
        }
    }
    out
}

/// `|3x3 mean of (prev - cur)|` averaged over the three planes (the mean over what lies
/// inside the frame at its border).
#[inline(always)]
fn aligned_difference(cur: &[f32], prev: &[f32], h: usize, w: usize) -> Vec<f32> {
    let hw = h * w;
    let mut d = vec![0f32; hw];
    let mut diff = vec![0f32; hw];
    for ch in 0..3 {
        let (c, p) = (&cur[ch * hw..(ch + 1) * hw], &prev[ch * hw..(ch + 1) * hw]);
        for ((o, &p), &c) in diff.iter_mut().zip(p).zip(c) {
            *o = p - c;
        }
        for y in 0..h {
            let (y0, y1) = (y.saturating_sub(1), (y + 2).min(h));
            let row = &mut d[y * w..(y + 1) * w];
            let mean = |x: usize| {
                let (x0, x1) = (x.saturating_sub(1), (x + 2).min(w));
                let mut sum = 0f32;
                for yy in y0..y1 {
                    for &v in &diff[yy * w + x0..yy * w + x1] {
                        sum += v;
                    }
                }
                (sum / ((y1 - y0) * (x1 - x0)) as f32).abs()
            };
            // The channel sum `(a0 + a1) + a2` in order (the first add to 0 is exact).
            let add = |o: &mut f32, a: f32| match ch {
                0 => *o = a,
                _ => *o += a,
            };
            if w < 3 || y0 + 3 != y1 {
                for (x, o) in row.iter_mut().enumerate() {
                    add(o, mean(x));
                }
                continue;
            }
            add(&mut row[0], mean(0));
            add(&mut row[w - 1], mean(w - 1));
            // Inside: nine terms in row-major order, divided by 9 (vectorizes over x).
            let n = w - 2;
            let rows = [y0, y0 + 1, y0 + 2].map(|y| &diff[y * w..(y + 1) * w]);
            // Each row's left, centre and right neighbours, `n` long (no bounds checks).
            let [a0, a1, a2, b0, b1, b2, c0, c1, c2] = [0, 1, 2]
                .map(|r| [0, 1, 2].map(|s| &rows[r][s..s + n]))
                .as_flattened()[..]
            else {
                unreachable!()
            };
            let out = &mut row[1..1 + n];
            for x in 0..n {
                let mut sum = 0f32;
                sum += a0[x];
                sum += a1[x];
                sum += a2[x];
                sum += b0[x];
                sum += b1[x];
                sum += b2[x];
                sum += c0[x];
                sum += c1[x];
                sum += c2[x];
                add(&mut out[x], (sum / 9.0).abs());
            }
        }
    }
    for o in &mut d {
        *o /= 3.0;
    }
    d
}

/// The lower median of `d` (libtorch's: element `(n - 1) / 2` in order), non-negative
/// values: a histogram of the top 16 bits of their bit patterns (ordered like the values),
/// then a selection within the bucket that holds it.
#[inline(always)]
fn lower_median(d: &[f32]) -> f32 {
    debug_assert!(d.iter().all(|&x| x >= 0.0));
    let rank = (d.len() - 1) / 2;
    let mut hist = vec![0u32; 1 << 16];
    for &x in d {
        hist[(x.to_bits() >> 16) as usize] += 1;
    }
    let (mut bucket, mut below) = (0, 0usize);
    for (b, &n) in hist.iter().enumerate() {
        if below + n as usize > rank {
            bucket = b as u32;
            break;
        }
        below += n as usize;
    }
    let mut inside: Vec<u32> = d
        .iter()
        .map(|x| x.to_bits())
        .filter(|b| b >> 16 == bucket)
        .collect();
    f32::from_bits(*inside.select_nth_unstable(rank - below).1)
}

/// One fusion of `cur` with the aligned earlier estimate `prev` (frames of three planes) and
/// its aligned `count` at `cap`: the fused frame and its count, or `None` for a scene cut
/// (see [`super::fusion`]).
#[inline(always)]
pub fn blend(
    cur: &[f32],
    prev: &[f32],
    count: &[f32],
    h: usize,
    w: usize,
    cap: f64,
) -> Option<(Vec<f32>, Vec<f32>)> {
    let (mut out, mut n) = (vec![0f32; 3 * h * w], vec![0f32; h * w]);
    blend_into(cur, prev, count, h, w, cap, &mut out, &mut n).then_some((out, n))
}

/// [`blend`] written into `out` (three planes) and `out_count` (one): false for a scene cut
/// (then they are left as they were).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn blend_into(
    cur: &[f32],
    prev: &[f32],
    count: &[f32],
    h: usize,
    w: usize,
    cap: f64,
    out: &mut [f32],
    out_count: &mut [f32],
) -> bool {
    let hw = h * w;
    let d = aligned_difference(cur, prev, h, w);
    let level = CUT_LEVEL as f32;
    let changed = d.iter().filter(|&&x| x > level).count();
    if (changed as f32 / hw as f32) as f64 > CUT_FRACTION {
        return false;
    }
    let median = lower_median(&d);
    let t = (median * NOISE_FACTOR as f32).clamp(T_MIN as f32, T_MAX as f32);
    let most = (cap - 1.0).max(0.0) as f32;
    // `n` in `d`'s place (each `d` is read once, before its `n` is written).
    let mut n = d;
    for (d, &count) in n.iter_mut().zip(count) {
        let c = (-(*d / t) + 2.0).clamp(0.0, 1.0);
        *d = (count * (c * c)).min(most);
    }
    for ch in 0..3 {
        let r = ch * hw..(ch + 1) * hw;
        for (((o, &c), &p), &n) in out[r.clone()]
            .iter_mut()
            .zip(&cur[r.clone()])
            .zip(&prev[r])
            .zip(&n)
        {
            *o = (c + p * n) / (n + 1.0);
        }
    }
    for (o, &n) in out_count.iter_mut().zip(&n) {
        *o = n + 1.0;
    }
    true
}

/// Offline mode's combination of the forward estimate `f` (counts `nf`) and the backward one
/// `b` (`nb`) of the frame `y` (frames of three planes, counts of one),
/// `(f * nf + b * nb - y) / (nf + nb - 1)`, written into `out`, and the combined count
/// `nf + nb - 1` into `count`.
#[inline(always)]
pub fn combine_into(
    y: &[f32],
    f: &[f32],
    nf: &[f32],
    b: &[f32],
    nb: &[f32],
    out: &mut [f32],
    count: &mut [f32],
) {
    let hw = nf.len();
    let (nf, nb) = (&nf[..hw], &nb[..hw]);
    for ((c, &nf), &nb) in count[..hw].iter_mut().zip(nf).zip(nb) {
        *c = nf + nb - 1.0;
    }
    for (ch, out) in out.chunks_exact_mut(hw).enumerate() {
        let r = ch * hw..(ch + 1) * hw;
        let (y, f, b) = (&y[r.clone()], &f[r.clone()], &b[r]);
        for i in 0..hw {
            out[i] = (f[i] * nf[i] + b[i] * nb[i] - y[i]) / count[i];
        }
    }
}

/// Glue between CPU tensors and the planes above.
pub mod tensors {
    use tch::{Device, Kind, Tensor};

    use super::Vectors;
    use crate::error::Result;

    /// Whether all of `ts` are on the CPU (the plain Rust path applies).
    pub fn on_cpu(ts: &[&Tensor]) -> bool {
        ts.iter().all(|t| t.device() == Device::Cpu)
    }

    /// `t` as a contiguous CPU float tensor (itself when it is one already).
    pub fn floats(t: &Tensor) -> Result<Tensor> {
        Ok(t.f_to_kind(Kind::Float)?.f_contiguous()?)
    }

    /// The data of a contiguous CPU float tensor (from [`floats`]).
    pub fn slice(t: &Tensor) -> &[f32] {
        debug_assert!(t.kind() == Kind::Float && t.is_contiguous() && t.device() == Device::Cpu);
        let n = t.numel();
        if n == 0 {
            return &[];
        }
        // SAFETY: a contiguous CPU float tensor holds `numel` f32 from its data pointer; the
        // slice borrows `t`, which keeps the storage alive and is not written meanwhile.
        unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, n) }
    }

    /// A new float CPU tensor of `shape` whose values the caller writes, all of them, through
    /// [`slice_mut`] before reading any (not zeroed first: that would be a pass for nothing).
    pub fn empty(shape: &[i64]) -> Result<Tensor> {
        Ok(Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?)
    }

    /// The data of a contiguous CPU float tensor, to write (from [`empty`] or [`floats`]).
    pub fn slice_mut(t: &mut Tensor) -> &mut [f32] {
        debug_assert!(t.kind() == Kind::Float && t.is_contiguous() && t.device() == Device::Cpu);
        let n = t.numel();
        if n == 0 {
            return &mut [];
        }
        // SAFETY: as in [`slice`]; the borrow of `t` is exclusive, and the storage is this
        // tensor's own (a new tensor from [`empty`], shared with no other handle).
        unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n) }
    }

    /// A float tensor of `shape` holding `data`.
    pub fn tensor(data: &[f32], shape: &[i64]) -> Result<Tensor> {
        Ok(Tensor::f_from_slice(data)?.f_view(shape)?)
    }

    /// `[2, hb, wb]` int64 (dy, dx), the tch path's layout.
    pub fn from_vectors(v: &Vectors) -> Result<Tensor> {
        let data: Vec<i64> = (v.v.iter().map(|p| p.0 as i64))
            .chain(v.v.iter().map(|p| p.1 as i64))
            .collect();
        Ok(Tensor::f_from_slice(&data)?.f_view([2, v.hb as i64, v.wb as i64])?)
    }

    /// The vectors of a `[2, hb, wb]` integer tensor.
    pub fn to_vectors(t: &Tensor) -> Result<Vectors> {
        let (hb, wb) = (t.size()[1] as usize, t.size()[2] as usize);
        let data = Vec::<i64>::try_from(t.f_to_kind(Kind::Int64)?.f_contiguous()?.f_view([-1])?)?;
        let (dy, dx) = data.split_at(hb * wb);
        Ok(Vectors {
            hb,
            wb,
            v: dy
                .iter()
                .zip(dx)
                .map(|(&a, &b)| (a as i32, b as i32))
                .collect(),
        })
    }
}
