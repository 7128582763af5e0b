//! YUV layouts (planar and semi-planar 4:2:0, packed 4:2:2; 8 and 10 bits) to and from the
//! model's RGB tensors. Samples become floats in their own units (0..255 or 0..1023) before any
//! arithmetic, so 10-bit frames keep their depth through the model.

use tch::{Kind, Tensor};

use super::{FrameFormat, PixelFormat};
use crate::error::Result;

/// Where the samples of a YUV format lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrangement {
    /// Y plane, U plane, V plane.
    Planar,
    /// Y plane, then one plane of interleaved U, V.
    SemiPlanar,
    /// One plane of 4-sample macropixels covering 2 pixels: the positions of Y0, Y1, U and V.
    Packed { y: [usize; 2], u: usize, v: usize },
}

/// A YUV format's layout: arrangement, chroma subsampling and sample size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct YuvLayout {
    arrangement: Arrangement,
    /// Horizontal chroma subsampling: 2, or 1 for 4:4:4.
    sub_x: usize,
    /// Vertical chroma subsampling: 2 for 4:2:0, 1 for 4:2:2 and 4:4:4.
    sub_y: usize,
    /// Bytes per sample: 1, or 2 (a little-endian u16).
    bytes: usize,
    /// Bits the value sits above the u16's least significant bit (P010: 6).
    shift: u32,
    /// Bits per sample value.
    depth: u32,
}

impl YuvLayout {
    /// The layout of a YUV format, or None for RGB formats.
    pub(super) fn of(format: PixelFormat) -> Option<Self> {
        use Arrangement::*;
        let eight = |arrangement, sub_x, sub_y| YuvLayout {
            arrangement,
            sub_x,
            sub_y,
            bytes: 1,
            shift: 0,
            depth: 8,
        };
        let ten = |arrangement, shift| YuvLayout {
            arrangement,
            sub_x: 2,
            sub_y: 2,
            bytes: 2,
            shift,
            depth: 10,
        };
        Some(match format {
            PixelFormat::I420 => eight(Planar, 2, 2),
            PixelFormat::Y444 => eight(Planar, 1, 1),
            PixelFormat::Nv12 => eight(SemiPlanar, 2, 2),
            PixelFormat::Yuy2 => eight(
                Packed {
                    y: [0, 2],
                    u: 1,
                    v: 3,
                },
                2,
                1,
            ),
            PixelFormat::Uyvy => eight(
                Packed {
                    y: [1, 3],
                    u: 0,
                    v: 2,
                },
                2,
                1,
            ),
            PixelFormat::I420P10 => ten(Planar, 0),
            PixelFormat::P010 => ten(SemiPlanar, 6),
            _ => return None,
        })
    }

    /// Chroma plane size in samples of one component: `ceil(w/sub_x) x ceil(h/sub_y)`.
    fn chroma(&self, fmt: &FrameFormat) -> (usize, usize) {
        (
            fmt.width.div_ceil(self.sub_x),
            fmt.height.div_ceil(self.sub_y),
        )
    }

    /// The planes as (row bytes, rows).
    pub(super) fn plane_sizes(&self, fmt: &FrameFormat) -> Vec<(usize, usize)> {
        let (w, h) = (fmt.width, fmt.height);
        let (cw, ch) = self.chroma(fmt);
        let samples = match self.arrangement {
            Arrangement::Planar => vec![(w, h), (cw, ch), (cw, ch)],
            Arrangement::SemiPlanar => vec![(w, h), (2 * cw, ch)],
            Arrangement::Packed { .. } => vec![(4 * cw, h)],
        };
        samples
            .into_iter()
            .map(|(s, rows)| (s * self.bytes, rows))
            .collect()
    }

    /// Largest sample value.
    fn max(&self) -> f64 {
        ((1u32 << self.depth) - 1) as f64
    }

    /// (luma offset, luma scale, chroma scale, chroma centre) in sample units: full range
    /// spans every value (0..1023 at 10 bits), limited range 16..235 (luma) and 16..240
    /// (chroma) shifted to the depth, as GStreamer's colour ranges define them.
    fn scales(&self, full_range: bool) -> (f64, f64, f64, f64) {
        let k = (1u32 << (self.depth - 8)) as f64;
        let centre = 128.0 * k;
        if full_range {
            (0.0, self.max(), self.max(), centre)
        } else {
            (16.0 * k, 219.0 * k, 224.0 * k, centre)
        }
    }

    /// Raw bytes `[n * frame_len]` (u8) to sample values `[n, samples]` as floats.
    fn decode(&self, raw: &Tensor, n: i64) -> Result<Tensor> {
        if self.bytes == 1 {
            return Ok(raw.f_view([n, -1])?.f_to_kind(Kind::Float)?);
        }
        let pairs = raw.f_view([n, -1, 2])?.f_to_kind(Kind::Float)?;
        let v = pairs.f_select(2, 0)? + pairs.f_select(2, 1)? * 256.0;
        Ok(v.f_div_scalar((1u32 << self.shift) as f64)?)
    }

    /// Rounded sample values `[n, samples]` (floats) to the frames' bytes `[n, frame_len]` (u8).
    fn encode(&self, samples: Tensor) -> Result<Tensor> {
        let n = samples.size()[0];
        let v = samples.f_round()?.f_clamp(0.0, self.max())?;
        if self.bytes == 1 {
            return Ok(v.f_to_kind(Kind::Uint8)?);
        }
        let v = v.f_mul_scalar((1u32 << self.shift) as f64)?;
        let hi = v.f_div_scalar(256.0)?.f_floor()?;
        let lo = &v - &hi * 256.0;
        Ok(Tensor::f_stack(&[lo, hi], 2)?
            .f_to_kind(Kind::Uint8)?
            .f_reshape([n, -1])?)
    }
}

/// Y `[n, 1, h, w]` and U, V `[n, 1, ch, cw]` (sample units) of frames' samples `[n, samples]`.
fn split(s: &Tensor, fmt: &FrameFormat, l: &YuvLayout) -> Result<(Tensor, Tensor, Tensor)> {
    let n = s.size()[0];
    let (w, h) = (fmt.width as i64, fmt.height as i64);
    let (cw, ch) = l.chroma(fmt);
    let (cw, ch) = (cw as i64, ch as i64);
    Ok(match l.arrangement {
        Arrangement::Planar => (
            s.f_narrow(1, 0, w * h)?.f_view([n, 1, h, w])?,
            s.f_narrow(1, w * h, cw * ch)?.f_view([n, 1, ch, cw])?,
            s.f_narrow(1, w * h + cw * ch, cw * ch)?
                .f_view([n, 1, ch, cw])?,
        ),
        Arrangement::SemiPlanar => {
            let uv = s.f_narrow(1, w * h, 2 * cw * ch)?.f_view([n, ch, cw, 2])?;
            (
                s.f_narrow(1, 0, w * h)?.f_view([n, 1, h, w])?,
                uv.f_select(3, 0)?.f_unsqueeze(1)?,
                uv.f_select(3, 1)?.f_unsqueeze(1)?,
            )
        }
        Arrangement::Packed { y, u, v } => {
            let px = s.f_view([n, h, cw, 4])?;
            let y = Tensor::f_stack(
                &[px.f_select(3, y[0] as i64)?, px.f_select(3, y[1] as i64)?],
                3,
            )?
            .f_reshape([n, 1, h, 2 * cw])?
            .f_narrow(3, 0, w)?;
            (
                y,
                px.f_select(3, u as i64)?.f_unsqueeze(1)?,
                px.f_select(3, v as i64)?.f_unsqueeze(1)?,
            )
        }
    })
}

/// Raw YUV frames (u8 `[n * frame_len]` on the model's device) to RGB `[n, 3, h, w]` in [0, 1].
pub(super) fn to_rgb(raw: &Tensor, fmt: &FrameFormat, l: &YuvLayout, n: i64) -> Result<Tensor> {
    let (w, h) = (fmt.width as i64, fmt.height as i64);
    let (y, u, v) = split(&l.decode(raw, n)?, fmt, l)?;
    // Chroma to luma resolution (nearest, as videoconvert's default does), crop odd sizes.
    let up = |c: Tensor| -> Result<Tensor> {
        let c = if l.sub_y == 2 {
            c.f_repeat_interleave_self_int(2, 2, None)?
        } else {
            c
        };
        let c = if l.sub_x == 2 {
            c.f_repeat_interleave_self_int(2, 3, None)?
        } else {
            c
        };
        Ok(c.f_narrow(2, 0, h)?.f_narrow(3, 0, w)?)
    };
    let (u, v) = (up(u)?, up(v)?);
    let (y_off, y_scale, c_scale, centre) = l.scales(fmt.full_range);
    let yn = (y - y_off) / y_scale;
    let cn = (u - centre) / c_scale;
    let vn = (v - centre) / c_scale;
    let (kr, kb) = fmt.matrix.kr_kb();
    let kg = 1.0 - kr - kb;
    let r = &yn + &vn * (2.0 * (1.0 - kr));
    let b = &yn + &cn * (2.0 * (1.0 - kb));
    let g = (&yn - &r * kr - &b * kb) / kg;
    Ok(Tensor::f_cat(&[r, g, b], 1)?)
}

/// Y, U, V (sample units, U and V subsampled) in the frames' order: `[n, samples]`.
fn join(y: Tensor, u: Tensor, v: Tensor, l: &YuvLayout) -> Result<Tensor> {
    let n = y.size()[0];
    let flat = |t: &Tensor| t.f_reshape([n, -1]);
    Ok(match l.arrangement {
        Arrangement::Planar => Tensor::f_cat(&[flat(&y)?, flat(&u)?, flat(&v)?], 1)?,
        Arrangement::SemiPlanar => {
            let uv = Tensor::f_stack(&[flat(&u)?, flat(&v)?], 2)?.f_reshape([n, -1])?;
            Tensor::f_cat(&[flat(&y)?, uv], 1)?
        }
        Arrangement::Packed {
            y: yi,
            u: ui,
            v: vi,
        } => {
            let (h, w) = (y.size()[2], y.size()[3]);
            // An odd width's last macropixel repeats the last luma sample.
            let y = y.f_pad([0, w % 2, 0, 0], "replicate", None)?;
            let cw = (w + 1) / 2;
            let y = y.f_view([n, h, cw, 2])?;
            let mut slots: [Option<Tensor>; 4] = Default::default();
            slots[yi[0]] = Some(y.f_select(3, 0)?);
            slots[yi[1]] = Some(y.f_select(3, 1)?);
            slots[ui] = Some(u.f_view([n, h, cw])?);
            slots[vi] = Some(v.f_view([n, h, cw])?);
            let placed: Vec<Tensor> = slots.into_iter().flatten().collect();
            Tensor::f_stack(&placed, 3)?.f_reshape([n, -1])?
        }
    })
}

/// RGB `[n, 3, h, w]` in [0, 1] to the frames' bytes `[n, frame_len]` (u8, on its device).
pub(super) fn from_rgb(rgb: &Tensor, fmt: &FrameFormat, l: &YuvLayout) -> Result<Tensor> {
    let (kr, kb) = fmt.matrix.kr_kb();
    let kg = 1.0 - kr - kb;
    let r = rgb.f_narrow(1, 0, 1)?;
    let g = rgb.f_narrow(1, 1, 1)?;
    let b = rgb.f_narrow(1, 2, 1)?;
    let y = &r * kr + &g * kg + &b * kb;
    let u = (&b - &y) / (2.0 * (1.0 - kb));
    let v = (&r - &y) / (2.0 * (1.0 - kr));
    // Average over each chroma sample's pixels (odd sizes: replicate the last row/column).
    let (h, w) = (rgb.size()[2], rgb.size()[3]);
    let (sx, sy) = (l.sub_x as i64, l.sub_y as i64);
    let pool = |c: Tensor| -> Result<Tensor> {
        if (sx, sy) == (1, 1) {
            return Ok(c);
        }
        Ok(c.f_pad([0, w % sx, 0, h % sy], "replicate", None)?
            .f_avg_pool2d([sy, sx], [sy, sx], [0, 0], false, true, None::<i64>)?)
    };
    let (u, v) = (pool(u)?, pool(v)?);
    let (y_off, y_scale, c_scale, centre) = l.scales(fmt.full_range);
    let (y, u, v) = (
        y * y_scale + y_off,
        u * c_scale + centre,
        v * c_scale + centre,
    );
    l.encode(join(y, u, v, l)?)
}

#[cfg(test)]
mod tests;
