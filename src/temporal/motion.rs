//! Block motion between two frames, coarse to fine on luma: in tch ops where the frames are
//! not on the CPU (CUDA), in plain Rust on CPU tensors ([`super::cpu`], the same numbers).
//!
//! The frame is cut into [`BLOCK`]x[`BLOCK`] blocks. On a pyramid of [`LEVELS`] levels (full,
//! 1/2, 1/4 size, each a 2x2 average), the coarsest level searches every integer shift within
//! [`SEARCH`] pixels (so +-16 pixels of full-size motion), each finer level doubles the vectors
//! and tries the 3x3 shifts around them. A block's cost is its mean absolute luma difference,
//! plus [`SHIFT_PENALTY`] per pixel of shift so flat areas keep the zero vector. Last, each
//! [`FINE`]x[`FINE`] quarter of a block takes the best of its block's vector and its four
//! neighbours' (an object's edge inside a block follows the object). Vectors are
//! integers at full size: warping copies pixels (no interpolation), so a recursive filter can
//! warp its state frame after frame without blurring it.

use tch::{Kind, Tensor};

use super::cpu::{
    self,
    tensors::{floats, from_vectors, on_cpu, slice, tensor, to_vectors},
};
use crate::error::Result;

/// Block side at full size, in pixels.
pub const BLOCK: i64 = 16;
/// The side of the blocks [`estimate`]'s vectors are for (a quarter of a [`BLOCK`]).
pub const FINE: i64 = BLOCK / 2;
/// Pyramid levels (full size and this many halvings, minus one).
pub const LEVELS: u32 = 3;
/// Search radius at the coarsest level, in its pixels.
pub const SEARCH: i64 = 4;
/// Added to a block's mean absolute difference (0..1 luma) per pixel of shift, at each level.
pub const SHIFT_PENALTY: f64 = 0.5 / 255.0;

/// The largest motion found, in full-size pixels per axis.
pub const fn max_motion() -> i64 {
    let mut r = SEARCH;
    let mut l = 1;
    while l < LEVELS {
        r = 2 * r + 1;
        l += 1;
    }
    r
}

/// BT.601 luma of `[1, 3, H, W]` as `[1, 1, H, W]` float.
pub fn luma(x: &Tensor) -> Result<Tensor> {
    if on_cpu(&[x]) && x.dim() == 4 && x.size()[..2] == [1, 3] {
        let (h, w) = (x.size()[2], x.size()[3]);
        let l = cpu::luma(slice(&floats(x)?), (h * w) as usize);
        return tensor(&l, &[1, 1, h, w]);
    }
    luma_ops(x)
}

/// [`luma`] in tch ops (the path for CUDA tensors, and the reference of the CPU path).
pub fn luma_ops(x: &Tensor) -> Result<Tensor> {
    let x = x.f_to_kind(Kind::Float)?;
    let w = Tensor::f_from_slice(&[0.299f32, 0.587, 0.114])?
        .f_to_device(x.device())?
        .f_view([1, 3, 1, 1])?;
    Ok(x.f_mul(&w)?.f_sum_dim_intlist(1, true, Kind::Float)?)
}

/// Per-block motion of `cur` against `prev` (both `[1, 1, H, W]` luma): `[2, hb, wb]` int64
/// (dy, dx) in full-size pixels for blocks of [`FINE`] pixels, such that `cur[y, x]` matches
/// `prev[y + dy, x + dx]`.
pub fn estimate(cur: &Tensor, prev: &Tensor) -> Result<Tensor> {
    if on_cpu(&[cur, prev]) {
        let (h, w) = (cur.size()[2] as usize, cur.size()[3] as usize);
        let (c, p) = (floats(cur)?, floats(prev)?);
        return from_vectors(&cpu::estimate(slice(&c), slice(&p), h, w));
    }
    estimate_ops(cur, prev)
}

/// [`estimate`] in tch ops (the path for CUDA tensors, and the reference of the CPU path).
pub fn estimate_ops(cur: &Tensor, prev: &Tensor) -> Result<Tensor> {
    let (h, w) = (cur.size()[2], cur.size()[3]);
    let (hb, wb) = (ceil_div(h, BLOCK), ceil_div(w, BLOCK));
    let mut curs = vec![cur.shallow_clone()];
    let mut prevs = vec![prev.shallow_clone()];
    for l in 1..LEVELS as usize {
        curs.push(half(&curs[l - 1])?);
        prevs.push(half(&prevs[l - 1])?);
    }
    let mut v = Tensor::f_zeros([2, hb, wb], (Kind::Int64, cur.device()))?;
    for l in (0..LEVELS as usize).rev() {
        let coarsest = l + 1 == LEVELS as usize;
        if !coarsest {
            v = v.f_mul_scalar(2)?;
        }
        let bs = BLOCK >> l;
        let radius = if coarsest { SEARCH } else { 1 };
        let warped = warp_ops(&prevs[l], &v, bs)?;
        v = v.f_add(&best_shift(&curs[l], &warped, radius, bs)?)?;
    }
    best_neighbour(cur, prev, &v)
}

/// Each [`FINE`] block's best vector among its [`BLOCK`]'s and the four neighbours' `v`.
fn best_neighbour(cur: &Tensor, prev: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (h, w) = (cur.size()[2], cur.size()[3]);
    let (hf, wf) = (ceil_div(h, FINE), ceil_div(w, FINE));
    let (hb, wb) = (v.size()[1], v.size()[2]);
    let padded = v
        .f_unsqueeze(0)?
        .f_to_kind(Kind::Float)?
        .f_replication_pad2d([1, 1, 1, 1])?;
    let shifted = |dy: i64, dx: i64| -> Result<Tensor> {
        let n = padded
            .f_narrow(2, 1 + dy, hb)?
            .f_narrow(3, 1 + dx, wb)?
            .f_to_kind(Kind::Int64)?
            .f_squeeze_dim(0)?;
        // Each block's vector for its 2x2 fine blocks, cropped to the fine grid.
        Ok(n.f_repeat_interleave_self_int(2, Some(1), None::<i64>)?
            .f_repeat_interleave_self_int(2, Some(2), None::<i64>)?
            .f_narrow(1, 0, hf)?
            .f_narrow(2, 0, wf)?)
    };
    let candidates = [
        shifted(0, 0)?,
        shifted(-1, 0)?,
        shifted(1, 0)?,
        shifted(0, -1)?,
        shifted(0, 1)?,
    ];
    let mut costs = Vec::with_capacity(candidates.len());
    for c in &candidates {
        let diff = warp_ops(prev, c, FINE)?.f_sub(cur)?.f_abs()?;
        costs.push(diff.f_avg_pool2d(
            [FINE, FINE],
            [FINE, FINE],
            [0, 0],
            true,
            false,
            None::<i64>,
        )?);
    }
    let best = Tensor::f_cat(&costs, 1)?.f_argmin(1, true)?; // [1, 1, hf, wf]
    let all = Tensor::f_stack(&candidates, 0)?; // [5, 2, hf, wf]
    let index = best.f_expand([1, 2, hf, wf], false)?;
    Ok(all.f_gather(0, &index, false)?.f_squeeze_dim(0)?)
}

/// `x` (`[1, C, h, w]`) moved by the block vectors `v` (`[2, hb, wb]`, in pixels of `x`,
/// blocks of `bs` pixels): `out[y, x] = x[clamp(y + dy), clamp(x + dx)]`.
pub fn warp(x: &Tensor, v: &Tensor, bs: i64) -> Result<Tensor> {
    if on_cpu(&[x, v]) {
        let (c, h, w) = (x.size()[1], x.size()[2], x.size()[3]);
        let out = cpu::warp(
            slice(&floats(x)?),
            c as usize,
            h as usize,
            w as usize,
            &to_vectors(v)?,
            bs as usize,
        );
        return Ok(tensor(&out, &[1, c, h, w])?.f_to_kind(x.kind())?);
    }
    warp_ops(x, v, bs)
}

/// [`warp`] in tch ops (the path for CUDA tensors, and the reference of the CPU path).
pub fn warp_ops(x: &Tensor, v: &Tensor, bs: i64) -> Result<Tensor> {
    let (c, h, w) = (x.size()[1], x.size()[2], x.size()[3]);
    let dev = x.device();
    let ys = Tensor::f_arange(h, (Kind::Int64, dev))?;
    let xs = Tensor::f_arange(w, (Kind::Int64, dev))?;
    let by = ys.f_floor_divide_scalar(bs)?;
    let bx = xs.f_floor_divide_scalar(bs)?;
    let per_pixel = v.f_index_select(1, &by)?.f_index_select(2, &bx)?; // [2, h, w]
    let sy = per_pixel
        .f_get(0)?
        .f_add(&ys.f_view([h, 1])?)?
        .f_clamp(0, h - 1)?;
    let sx = per_pixel
        .f_get(1)?
        .f_add(&xs.f_view([1, w])?)?
        .f_clamp(0, w - 1)?;
    let flat = sy.f_mul_scalar(w)?.f_add(&sx)?.f_view([-1])?;
    Ok(x.f_reshape([c, h * w])?
        .f_index_select(1, &flat)?
        .f_view([1, c, h, w])?)
}

/// The shift within `radius` (per axis) that best matches each block of `cur` with the
/// already warped `warped`, as `[2, hb, wb]` int64.
fn best_shift(cur: &Tensor, warped: &Tensor, radius: i64, bs: i64) -> Result<Tensor> {
    let (h, w) = (cur.size()[2], cur.size()[3]);
    let k = 2 * radius + 1;
    let dev = cur.device();
    let padded = warped.f_replication_pad2d([radius, radius, radius, radius])?;
    // [1, k*k, h*w]: row ky*k + kx holds warped[y + ky - radius, x + kx - radius].
    let cols = padded.f_im2col([k, k], [1, 1], [0, 0], [1, 1])?;
    let diff = cols.f_view([k * k, 1, h, w])?.f_sub(cur)?.f_abs()?;
    let sad = diff.f_avg_pool2d([bs, bs], [bs, bs], [0, 0], true, false, None::<i64>)?;
    let offsets = Tensor::f_arange(k * k, (Kind::Int64, dev))?;
    let dy = offsets.f_floor_divide_scalar(k)?.f_sub_scalar(radius)?;
    let dx = offsets.f_remainder(k)?.f_sub_scalar(radius)?;
    let penalty = dy
        .f_abs()?
        .f_add(&dx.f_abs()?)?
        .f_to_kind(Kind::Float)?
        .f_mul_scalar(SHIFT_PENALTY)?
        .f_view([k * k, 1, 1, 1])?;
    let best = sad.f_add(&penalty)?.f_argmin(0, false)?.f_squeeze_dim(0)?; // [hb, wb]
    let by = dy.f_index_select(0, &best.f_view([-1])?)?;
    let bx = dx.f_index_select(0, &best.f_view([-1])?)?;
    let size = best.size();
    Ok(Tensor::f_stack(
        &[
            by.f_view([size[0], size[1]])?,
            bx.f_view([size[0], size[1]])?,
        ],
        0,
    )?)
}

/// A 2x2 average (the last odd row or column averaged alone).
fn half(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_avg_pool2d([2, 2], [2, 2], [0, 0], true, false, None::<i64>)?)
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}
