//! What the refinements share: the opponent colour transform and the orthonormal DCT (as
//! tch convolutions, and its 1-D basis for plain Rust).

use tch::Tensor;

use super::Colour;
use crate::error::Result;

/// The orthonormal opponent transform's rows (Y, R−B, R−2G+B).
pub(super) const OPPONENT: [[f64; 3]; 3] = [
    [
        0.577_350_269_189_625_8,
        0.577_350_269_189_625_8,
        0.577_350_269_189_625_8,
    ],
    [0.707_106_781_186_547_5, 0.0, -0.707_106_781_186_547_5],
    [
        0.408_248_290_463_863,
        -0.816_496_580_927_726,
        0.408_248_290_463_863,
    ],
];

pub(super) fn transpose3(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut t = [[0.0; 3]; 3];
    for (i, row) in m.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            t[j][i] = *v;
        }
    }
    t
}

/// `m` applied to the channels of (N, 3, H, W).
pub(super) fn mix(x: &Tensor, m: &[[f64; 3]; 3]) -> Result<Tensor> {
    let flat: Vec<f32> = m.iter().flatten().map(|v| *v as f32).collect();
    let k = Tensor::f_from_slice(&flat)?
        .f_view([3, 3, 1, 1])?
        .f_to_device(x.device())?;
    Ok(x.f_conv2d(&k, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)?)
}

/// The orthonormal 2-D DCT-II of `b` x `b` windows, separably: a conv of the 1-D basis along
/// the rows, then along the columns (b³/s² + b²/s multiply-adds a pixel at stride s, against
/// b⁴/s² for the 2-D basis as filters).
pub(super) struct Dct {
    /// The 1-D basis as (b, 1, b, 1) and (b, 1, 1, b) filters.
    vertical: Tensor,
    horizontal: Tensor,
    pub(super) b: i64,
}

impl Dct {
    pub(super) fn new(b: i64, dev: tch::Device) -> Result<Dct> {
        let v = dct_1d(b);
        let t = Tensor::f_from_slice(&v)?.f_to_device(dev)?;
        Ok(Dct {
            vertical: t.f_view([b, 1, b, 1])?,
            horizontal: t.f_view([b, 1, 1, b])?,
            b,
        })
    }

    /// (C, 1, H, W) to the coefficients of the windows every `s` pixels: (C, b², rows, cols),
    /// channel `u * b + v` for vertical frequency u and horizontal v ([`dct_basis`]'s order).
    pub(super) fn forward(&self, t: &Tensor, s: i64) -> Result<Tensor> {
        let (c, b) = (t.size()[0], self.b);
        let v = t.f_conv2d(&self.vertical, None::<Tensor>, [s, 1], [0, 0], [1, 1], 1)?;
        let (rows, w) = (v.size()[2], v.size()[3]);
        let h = v.f_reshape([c * b, 1, rows, w])?.f_conv2d(
            &self.horizontal,
            None::<Tensor>,
            [1, s],
            [0, 0],
            [1, 1],
            1,
        )?;
        let cols = h.size()[3];
        Ok(h.f_reshape([c, b * b, rows, cols])?)
    }

    /// The sum of the windows rebuilt from `coeffs` (C, b², rows, cols) at stride `s`:
    /// (C, 1, (rows-1)s+b, (cols-1)s+b).
    pub(super) fn inverse(&self, coeffs: &Tensor, s: i64) -> Result<Tensor> {
        let (c, b) = (coeffs.size()[0], self.b);
        let (rows, cols) = (coeffs.size()[2], coeffs.size()[3]);
        let h = coeffs
            .f_reshape([c * b, b, rows, cols])?
            .f_conv_transpose2d(
                &self.horizontal,
                None::<Tensor>,
                [1, s],
                [0, 0],
                [0, 0],
                1,
                [1, 1],
            )?;
        let w = h.size()[3];
        Ok(h.f_reshape([c, b, rows, w])?.f_conv_transpose2d(
            &self.vertical,
            None::<Tensor>,
            [s, 1],
            [0, 0],
            [0, 0],
            1,
            [1, 1],
        )?)
    }
}

/// The orthonormal 1-D DCT-II basis of length `b`, frequency-major (b x b).
pub(super) fn dct_1d(b: i64) -> Vec<f32> {
    let n = b as usize;
    let mut v = Vec::with_capacity(n * n);
    for u in 0..n {
        let a = if u == 0 {
            1.0 / n as f64
        } else {
            2.0 / n as f64
        };
        for i in 0..n {
            let arg = std::f64::consts::PI * (2 * i + 1) as f64 * u as f64 / (2 * n) as f64;
            v.push((a.sqrt() * arg.cos()) as f32);
        }
    }
    v
}

/// The orthonormal 2-D DCT-II basis of `b` x `b` windows as conv filters (b², 1, b, b), in
/// order of rows then columns of frequencies: filter 0 is the DC (every tap 1/b).
pub fn dct_basis(b: i64) -> Result<Tensor> {
    let one = Tensor::f_from_slice(&dct_1d(b))?.f_view([b, b])?;
    // Filter (u, v) at tap (i, j): c_u(i) c_v(j).
    Ok(one
        .f_view([b, 1, b, 1])?
        .f_mul(&one.f_view([1, b, 1, b])?)?
        .f_reshape([b * b, 1, b, b])?)
}

/// `rgb` (N, 3, H, W) in `colour`'s space.
pub(super) fn into_space(colour: Colour, rgb: &Tensor) -> Result<Tensor> {
    match colour {
        Colour::Rgb => Ok(rgb.shallow_clone()),
        Colour::Opponent => mix(rgb, &OPPONENT),
    }
}

/// [`into_space`]'s inverse.
pub(super) fn out_of_space(colour: Colour, t: &Tensor) -> Result<Tensor> {
    match colour {
        Colour::Rgb => Ok(t.shallow_clone()),
        Colour::Opponent => mix(t, &transpose3(&OPPONENT)),
    }
}
