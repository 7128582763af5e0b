//! The image operations of the camera-and-codec noise ([`super::isp_noise`]): colour
//! matrices, Bayer mosaic and bilinear demosaic, full-range BT.601 YCbCr, Gaussian blur,
//! antialiased resizing, 4:2:0 chroma, and normal samples from a caller's generator. Images are
//! (1, 3, H, W) f32 tensors on the CPU.

use rand::rngs::StdRng;
use rand::RngExt;
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::frame::ColorMatrix;
pub use crate::lowpass::gaussian_blur;

/// Rec. 601 luma weights (full-range YCbCr).
const KR: f64 = ColorMatrix::Bt601.kr_kb().0;
const KB: f64 = ColorMatrix::Bt601.kr_kb().1;

/// The nearest even whole number (>= 2).
pub(crate) fn even(v: f64) -> i64 {
    ((v / 2.0).round() as i64 * 2).max(2)
}

/// Normal samples of `shape` drawn from `rng` (Box-Muller), as an f32 CPU tensor.
pub fn randn(rng: &mut StdRng, shape: &[i64]) -> Tensor {
    let n: i64 = shape.iter().product();
    let mut v = Vec::with_capacity(n as usize);
    while (v.len() as i64) < n {
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        v.push((r * t.cos()) as f32);
        v.push((r * t.sin()) as f32);
    }
    v.truncate(n as usize);
    Tensor::from_slice(&v).view(shape)
}

pub(crate) fn gains_tensor(g: &[f64; 3]) -> Tensor {
    Tensor::from_slice(&[g[0] as f32, g[1] as f32, g[2] as f32]).view([1, 3, 1, 1])
}

/// out_c = sum_k m[c][k] x_k for a (1, 3, H, W) image.
pub(crate) fn mix(x: &Tensor, m: &[[f64; 3]; 3]) -> Result<Tensor> {
    let flat: Vec<f32> = m.iter().flatten().map(|v| *v as f32).collect();
    let k = Tensor::from_slice(&flat).view([3, 3, 1, 1]);
    Ok(x.f_conv2d(&k, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)?)
}

pub(crate) fn invert3(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let mut inv = [[0.0; 3]; 3];
    for (i, row) in inv.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            // Cofactor of m[j][i].
            let (r0, r1) = ((j + 1) % 3, (j + 2) % 3);
            let (c0, c1) = ((i + 1) % 3, (i + 2) % 3);
            *v = (m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]) / det;
        }
    }
    inv
}

/// (1, 3, H, W) mask of an RGGB Bayer pattern shifted by `phase` (rows, columns).
pub(crate) fn bayer_mask(h: i64, w: i64, phase: (i64, i64)) -> Tensor {
    let mut m = vec![0f32; (3 * h * w) as usize];
    for y in 0..h {
        for x in 0..w {
            let (py, px) = ((y + phase.0) % 2, (x + phase.1) % 2);
            let c = match (py, px) {
                (0, 0) => 0,
                (1, 1) => 2,
                _ => 1,
            };
            m[(c * h * w + y * w + x) as usize] = 1.0;
        }
    }
    Tensor::from_slice(&m).view([1, 3, h, w])
}

/// Bilinear demosaic of a masked (1, 3, H, W) Bayer image (zeros where a colour is not
/// sampled); reflect borders keep the pattern's parity.
pub(crate) fn demosaic(masked: &Tensor) -> Result<Tensor> {
    let g = [0.0, 0.25, 0.0, 0.25, 1.0, 0.25, 0.0, 0.25, 0.0f32];
    let rb = [0.25, 0.5, 0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 0.25f32];
    let k: Vec<f32> = rb.iter().chain(&g).chain(&rb).copied().collect();
    let k = Tensor::from_slice(&k).view([3, 1, 3, 3]);
    Ok(masked.f_pad([1, 1, 1, 1], "reflect", None)?.f_conv2d(
        &k,
        None::<Tensor>,
        [1, 1],
        [0, 0],
        [1, 1],
        3,
    )?)
}

/// Full-range BT.601 YCbCr of an RGB (1, 3, H, W) image (chroma centred on 0).
pub(crate) fn to_ycbcr(x: &Tensor) -> Result<Tensor> {
    let kg = 1.0 - KR - KB;
    mix(
        x,
        &[
            [KR, kg, KB],
            [-0.5 * KR / (1.0 - KB), -0.5 * kg / (1.0 - KB), 0.5],
            [0.5, -0.5 * kg / (1.0 - KR), -0.5 * KB / (1.0 - KR)],
        ],
    )
}

pub(crate) fn from_ycbcr(x: &Tensor) -> Result<Tensor> {
    let kg = 1.0 - KR - KB;
    mix(
        x,
        &[
            [1.0, 0.0, 2.0 - 2.0 * KR],
            [
                1.0,
                -(2.0 - 2.0 * KB) * KB / kg,
                -(2.0 - 2.0 * KR) * KR / kg,
            ],
            [1.0, 2.0 - 2.0 * KB, 0.0],
        ],
    )
}

/// Antialiased bilinear resize to (h, w).
pub(crate) fn area_resize(x: &Tensor, h: i64, w: i64) -> Result<Tensor> {
    Ok(x.f_internal_upsample_bilinear2d_aa([h, w], false, None, None)?)
}

/// 4:2:0 chroma: Cb and Cr averaged over 2x2 blocks and scaled back up bilinearly (what a
/// decoder shows of an I420 frame). H and W even.
pub fn subsample_420(x: &Tensor) -> Result<Tensor> {
    let (h, w) = (x.size()[2], x.size()[3]);
    let ycc = to_ycbcr(x)?;
    let c = ycc
        .narrow(1, 1, 2)
        .f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)?
        .f_upsample_bilinear2d([h, w], false, None, None)?;
    from_ycbcr(&Tensor::f_cat(&[ycc.narrow(1, 0, 1), c], 1)?)
}

/// Whether `r` is a usable config range: finite, 0 <= lo <= hi.
pub(crate) fn is_range(r: [f64; 2]) -> bool {
    r[0] >= 0.0 && r[1] >= r[0] && r[1].is_finite()
}

/// The point `t` in [0, 1] of the way through range `r`.
pub(crate) fn lerp(r: [f64; 2], t: f64) -> f64 {
    r[0] + (r[1] - r[0]) * t
}

/// JPEG re-compression of a (1, 3, H, W) image (values clipped to [0, 1], 8-bit), on the CPU.
pub fn jpeg(x: &Tensor, quality: u8) -> Result<Tensor> {
    let (h, w) = (x.size()[2] as u32, x.size()[3] as u32);
    let dev = x.device();
    let q = (x.clamp(0.0, 1.0) * 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .squeeze_dim(0)
        .permute([1, 2, 0])
        .contiguous()
        .to_device(tch::Device::Cpu);
    let mut px = vec![0u8; (h * w * 3) as usize];
    let len = px.len();
    q.f_copy_data_u8(&mut px, len)?;
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality.clamp(1, 100))
        .encode(&px, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::Input(format!("jpeg encode: {e}")))?;
    let img = image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg)
        .map_err(|e| Error::Input(format!("jpeg decode: {e}")))?
        .to_rgb8();
    let t = Tensor::f_from_slice(img.as_raw())?
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .unsqueeze(0)
        .to_kind(Kind::Float)
        / 255.0;
    Ok(t.to_device(dev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tch::Kind;

    #[test]
    fn the_inverse_colour_matrix_inverts() {
        let m = [[0.8, 0.3, -0.1], [0.05, 1.1, -0.15], [-0.2, 0.1, 1.1]];
        let inv = invert3(&m);
        for (i, row) in m.iter().enumerate() {
            for j in 0..3 {
                let v: f64 = row.iter().zip(&inv).map(|(a, r)| a * r[j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn demosaic_reproduces_flat_colours_and_the_mosaic_samples() {
        let x = Tensor::from_slice(&[0.2f32, 0.5, 0.7])
            .view([1, 3, 1, 1])
            .repeat([1, 1, 8, 8]);
        for phase in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let m = bayer_mask(8, 8, phase);
            assert!(m.sum(Kind::Float).double_value(&[]) == 64.0);
            let d = demosaic(&(&x * &m)).unwrap();
            let err = (d - &x).abs().max().double_value(&[]);
            assert!(err < 1e-6, "phase {phase:?}: {err}");
        }
    }

    #[test]
    fn ycbcr_round_trips_and_420_keeps_luma() {
        let mut rng = StdRng::seed_from_u64(4);
        let x = randn(&mut rng, &[1, 3, 16, 16]).sigmoid();
        let back = from_ycbcr(&to_ycbcr(&x).unwrap()).unwrap();
        assert!((back - &x).abs().max().double_value(&[]) < 1e-5);
        let s = subsample_420(&x).unwrap();
        let dy = (to_ycbcr(&s).unwrap() - to_ycbcr(&x).unwrap()).narrow(1, 0, 1);
        assert!(dy.abs().max().double_value(&[]) < 1e-5);
        assert!((s - &x).abs().mean(Kind::Float).double_value(&[]) > 1e-3);
    }
}
