//! The collaborative refinement (issue 23, `--refine collab`): BM3D's second stage (Dabov,
//! Foi, Katkovnik, Egiazarian 2007, "Image denoising by sparse 3D transform-domain
//! collaborative filtering", the Wiener step; the colour version's grouping on luma) with the
//! network's output as the basic estimate (the pilot).
//!
//! In the orthonormal opponent colour space, for reference blocks of 8x8 every `step` pixels
//! (and the last row and column of blocks, so every pixel is covered):
//! 1. **grouping**: within `±search` pixels, the blocks of the *pilot's* luma nearest to the
//!    reference by squared distance, below BM3D's threshold (a mean squared difference of 400
//!    levels² of the mean luma), up to `group` of them, the reference first; a group has a
//!    power-of-two count (the largest that fits what was found). The same coordinates group
//!    the noisy input's and the pilot's blocks of every channel;
//! 2. **3-D transform**: the orthonormal 2-D DCT of each block, then an orthonormal
//!    Walsh-Hadamard transform along the group;
//! 3. **empirical Wiener shrinkage**: each noisy coefficient times `P² / (P² + σ²)`, P the
//!    pilot's coefficient, σ² the noise variance of that channel and 2-D frequency (the
//!    sources of [`SigmaSource`], computed as the `wiener` stage does); with
//!    [`DcMode::Input`] every block's 2-D DC keeps gain 1 (the output's local means are the
//!    input's);
//! 4. **aggregation**: the inverse transform's blocks are added back where they came from,
//!    weighted by a 2-D Kaiser window (β = 2, as BM3D) times `1 / Σ g² σ²` of their group, and
//!    divided by the summed weights.
//!
//! It runs in plain Rust on CPU `f32` buffers (a CUDA batch goes to the CPU and back), in
//! bands of reference rows on up to two threads; the bands' sums are merged in a fixed order,
//! so the result does not depend on the number of threads. σ = 0 returns the input exactly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use super::basis::{dct_1d, out_of_space, Dct};
use super::wiener::Wiener;
use super::{adapted, check_scale, Adapt, Colour, DcMode, SigmaSource};
use crate::error::{Error, Result};

/// Block side.
const B: usize = 8;
/// The most blocks a group may hold.
const MAX_GROUP: i64 = 32;
/// BM3D's grouping threshold for its Wiener step: a mean squared difference of 400 levels²
/// of 255 per pixel of luma (R+G+B)/3; the opponent luma is √3 times that, and the sum runs
/// over the block's 64 pixels (0..1 scale).
const TAU: f32 = (3.0 * 400.0 * 64.0) / (255.0 * 255.0);
/// Reference rows per band (the unit of work of a thread).
const BAND_REFS: usize = 6;
/// The Kaiser window's β (BM3D's for 8x8 blocks).
const KAISER_BETA: f64 = 2.0;

type Block = [[f32; B]; B];

/// The collaborative stage's parameters; [`Collab::default`] is `--refine collab`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Collab {
    pub sigma: SigmaSource,
    /// σ is multiplied by this (> 0).
    pub scale: f64,
    /// Half side of the search window, pixels (1..=32).
    pub search: i64,
    /// The most blocks in a group: a power of two, 1..=32.
    pub group: i64,
    /// Step between reference blocks, pixels (1..=8).
    pub step: i64,
    pub dc: DcMode,
    pub adapt: Option<Adapt>,
}

impl Default for Collab {
    fn default() -> Self {
        Collab {
            sigma: SigmaSource::Flat,
            // scale, group and dc chosen on the training side (train-CBSD432's first 68
            // images, Gaussian 15/25/50: weights/README.md, session 12), where the cue is
            // the true σ within a few per cent.
            scale: 1.0,
            search: 12,
            group: 32,
            step: 3,
            dc: DcMode::Wiener,
            adapt: None,
        }
    }
}

impl Collab {
    /// `--refine strong`: `collab:scale=3,search=16,adapt=3:5`, for real camera noise: the
    /// stage driven by the noise cue with `adaptive`'s thresholds, σ three times the cue
    /// (real noise is spatially correlated and the cue reads it low; scale and search chosen
    /// on the real validation sets SIDD-val, SMA-lowlight and ViDeNN: weights/README.md,
    /// issue 23 session 12).
    pub fn strong() -> Collab {
        Collab {
            scale: 3.0,
            search: 16,
            adapt: Some(Adapt { lo: 3.0, hi: 5.0 }),
            ..Collab::default()
        }
    }

    /// The refined `noisy` with `pilot` as the basic estimate: (N, 3, H, W) f32 on the 0..1
    /// scale, on `pilot`'s device, not clamped.
    pub fn apply(&self, noisy: &Tensor, pilot: &Tensor) -> Result<Tensor> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
        self.apply_threads(noisy, pilot, threads)
    }

    /// [`Collab::apply`] on `threads` threads (the same result for any number).
    fn apply_threads(&self, noisy: &Tensor, pilot: &Tensor, threads: usize) -> Result<Tensor> {
        self.validate()?;
        let w = self.wiener();
        let (x, p) = w.prepare(noisy, pilot)?;
        let size = pilot.size();
        let (n, h, wd) = (size[0], size[2], size[3]);
        let dev = pilot.device();
        let basis = Dct::new(B as i64, dev)?;
        adapted(
            self.adapt,
            pilot,
            || w.cue(&x, &p, &basis),
            || {
                let var = w.noise_variance(&x, &p, &basis)?.levels;
                if var.f_max()?.double_value(&[]) <= 0.0 {
                    return Ok(noisy.f_to_device(dev)?.f_to_kind(Kind::Float)?);
                }
                let cpu = |t: &Tensor| -> Result<Vec<f32>> {
                    Ok(Vec::<f32>::try_from(
                        t.f_to_device(Device::Cpu)?.f_contiguous()?.f_view([-1])?,
                    )?)
                };
                let (xs, ps, vs) = (cpu(&x)?, cpu(&p)?, cpu(&var)?);
                let plane = (h * wd) as usize;
                let mut out = Vec::with_capacity(xs.len());
                for i in 0..n as usize {
                    let img = i * 3 * plane..(i + 1) * 3 * plane;
                    let v = &vs[i * 3 * B * B..(i + 1) * 3 * B * B];
                    let f = Frame {
                        x: &xs[img.clone()],
                        p: &ps[img],
                        var: v,
                        h: h as usize,
                        w: wd as usize,
                    };
                    out.extend(self.filter(&f, threads));
                }
                let y = Tensor::f_from_slice(&out)?.f_view([n, 3, h, wd])?;
                Ok(out_of_space(Colour::Opponent, &y)?.f_to_device(dev)?)
            },
        )
    }

    /// The `wiener` stage with this one's noise sources: its colour space, σ and cue.
    fn wiener(&self) -> Wiener {
        Wiener {
            block: B as i64,
            stride: B as i64,
            colour: Colour::Opponent,
            sigma: self.sigma,
            scale: self.scale,
            levels: 1,
            dc: self.dc,
            adapt: None,
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(format!("collab refinement: {m}")));
        if !(1..=32).contains(&self.search) {
            return bad(format!("search {} (expected 1..32 pixels)", self.search));
        }
        if !(1..=MAX_GROUP).contains(&self.group) || self.group.count_ones() != 1 {
            return bad(format!(
                "group {} (expected a power of two up to {MAX_GROUP})",
                self.group
            ));
        }
        if !(1..=B as i64).contains(&self.step) {
            return bad(format!("step {} (expected 1..8 pixels)", self.step));
        }
        check_scale(self.scale).or_else(bad)?;
        if let Some(a) = self.adapt {
            a.check().or_else(bad)?;
        }
        self.sigma.check().or_else(bad)?;
        Ok(())
    }

    /// One frame's three filtered planes (opponent space), frames smaller than a block
    /// mirrored out to one and cut back.
    fn filter(&self, f: &Frame<'_>, threads: usize) -> Vec<f32> {
        if f.h >= B && f.w >= B {
            return self.filter_frame(f, threads);
        }
        let (h, w) = (f.h.max(B), f.w.max(B));
        let grow = |t: &[f32]| -> Vec<f32> {
            let mut v = Vec::with_capacity(3 * h * w);
            for c in 0..3 {
                for y in 0..h {
                    for x in 0..w {
                        v.push(t[c * f.h * f.w + mirror(y, f.h) * f.w + mirror(x, f.w)]);
                    }
                }
            }
            v
        };
        let (x, p) = (grow(f.x), grow(f.p));
        let big = Frame {
            x: &x,
            p: &p,
            var: f.var,
            h,
            w,
        };
        let y = self.filter_frame(&big, threads);
        let mut out = Vec::with_capacity(3 * f.h * f.w);
        for c in 0..3 {
            for r in 0..f.h {
                out.extend_from_slice(&y[c * h * w + r * w..c * h * w + r * w + f.w]);
            }
        }
        out
    }

    /// [`Collab::filter`] of a frame at least a block in each side.
    fn filter_frame(&self, f: &Frame<'_>, threads: usize) -> Vec<f32> {
        let rows = positions(f.h, self.step as usize);
        let cols = positions(f.w, self.step as usize);
        let bands: Vec<&[usize]> = rows.chunks(BAND_REFS).collect();
        let plane = f.h * f.w;
        let tables = Tables::new();
        let next = AtomicUsize::new(0);
        // The sums, and the bands done but not merged yet: merged in band order only.
        let sums = Mutex::new(Sums {
            num: vec![0.0; 3 * plane],
            den: vec![0.0; 3 * plane],
            merged: 0,
            pending: BTreeMap::new(),
        });
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= bands.len() {
                break;
            }
            let band = self.band(f, bands[i], &cols, &tables);
            let mut s = sums.lock().unwrap_or_else(|e| e.into_inner());
            s.pending.insert(i, band);
            s.merge(f);
        };
        match threads.clamp(1, bands.len().max(1)) {
            1 => work(),
            t => std::thread::scope(|sc| {
                for _ in 1..t {
                    sc.spawn(work);
                }
                work();
            }),
        }
        let s = sums.into_inner().unwrap_or_else(|e| e.into_inner());
        s.num.iter().zip(&s.den).map(|(n, d)| n / d).collect()
    }

    /// The weighted sums of the groups of one band of reference rows.
    fn band(&self, f: &Frame<'_>, rows: &[usize], cols: &[usize], t: &Tables) -> Band {
        let (h, w) = (f.h, f.w);
        let s = self.search as usize;
        let y0 = rows[0].saturating_sub(s);
        let y1 = (rows[rows.len() - 1] + s).min(h - B) + B;
        let matches = self.matches(f, rows, cols);
        let mut num = vec![0.0f32; 3 * (y1 - y0) * w];
        let mut den = vec![0.0f32; 3 * (y1 - y0) * w];
        let plane = h * w;
        let bplane = (y1 - y0) * w;
        let mut xs = [[[0.0f32; B]; B]; MAX_GROUP as usize];
        let mut ps = [[[0.0f32; B]; B]; MAX_GROUP as usize];
        for (m, (r, c)) in matches
            .iter()
            .zip(rows.iter().flat_map(|r| cols.iter().map(move |c| (*r, *c))))
        {
            let n = 1 << (usize::BITS - 1 - m.len().leading_zeros());
            let at = |k: usize| {
                let (dy, dx) = (m[k].1 as isize, m[k].2 as isize);
                ((r as isize + dy) as usize, (c as isize + dx) as usize)
            };
            for ch in 0..3 {
                let var = &f.var[ch * B * B..(ch + 1) * B * B];
                let mean_var = var.iter().sum::<f32>() / (B * B) as f32;
                for k in 0..n {
                    let (y, x) = at(k);
                    xs[k] = t.forward(&block(&f.x[ch * plane..], w, y, x));
                    ps[k] = t.forward(&block(&f.p[ch * plane..], w, y, x));
                }
                hadamard(&mut xs[..n]);
                hadamard(&mut ps[..n]);
                let mut energy = 0.0f32;
                for (xb, pb) in xs[..n].iter_mut().zip(&ps[..n]) {
                    for u in 0..B {
                        for v in 0..B {
                            let s2 = var[u * B + v];
                            let p2 = pb[u][v] * pb[u][v];
                            let g = match (u, v, self.dc) {
                                (0, 0, DcMode::Input) => 1.0,
                                _ => (p2 + 1e-12) / (p2 + s2 + 1e-12),
                            };
                            xb[u][v] *= g;
                            energy += g * g * s2;
                        }
                    }
                }
                let weight = match mean_var > 0.0 {
                    true => 1.0 / energy.max(1e-6 * mean_var),
                    false => 1.0,
                };
                hadamard(&mut xs[..n]);
                for (k, xb) in xs[..n].iter().enumerate() {
                    let yb = t.inverse(xb);
                    let (y, x) = at(k);
                    for (i, (yr, kr)) in yb.iter().zip(&t.kaiser).enumerate() {
                        let o = ch * bplane + (y + i - y0) * w + x;
                        let num = &mut num[o..o + B];
                        let den = &mut den[o..o + B];
                        for (((n, d), v), k) in num.iter_mut().zip(den.iter_mut()).zip(yr).zip(kr) {
                            let kw = weight * k;
                            *n += kw * v;
                            *d += kw;
                        }
                    }
                }
            }
        }
        Band { y0, y1, num, den }
    }

    /// Per reference block of the band (rows major), its group: (distance, dy, dx) of the
    /// nearest blocks of the pilot's luma within the search window and under [`TAU`], nearest
    /// first (ties: the earlier offset), at most `group`, the reference itself first.
    fn matches(&self, f: &Frame<'_>, rows: &[usize], cols: &[usize]) -> Vec<Vec<(f32, i8, i8)>> {
        let (h, w) = (f.h, f.w);
        let luma = &f.p[..h * w];
        let k = self.group as usize;
        let mut out = vec![Vec::with_capacity(k); rows.len() * cols.len()];
        for m in out.iter_mut() {
            m.push((0.0, 0, 0));
        }
        if k == 1 {
            return out;
        }
        let s = self.search as isize;
        let mut colsum = vec![0.0f32; w];
        for dy in -s..=s {
            for dx in -s..=s {
                // No block of the frame lies that far off (or it is the reference itself).
                if (dy == 0 && dx == 0) || dy.unsigned_abs() > h - B || dx.unsigned_abs() > w - B {
                    continue;
                }
                // The columns whose partner x + dx lies in the frame.
                let xlo = (-dx).max(0) as usize;
                let xhi = (w as isize - dx.max(0)) as usize;
                for (ri, &r) in rows.iter().enumerate() {
                    let r2 = r as isize + dy;
                    if r2 < 0 || r2 as usize > h - B {
                        continue;
                    }
                    let r2 = r2 as usize;
                    colsum[xlo..xhi].fill(0.0);
                    for i in 0..B {
                        let a = &luma[(r + i) * w + xlo..(r + i) * w + xhi];
                        let o = (r2 + i) * w;
                        let b = &luma[(o as isize + xlo as isize + dx) as usize
                            ..(o as isize + xhi as isize + dx) as usize];
                        for ((c, a), b) in colsum[xlo..xhi].iter_mut().zip(a).zip(b) {
                            let d = a - b;
                            *c += d * d;
                        }
                    }
                    let row = &mut out[ri * cols.len()..(ri + 1) * cols.len()];
                    for (m, &c) in row.iter_mut().zip(cols) {
                        let c2 = c as isize + dx;
                        if c2 < 0 || c2 as usize > w - B {
                            continue;
                        }
                        let d: f32 = colsum[c..c + B].iter().sum();
                        if d > TAU || (m.len() == k && d >= m[k - 1].0) {
                            continue;
                        }
                        let at = m.partition_point(|e| e.0 <= d);
                        if m.len() == k {
                            m.pop();
                        }
                        m.insert(at, (d, dy as i8, dx as i8));
                    }
                }
            }
        }
        out
    }
}

/// One frame's planes in the opponent space and its noise variances (3 x 64, 0..1 scale²).
struct Frame<'a> {
    x: &'a [f32],
    p: &'a [f32],
    var: &'a [f32],
    h: usize,
    w: usize,
}

/// A band's weighted sums over frame rows `y0..y1` (3 planes).
struct Band {
    y0: usize,
    y1: usize,
    num: Vec<f32>,
    den: Vec<f32>,
}

/// The frame's sums and the bands waiting for their turn.
struct Sums {
    num: Vec<f32>,
    den: Vec<f32>,
    merged: usize,
    pending: BTreeMap<usize, Band>,
}

impl Sums {
    /// Add every band whose predecessors are in, in band order.
    fn merge(&mut self, f: &Frame<'_>) {
        while let Some(b) = self.pending.remove(&self.merged) {
            let (plane, bplane) = (f.h * f.w, (b.y1 - b.y0) * f.w);
            for ch in 0..3 {
                let at = ch * plane + b.y0 * f.w;
                let dst = at..at + bplane;
                let src = ch * bplane..(ch + 1) * bplane;
                for (d, s) in self.num[dst.clone()].iter_mut().zip(&b.num[src.clone()]) {
                    *d += s;
                }
                for (d, s) in self.den[dst].iter_mut().zip(&b.den[src]) {
                    *d += s;
                }
            }
            self.merged += 1;
        }
    }
}

/// The DCT's even and odd halves and the Kaiser window.
struct Tables {
    /// `even[k][i]` = `d[2k][i]`, `odd[k][i]` = `d[2k+1][i]` for i < 4, `d[u][i]` the
    /// orthonormal 1-D DCT-II (frequency-major): the even rows are symmetric, the odd ones
    /// antisymmetric, so each half acts on sums or differences of mirrored samples.
    even: [[f32; 4]; 4],
    odd: [[f32; 4]; 4],
    kaiser: Block,
}

impl Tables {
    // Index arithmetic over the fixed 8x8 (mirrored rows, even and odd halves).
    #[allow(clippy::needless_range_loop)]
    fn new() -> Tables {
        let d = dct_1d(B as i64);
        let (mut even, mut odd) = ([[0.0; 4]; 4], [[0.0; 4]; 4]);
        for k in 0..4 {
            for i in 0..4 {
                even[k][i] = d[2 * k * B + i];
                odd[k][i] = d[(2 * k + 1) * B + i];
            }
        }
        let k: Vec<f64> = (0..B)
            .map(|i| {
                let t = 2.0 * i as f64 / (B - 1) as f64 - 1.0;
                bessel_i0(KAISER_BETA * (1.0 - t * t).sqrt()) / bessel_i0(KAISER_BETA)
            })
            .collect();
        let mut kaiser = [[0.0; B]; B];
        for i in 0..B {
            for j in 0..B {
                kaiser[i][j] = (k[i] * k[j]) as f32;
            }
        }
        Tables { even, odd, kaiser }
    }

    /// The 2-D DCT `D x Dᵀ` (coefficient `[u][v]`: vertical frequency u, horizontal v).
    fn forward(&self, x: &Block) -> Block {
        transpose(&self.columns(&transpose(&self.columns(x))))
    }

    /// Its inverse `Dᵀ y D`.
    fn inverse(&self, y: &Block) -> Block {
        transpose(&self.columns_back(&transpose(&self.columns_back(y))))
    }

    /// `D x`: the 1-D DCT down every column, rows as vectors (vectorisable).
    // Index arithmetic over the fixed 8x8 (mirrored rows, even and odd halves).
    #[allow(clippy::needless_range_loop)]
    fn columns(&self, x: &Block) -> Block {
        let mut s = [[0.0f32; B]; 4];
        let mut d = [[0.0f32; B]; 4];
        for i in 0..4 {
            for j in 0..B {
                s[i][j] = x[i][j] + x[B - 1 - i][j];
                d[i][j] = x[i][j] - x[B - 1 - i][j];
            }
        }
        let mut y = [[0.0f32; B]; B];
        for k in 0..4 {
            for i in 0..4 {
                let (e, o) = (self.even[k][i], self.odd[k][i]);
                for j in 0..B {
                    y[2 * k][j] += e * s[i][j];
                    y[2 * k + 1][j] += o * d[i][j];
                }
            }
        }
        y
    }

    /// `Dᵀ y`: the inverse of [`Tables::columns`].
    // Index arithmetic over the fixed 8x8 (mirrored rows, even and odd halves).
    #[allow(clippy::needless_range_loop)]
    fn columns_back(&self, y: &Block) -> Block {
        let mut a = [[0.0f32; B]; 4];
        let mut b = [[0.0f32; B]; 4];
        for i in 0..4 {
            for k in 0..4 {
                let (e, o) = (self.even[k][i], self.odd[k][i]);
                for j in 0..B {
                    a[i][j] += e * y[2 * k][j];
                    b[i][j] += o * y[2 * k + 1][j];
                }
            }
        }
        let mut x = [[0.0f32; B]; B];
        for i in 0..4 {
            for j in 0..B {
                x[i][j] = a[i][j] + b[i][j];
                x[B - 1 - i][j] = a[i][j] - b[i][j];
            }
        }
        x
    }
}

fn transpose(x: &Block) -> Block {
    let mut t = [[0.0f32; B]; B];
    for (i, row) in x.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            t[j][i] = *v;
        }
    }
    t
}

/// The orthonormal Walsh-Hadamard transform along a group of `2^k` blocks, in place (its own
/// inverse).
fn hadamard(g: &mut [Block]) {
    let n = g.len();
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (lo, hi) = g.split_at_mut(j + h);
                let (a, b) = (&mut lo[j], &mut hi[0]);
                for (ar, br) in a.iter_mut().zip(b.iter_mut()) {
                    for (x, y) in ar.iter_mut().zip(br.iter_mut()) {
                        let (s, d) = (*x + *y, *x - *y);
                        *x = s;
                        *y = d;
                    }
                }
            }
        }
        h *= 2;
    }
    if n > 1 {
        let scale = 1.0 / (n as f32).sqrt();
        for b in g.iter_mut() {
            for r in b.iter_mut() {
                for v in r.iter_mut() {
                    *v *= scale;
                }
            }
        }
    }
}

/// The 8x8 block of `plane` (row length `w`) at row `y`, column `x`.
fn block(plane: &[f32], w: usize, y: usize, x: usize) -> Block {
    let mut b = [[0.0; B]; B];
    for (i, row) in b.iter_mut().enumerate() {
        row.copy_from_slice(&plane[(y + i) * w + x..(y + i) * w + x + B]);
    }
    b
}

/// The reference blocks' starts along a side of `len` (>= a block): every `step`, and the
/// last block.
fn positions(len: usize, step: usize) -> Vec<usize> {
    let last = len - B;
    let mut v: Vec<usize> = (0..=last).step_by(step).collect();
    if v.last() != Some(&last) {
        v.push(last);
    }
    v
}

/// Index `i` of a side of `n` extended by mirroring (the edge pixel repeated: ... 1 0 | 0 1 ...).
fn mirror(i: usize, n: usize) -> usize {
    let m = i % (2 * n);
    match m < n {
        true => m,
        false => 2 * n - 1 - m,
    }
}

/// The modified Bessel function of the first kind, order 0 (its power series).
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term) = (1.0, 1.0);
    for m in 1..50 {
        term *= (x / 2.0) / m as f64;
        sum += term * term;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::super::testing::{picture, psnr, CPU};
    use super::super::Refine;
    use super::*;

    fn collab(spec: &str) -> Collab {
        match spec.parse::<Refine>().unwrap() {
            Refine::Collab(c) => c,
            r => panic!("{spec} is {r}"),
        }
    }

    #[test]
    fn the_transforms_are_orthonormal() {
        let t = Tables::new();
        tch::manual_seed(21);
        let v = Vec::<f32>::try_from(Tensor::rand([4 * 64], CPU)).unwrap();
        let mut g = [[[0.0f32; B]; B]; 4];
        for (k, b) in g.iter_mut().enumerate() {
            *b = block(&v[k * 64..], 8, 0, 0);
        }
        let energy = |g: &[Block]| -> f32 { g.iter().flatten().flatten().map(|v| v * v).sum() };
        let before = energy(&g);
        let mut y: Vec<Block> = g.iter().map(|b| t.forward(b)).collect();
        hadamard(&mut y);
        assert!((energy(&y) / before - 1.0).abs() < 1e-5);
        hadamard(&mut y);
        for (a, b) in y.iter().zip(&g) {
            let back = t.inverse(a);
            for (r, s) in back.iter().flatten().zip(b.iter().flatten()) {
                assert!((r - s).abs() < 1e-5);
            }
        }
        // The 2-D DCT is D x Dᵀ of the 1-D basis.
        let d = dct_1d(B as i64);
        let got = t.forward(&g[0]);
        for u in 0..B {
            for v in 0..B {
                let mut want = 0.0f32;
                for i in 0..B {
                    for j in 0..B {
                        want += d[u * B + i] * g[0][i][j] * d[v * B + j];
                    }
                }
                assert!((got[u][v] - want).abs() < 1e-5, "{u} {v}");
            }
        }
        // The DC of a constant block is 8 times its value; the Kaiser window is symmetric.
        let dc = t.forward(&[[0.5; B]; B])[0][0];
        assert!((dc - 4.0).abs() < 1e-5, "{dc}");
        assert!((t.kaiser[0][0] - t.kaiser[7][7]).abs() < 1e-7 && t.kaiser[3][4] > t.kaiser[0][3]);
    }

    #[test]
    fn a_constant_picture_stays_constant() {
        let c = Tensor::from_slice(&[0.3f32, 0.55, 0.8]).view([1, 3, 1, 1]);
        let flat = c.expand([2, 3, 37, 50], false).contiguous();
        for spec in ["collab:sigma=10", "collab:sigma=25,group=32,step=1"] {
            let out = collab(spec).apply(&flat, &flat).unwrap();
            let dev = (&out - &flat).abs().max().double_value(&[]) * 255.0;
            // dc=wiener shrinks the group's DC by P²/(P²+σ²), P >= 0.3·8·√32: < 0.05 level.
            assert!(dev < 0.05, "{spec}: {dev} levels off");
        }
        let out = collab("collab:sigma=10,dc=input")
            .apply(&flat, &flat)
            .unwrap();
        let dev = (&out - &flat).abs().max().double_value(&[]) * 255.0;
        assert!(dev < 1e-3, "dc=input: {dev} levels off");
    }

    #[test]
    fn sigma_zero_returns_the_input_exactly() {
        tch::manual_seed(22);
        let noisy = Tensor::rand([2, 3, 21, 30], CPU);
        let pilot = Tensor::rand([2, 3, 21, 30], CPU);
        let out = collab("collab:sigma=0").apply(&noisy, &pilot).unwrap();
        assert!(out.equal(&noisy));
        // A pilot equal to the input leaves no residual and no flat-area noise.
        let out = collab("collab:sigma=psd").apply(&noisy, &noisy).unwrap();
        assert!(out.equal(&noisy));
    }

    #[test]
    fn with_a_decent_pilot_it_beats_the_pilot_the_input_and_the_wiener_stage() {
        tch::manual_seed(23);
        let clean = picture(96, 128);
        for sigma in [15.0, 30.0] {
            let noisy = &clean + Tensor::randn([1, 3, 96, 128], CPU) * (sigma / 255.0);
            // The pilot: the clean picture plus noise of a third of the level.
            let pilot = &clean + Tensor::randn([1, 3, 96, 128], CPU) * (sigma / 3.0 / 255.0);
            let spec = format!("{sigma}");
            let out = collab(&format!("collab:sigma={spec}"))
                .apply(&noisy, &pilot)
                .unwrap();
            let wiener = format!("wiener:sigma={spec},dc=input")
                .parse::<Refine>()
                .unwrap()
                .apply(&noisy, &pilot)
                .unwrap();
            let (n, p, w, c) = (
                psnr(&noisy, &clean),
                psnr(&pilot, &clean),
                psnr(&wiener, &clean),
                psnr(&out, &clean),
            );
            assert!(
                c > p + 0.5 && c > n + 5.0 && c > w + 0.3,
                "sigma {sigma}: input {n:.2}, pilot {p:.2}, wiener {w:.2}, collab {c:.2} dB"
            );
        }
    }

    #[test]
    fn one_or_two_threads_give_the_same_result() {
        tch::manual_seed(24);
        let clean = picture(70, 61);
        let noisy = &clean + Tensor::randn([1, 3, 70, 61], CPU) * 0.08;
        let pilot = crate::lowpass::gaussian_blur(&noisy, 1.2).unwrap();
        for spec in ["collab", "collab:sigma=20,step=2,group=8,search=5"] {
            let c = collab(spec);
            let one = c.apply_threads(&noisy, &pilot, 1).unwrap();
            let two = c.apply_threads(&noisy, &pilot, 2).unwrap();
            let three = c.apply_threads(&noisy, &pilot, 3).unwrap();
            assert!(one.equal(&two) && one.equal(&three), "{spec}");
            assert!(
                !one.equal(&pilot) && !one.equal(&noisy),
                "{spec}: did nothing"
            );
        }
    }

    #[test]
    fn odd_and_tiny_frames() {
        tch::manual_seed(25);
        for (h, w) in [(1, 1), (3, 5), (7, 9), (8, 8), (9, 17), (13, 8)] {
            let x = Tensor::rand([2, 3, h, w], CPU);
            let p = (&x * 0.5 + 0.25).contiguous();
            let out = collab("collab:sigma=20").apply(&x, &p).unwrap();
            assert_eq!(out.size(), [2, 3, h, w]);
            assert!(out.isfinite().all().int64_value(&[]) == 1, "{h}x{w}");
            // Mild gains only where the pilot is flat: the output lies within the input's
            // and the pilot's range, give or take the filter's ringing.
            let (lo, hi) = (out.min().double_value(&[]), out.max().double_value(&[]));
            assert!(lo > -0.5 && hi < 1.5, "{h}x{w}: {lo}..{hi}");
        }
        let e = Collab::default()
            .apply(
                &Tensor::rand([1, 3, 4, 4], CPU),
                &Tensor::rand([1, 3, 4, 5], CPU),
            )
            .unwrap_err();
        assert!(e.to_string().contains("refinement") && !e.to_string().contains('\n'));
    }

    #[test]
    fn adapt_keeps_the_pilot_under_mild_noise() {
        tch::manual_seed(26);
        let clean = crate::lowpass::gaussian_blur(&picture(64, 64), 3.0).unwrap();
        let noisy = &clean + Tensor::randn([1, 3, 64, 64], CPU) * (1.0 / 255.0);
        let pilot = crate::lowpass::gaussian_blur(&noisy, 1.2).unwrap();
        let out = collab("collab:adapt=5:10").apply(&noisy, &pilot).unwrap();
        assert!(out.equal(&pilot));
        let strong = &clean + Tensor::randn([1, 3, 64, 64], CPU) * (30.0 / 255.0);
        let full = collab("collab").apply(&strong, &pilot).unwrap();
        let out = collab("collab:adapt=5:10").apply(&strong, &pilot).unwrap();
        assert!(out.equal(&full) || (&out - &full).abs().max().double_value(&[]) < 1e-6);
    }
}
