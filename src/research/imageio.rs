//! Image files <-> tensors, keeping the bit depth.
//!
//! Reading: PNG (8/16-bit), JPEG (8-bit), TIFF (8/16-bit integer, 32-bit float, the latter
//! also grayscale). Grey images are replicated to RGB; alpha channels are dropped. [`read`]
//! keeps the exact samples ([`RgbImage`]); [`load`] gives the usual model input, a (1, 3, H, W) f32 tensor of
//! `sample / max` (max = 255 or 65535; float TIFF samples as stored) and the file's depth.
//!
//! Writing ([`save`]): the format follows the extension (`png`, `jpg`/`jpeg`, `tif`/`tiff`);
//! values are clamped to [0, 1] and rounded to the nearest level of the requested depth, which is
//! lowered to the deepest one the format supports (JPEG: 8-bit; PNG: 16-bit for float).
//!
//! Also [`write_npy`]: an exact float32 dump (NumPy `.npy`, HWC) of a tensor image, for tools
//! that must see the very values the model saw.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Sample type of an image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BitDepth {
    U8,
    U16,
    F32,
}

impl BitDepth {
    /// Bits per sample.
    pub fn bits(self) -> u8 {
        match self {
            BitDepth::U8 => 8,
            BitDepth::U16 => 16,
            BitDepth::F32 => 32,
        }
    }
    /// The sample value that stands for 1.0 (255, 65535; 1 for float samples).
    pub fn max_value(self) -> f64 {
        match self {
            BitDepth::U8 => 255.0,
            BitDepth::U16 => 65535.0,
            BitDepth::F32 => 1.0,
        }
    }
}

impl std::fmt::Display for BitDepth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BitDepth::F32 => f.write_str("32-bit float"),
            d => write!(f, "{}-bit", d.bits()),
        }
    }
}

/// Interleaved RGB samples (row-major, HWC).
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    U8(Vec<u8>),
    U16(Vec<u16>),
    F32(Vec<f32>),
}

/// An RGB image as its exact samples.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub samples: Samples,
}

/// File formats by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Tiff,
}

impl Format {
    /// The format named by a path's extension (case-insensitive).
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(Format::Png),
            "jpg" | "jpeg" => Some(Format::Jpeg),
            "tif" | "tiff" => Some(Format::Tiff),
            _ => None,
        }
    }
    /// The deepest sample type this format can store that does not exceed `depth`.
    pub fn fit_depth(self, depth: BitDepth) -> BitDepth {
        match (self, depth) {
            (Format::Jpeg, _) => BitDepth::U8,
            (Format::Png, BitDepth::F32) => BitDepth::U16,
            (_, d) => d,
        }
    }
    fn image_format(self) -> image::ImageFormat {
        match self {
            Format::Png => image::ImageFormat::Png,
            Format::Jpeg => image::ImageFormat::Jpeg,
            Format::Tiff => image::ImageFormat::Tiff,
        }
    }
}

/// Whether the path has an image extension this module reads.
pub fn is_image_path(path: &Path) -> bool {
    Format::from_path(path).is_some()
}

/// The image files (PNG, JPEG, TIFF by extension) directly inside `dir`, sorted by file name
/// (byte order of the names: `10.png` sorts before `2.png`).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v = Vec::new();
    for entry in rd {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if p.is_file() && is_image_path(&p) {
            v.push(p);
        }
    }
    v.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(v)
}

impl RgbImage {
    pub fn depth(&self) -> BitDepth {
        match self.samples {
            Samples::U8(_) => BitDepth::U8,
            Samples::U16(_) => BitDepth::U16,
            Samples::F32(_) => BitDepth::F32,
        }
    }

    /// (1, 3, H, W) tensor of `sample / max` in `kind` (f32 or f64) on the CPU. The division is
    /// done in `kind`, so an 8-bit image in f32 is exactly NumPy's `float32(img) / 255`.
    pub fn to_tensor(&self, kind: Kind) -> Result<Tensor> {
        let (h, w) = (self.height as i64, self.width as i64);
        let t = match &self.samples {
            Samples::U8(v) => Tensor::f_from_slice(v)?,
            // libtorch has no u16 arithmetic: widen to i32 (exact).
            Samples::U16(v) => {
                Tensor::f_from_slice(&v.iter().map(|&s| s as i32).collect::<Vec<_>>())?
            }
            Samples::F32(v) => Tensor::f_from_slice(v)?,
        };
        let mut t = t
            .f_view([h, w, 3])?
            .f_permute([2, 0, 1])?
            .f_unsqueeze(0)?
            .f_to_kind(kind)?;
        let max = self.depth().max_value();
        Ok(if max == 1.0 {
            t.contiguous()
        } else {
            // In place: `t` is a fresh copy (the kind conversion), no second full-size one.
            t.f_div_scalar_(max)?
        })
    }

    /// Samples converted at a time by [`RgbImage::from_tensor`] (8 MB of f64).
    const BAND_SAMPLES: i64 = 1 << 20;

    /// Quantise a (1, 3, H, W) or (3, H, W) image in [0, 1] (any float kind, any device) to
    /// `depth`: clamp to [0, 1], scale by the depth's max, round half away from zero (f64).
    pub fn from_tensor(x: &Tensor, depth: BitDepth) -> Result<RgbImage> {
        let size = x.size();
        let chw = match size.as_slice() {
            [3, h, w] | [1, 3, h, w] => (*h, *w),
            _ => {
                return Err(Error::Input(format!(
                    "expected a (1, 3, H, W) image tensor, got {size:?}"
                )))
            }
        };
        let (h, w) = chw;
        let chw = x.f_reshape([3, h, w])?;
        let n = (h * w * 3) as usize;
        let max = depth.max_value();
        let mut samples = match depth {
            BitDepth::U8 => Samples::U8(Vec::with_capacity(n)),
            BitDepth::U16 => Samples::U16(Vec::with_capacity(n)),
            BitDepth::F32 => Samples::F32(Vec::with_capacity(n)),
        };
        // In bands of rows, so that a large image never has a whole-frame f64 copy (a
        // 6000x4000 one would take 576 MB per copy); each sample is converted as a whole-frame
        // conversion would.
        let band = (Self::BAND_SAMPLES / (3 * w)).clamp(1, h.max(1));
        let mut v = Vec::new();
        for y0 in (0..h).step_by(band as usize) {
            let rows = band.min(h - y0);
            let hwc = chw
                .f_narrow(1, y0, rows)?
                .f_to_device(Device::Cpu)?
                .f_to_kind(Kind::Double)?
                .f_permute([1, 2, 0])?
                .f_clamp(0.0, 1.0)?
                .contiguous();
            let len = (rows * w * 3) as usize;
            v.resize(len, 0f64);
            hwc.f_copy_data(&mut v, len)?;
            match &mut samples {
                Samples::U8(o) => o.extend(v.iter().map(|&s| (s * max).round() as u8)),
                Samples::U16(o) => o.extend(v.iter().map(|&s| (s * max).round() as u16)),
                Samples::F32(o) => o.extend(v.iter().map(|&s| s as f32)),
            }
        }
        Ok(RgbImage {
            width: w as usize,
            height: h as usize,
            samples,
        })
    }

    fn to_dynamic(&self) -> Result<image::DynamicImage> {
        let (w, h) = (self.width as u32, self.height as u32);
        let bad = || Error::Input(format!("{}x{} image with a wrong number of samples", w, h));
        Ok(match &self.samples {
            Samples::U8(v) => image::DynamicImage::ImageRgb8(
                image::ImageBuffer::from_raw(w, h, v.clone()).ok_or_else(bad)?,
            ),
            Samples::U16(v) => image::DynamicImage::ImageRgb16(
                image::ImageBuffer::from_raw(w, h, v.clone()).ok_or_else(bad)?,
            ),
            Samples::F32(v) => image::DynamicImage::ImageRgb32F(
                image::ImageBuffer::from_raw(w, h, v.clone()).ok_or_else(bad)?,
            ),
        })
    }

    /// Convert the samples to another depth (rounding to the nearest level).
    pub fn with_depth(&self, depth: BitDepth) -> Result<RgbImage> {
        if depth == self.depth() {
            return Ok(self.clone());
        }
        RgbImage::from_tensor(&self.to_tensor(Kind::Double)?, depth)
    }
}

/// Read an image file as exact RGB samples.
pub fn read(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if let Some((width, height, gray)) = read_gray_f32_tiff(path, &bytes, true)? {
        // The grey samples replicated to RGB, as for the other grey images.
        let samples = Samples::F32(gray.iter().flat_map(|&g| [g, g, g]).collect());
        return Ok(RgbImage {
            width,
            height,
            samples,
        });
    }
    let fmt = Format::from_path(path).map(Format::image_format);
    let img = match fmt {
        Some(f) => image::load_from_memory_with_format(&bytes, f),
        None => image::load_from_memory(&bytes),
    }
    .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    use image::DynamicImage as D;
    let samples = match img {
        D::ImageRgb8(b) => Samples::U8(b.into_raw()),
        D::ImageLuma8(_) | D::ImageLumaA8(_) | D::ImageRgba8(_) => {
            Samples::U8(img.to_rgb8().into_raw())
        }
        D::ImageRgb16(b) => Samples::U16(b.into_raw()),
        D::ImageLuma16(_) | D::ImageLumaA16(_) | D::ImageRgba16(_) => {
            Samples::U16(img.to_rgb16().into_raw())
        }
        D::ImageRgb32F(b) => Samples::F32(b.into_raw()),
        _ => Samples::F32(img.to_rgb32f().into_raw()),
    };
    Ok(RgbImage {
        width,
        height,
        samples,
    })
}

/// A grayscale 32-bit float TIFF (one IEEE float sample per pixel, no alpha), which the
/// image crate refuses ("color type Unknown(32)"), read with the tiff crate: `Some((width,
/// height, samples))` (`samples` empty unless `decode`), or `None` when `bytes` are anything
/// else (left to the image crate, which reads them or says why not).
fn read_gray_f32_tiff(
    path: &Path,
    bytes: &[u8],
    decode: bool,
) -> Result<Option<(usize, usize, Vec<f32>)>> {
    use tiff::decoder::{Decoder, DecodingResult};
    use tiff::tags::{SampleFormat, Tag};
    if Format::from_path(path) != Some(Format::Tiff) {
        return Ok(None);
    }
    let Ok(mut dec) = Decoder::new(std::io::Cursor::new(bytes)) else {
        return Ok(None);
    };
    let float = matches!(
        dec.find_tag_unsigned_vec::<u16>(Tag::SampleFormat),
        Ok(Some(f)) if f.first().copied().map(SampleFormat::from_u16) == Some(Some(SampleFormat::IEEEFP))
    );
    if !float || !matches!(dec.colortype(), Ok(tiff::ColorType::Gray(32))) {
        return Ok(None);
    }
    let bad = |e: String| Error::format(path, format!("cannot decode image: {e}"));
    let (w, h) = dec.dimensions().map_err(|e| bad(e.to_string()))?;
    if !decode {
        return Ok(Some((w as usize, h as usize, Vec::new())));
    }
    match dec.read_image().map_err(|e| bad(e.to_string()))? {
        DecodingResult::F32(v) if v.len() == w as usize * h as usize => {
            Ok(Some((w as usize, h as usize, v)))
        }
        _ => Err(bad("grayscale float TIFF with unexpected samples".into())),
    }
}

/// What an RGB read leaves out: whether the file is grayscale, and its alpha channel (at the
/// image's depth), so that a denoised image can be written back the same way.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub gray: bool,
    pub alpha: Option<Samples>,
}

/// The grayscale flag and alpha channel of an image file.
pub fn read_extras(path: &Path) -> Result<Extras> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if read_gray_f32_tiff(path, &bytes, false)?.is_some() {
        return Ok(Extras {
            gray: true,
            alpha: None,
        });
    }
    let fmt = Format::from_path(path).map(Format::image_format);
    let img = match fmt {
        Some(f) => image::load_from_memory_with_format(&bytes, f),
        None => image::load_from_memory(&bytes),
    }
    .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))?;
    let color = img.color();
    let alpha =
        color.has_alpha().then(
            || match img.color().bytes_per_pixel() / color.channel_count() {
                1 => Samples::U8(img.to_rgba8().pixels().map(|p| p[3]).collect()),
                2 => Samples::U16(img.to_rgba16().pixels().map(|p| p[3]).collect()),
                _ => Samples::F32(img.to_rgba32f().pixels().map(|p| p[3]).collect()),
            },
        );
    Ok(Extras {
        gray: !color.has_color(),
        alpha,
    })
}

/// `img` as an image of the layout `extras` describes (gray: the mean of R, G and B; alpha
/// converted to `img`'s depth).
fn with_extras(img: &RgbImage, extras: &Extras) -> Result<image::DynamicImage> {
    use image::DynamicImage as D;
    let rgb = img.to_dynamic()?;
    let alpha = match &extras.alpha {
        None => None,
        Some(a) => {
            let a = RgbImage {
                width: img.width,
                height: img.height,
                samples: a.clone(),
            };
            Some(alpha_as(&a, img.depth())?)
        }
    };
    let (w, h) = (img.width as u32, img.height as u32);
    let gray8 = |v: &[u8]| {
        v.chunks_exact(3)
            .map(|p| ((p[0] as u32 + p[1] as u32 + p[2] as u32 + 1) / 3) as u8)
            .collect::<Vec<_>>()
    };
    let gray16 = |v: &[u16]| {
        v.chunks_exact(3)
            .map(|p| ((p[0] as u32 + p[1] as u32 + p[2] as u32 + 1) / 3) as u16)
            .collect::<Vec<_>>()
    };
    let bad = || Error::Input(format!("{w}x{h} image with a wrong number of samples"));
    let out = match (&img.samples, extras.gray, alpha) {
        (Samples::U8(v), true, None) => {
            D::ImageLuma8(image::ImageBuffer::from_raw(w, h, gray8(v)).ok_or_else(bad)?)
        }
        (Samples::U16(v), true, None) => {
            D::ImageLuma16(image::ImageBuffer::from_raw(w, h, gray16(v)).ok_or_else(bad)?)
        }
        (Samples::U8(v), true, Some(Samples::U8(a))) => D::ImageLumaA8(
            image::ImageBuffer::from_raw(w, h, interleave(&gray8(v), 1, &a)).ok_or_else(bad)?,
        ),
        (Samples::U16(v), true, Some(Samples::U16(a))) => D::ImageLumaA16(
            image::ImageBuffer::from_raw(w, h, interleave(&gray16(v), 1, &a)).ok_or_else(bad)?,
        ),
        (Samples::U8(v), false, Some(Samples::U8(a))) => {
            D::ImageRgba8(image::ImageBuffer::from_raw(w, h, interleave(v, 3, &a)).ok_or_else(bad)?)
        }
        (Samples::U16(v), false, Some(Samples::U16(a))) => D::ImageRgba16(
            image::ImageBuffer::from_raw(w, h, interleave(v, 3, &a)).ok_or_else(bad)?,
        ),
        (Samples::F32(v), _, Some(Samples::F32(a))) => D::ImageRgba32F(
            image::ImageBuffer::from_raw(w, h, interleave(v, 3, &a)).ok_or_else(bad)?,
        ),
        _ => rgb,
    };
    Ok(out)
}

/// One alpha plane (in an RgbImage's sample vector) at `depth`.
fn alpha_as(a: &RgbImage, depth: BitDepth) -> Result<Samples> {
    if a.depth() == depth {
        return Ok(a.samples.clone());
    }
    let max = |d: BitDepth| d.max_value();
    let (from, to) = (max(a.depth()), max(depth));
    let f: Vec<f64> = match &a.samples {
        Samples::U8(v) => v.iter().map(|&x| x as f64 / from).collect(),
        Samples::U16(v) => v.iter().map(|&x| x as f64 / from).collect(),
        Samples::F32(v) => v.iter().map(|&x| x as f64).collect(),
    };
    Ok(match depth {
        BitDepth::U8 => Samples::U8(
            f.iter()
                .map(|x| (x.clamp(0.0, 1.0) * to).round() as u8)
                .collect(),
        ),
        BitDepth::U16 => Samples::U16(
            f.iter()
                .map(|x| (x.clamp(0.0, 1.0) * to).round() as u16)
                .collect(),
        ),
        BitDepth::F32 => Samples::F32(f.iter().map(|&x| x as f32).collect()),
    })
}

/// Pixels of `n` colour samples followed by one alpha sample.
fn interleave<T: Copy>(color: &[T], n: usize, alpha: &[T]) -> Vec<T> {
    color
        .chunks_exact(n)
        .zip(alpha)
        .flat_map(|(c, &a)| c.iter().copied().chain(std::iter::once(a)))
        .collect()
}

/// Load an image file as a (1, 3, H, W) f32 tensor in [0, 1] on the CPU, and its depth.
pub fn load(path: &Path) -> Result<(Tensor, BitDepth)> {
    let img = read(path)?;
    Ok((img.to_tensor(Kind::Float)?, img.depth()))
}

/// Write exact samples; the format follows the extension. Samples deeper than the format
/// allows are converted ([`Format::fit_depth`]); JPEG is written at `jpeg_quality`.
pub fn write(path: &Path, img: &RgbImage, jpeg_quality: u8) -> Result<()> {
    write_with_extras(path, img, &Extras::default(), jpeg_quality)
}

/// [`write`], as grayscale and/or with an alpha channel as `extras` says (JPEG has no alpha:
/// it is left out there).
pub fn write_with_extras(
    path: &Path,
    img: &RgbImage,
    extras: &Extras,
    jpeg_quality: u8,
) -> Result<()> {
    let fmt = Format::from_path(path).ok_or_else(|| {
        Error::Input(format!(
            "{}: unknown image extension (use png, jpg or tif)",
            path.display()
        ))
    })?;
    let img = img.with_depth(fmt.fit_depth(img.depth()))?;
    let mut extras = extras.clone();
    if fmt == Format::Jpeg {
        extras.alpha = None;
    }
    let mut buf = Vec::new();
    if let (Format::Tiff, Samples::F32(v), true, None) =
        (fmt, &img.samples, extras.gray, &extras.alpha)
    {
        // The image crate has no grayscale float type: the tiff crate writes it.
        let gray: Vec<f32> = v
            .chunks_exact(3)
            // In f64: three equal samples give that sample back exactly.
            .map(|p| ((p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0) as f32)
            .collect();
        tiff::encoder::TiffEncoder::new(std::io::Cursor::new(&mut buf))
            .and_then(|mut enc| {
                enc.write_image::<tiff::encoder::colortype::Gray32Float>(
                    img.width as u32,
                    img.height as u32,
                    &gray,
                )
            })
            .map_err(|e| Error::format(path, format!("cannot encode image: {e}")))?;
        return crate::weights::write_atomic(path, &buf);
    }
    let dynimg = with_extras(&img, &extras)?;
    match fmt {
        Format::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut buf,
                jpeg_quality.clamp(1, 100),
            );
            dynimg.write_with_encoder(enc)
        }
        f => dynimg.write_to(&mut std::io::Cursor::new(&mut buf), f.image_format()),
    }
    .map_err(|e| Error::format(path, format!("cannot encode image: {e}")))?;
    crate::weights::write_atomic(path, &buf)
}

/// Save a (1, 3, H, W) tensor in [0, 1] (clamped) at `depth` (lowered to what the format
/// supports; JPEG at quality 95).
pub fn save(path: &Path, x: &Tensor, depth: BitDepth) -> Result<()> {
    let fmt = Format::from_path(path).ok_or_else(|| {
        Error::Input(format!(
            "{}: unknown image extension (use png, jpg or tif)",
            path.display()
        ))
    })?;
    write(path, &RgbImage::from_tensor(x, fmt.fit_depth(depth))?, 95)
}

/// Write a (1, 3, H, W) or (3, H, W) image tensor as a NumPy `.npy` file, float32, shape
/// (H, W, 3), values as they are (not clamped).
pub fn write_npy(path: &Path, x: &Tensor) -> Result<()> {
    let size = x.size();
    let (h, w) = match size.as_slice() {
        [3, h, w] | [1, 3, h, w] => (*h, *w),
        _ => {
            return Err(Error::Input(format!(
                "expected a (1, 3, H, W) image tensor, got {size:?}"
            )))
        }
    };
    let hwc = x
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_reshape([3, h, w])?
        .f_permute([1, 2, 0])?
        .contiguous();
    let n = (h * w * 3) as usize;
    let mut v = vec![0f32; n];
    hwc.f_copy_data(&mut v, n)?;
    let mut bytes: Vec<u8> = Vec::with_capacity(n * 4 + 128);
    npy_header(&mut bytes, "<f4", &[h as usize, w as usize, 3]);
    for s in v {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    crate::weights::write_atomic(path, &bytes)
}

/// Write 8-bit samples (H, W, 3) as a NumPy `.npy` file of dtype uint8.
pub fn write_npy_u8(path: &Path, img: &RgbImage) -> Result<()> {
    let Samples::U8(v) = &img.samples else {
        return Err(Error::Input("write_npy_u8 needs an 8-bit image".into()));
    };
    let mut bytes: Vec<u8> = Vec::with_capacity(v.len() + 128);
    npy_header(&mut bytes, "|u1", &[img.height, img.width, 3]);
    bytes.extend_from_slice(v);
    crate::weights::write_atomic(path, &bytes)
}

/// NPY format 1.0 header, padded so the data starts at a multiple of 64 bytes.
fn npy_header(out: &mut Vec<u8>, descr: &str, shape: &[usize]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    // NumPy's spelling: `(5,)` for one dimension, `(4, 3)` otherwise.
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    let _ = out.write_all(dict.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: i64, w: i64) -> Tensor {
        Tensor::arange(3 * h * w, (Kind::Float, Device::Cpu)).view([1, 3, h, w])
            / (3 * h * w - 1) as f64
    }

    #[test]
    fn png_round_trips_at_8_and_16_bits() {
        let dir = tempfile::tempdir().unwrap();
        let x = ramp(5, 7);
        for depth in [BitDepth::U8, BitDepth::U16] {
            let p = dir.path().join(format!("a{}.png", depth.bits()));
            save(&p, &x, depth).unwrap();
            let (y, d) = load(&p).unwrap();
            assert_eq!(d, depth);
            assert_eq!(y.size(), vec![1, 3, 5, 7]);
            let err = (&y - &x).abs().max().double_value(&[]);
            assert!(err <= 0.5 / depth.max_value() + 1e-7, "{depth}: {err}");
            // Exact samples survive a second round trip.
            let img = read(&p).unwrap();
            let p2 = dir.path().join(format!("b{}.tiff", depth.bits()));
            write(&p2, &img, 95).unwrap();
            assert_eq!(read(&p2).unwrap(), img);
        }
    }

    #[test]
    fn jpeg_is_eight_bit_and_float_tiff_keeps_floats() {
        let dir = tempfile::tempdir().unwrap();
        let x = ramp(16, 16);
        let p = dir.path().join("a.jpg");
        save(&p, &x, BitDepth::U16).unwrap();
        assert_eq!(load(&p).unwrap().1, BitDepth::U8);
        let p = dir.path().join("a.tif");
        save(&p, &x, BitDepth::F32).unwrap();
        let (y, d) = load(&p).unwrap();
        assert_eq!(d, BitDepth::F32);
        assert_eq!((&y - &x).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn quantising_in_bands_equals_the_whole_frame_conversion() {
        // 1000x400: 1.2 M samples, two bands of rows; values beyond [0, 1] are clamped.
        let (h, w) = (400i64, 1000i64);
        let x = Tensor::randn([1, 3, h, w], (Kind::Float, Device::Cpu)) * 0.6 + 0.5;
        let whole: Vec<f64> = Vec::try_from(
            x.to_kind(Kind::Double)
                .reshape([3, h, w])
                .permute([1, 2, 0])
                .clamp(0.0, 1.0)
                .contiguous()
                .view([-1]),
        )
        .unwrap();
        for depth in [BitDepth::U8, BitDepth::U16, BitDepth::F32] {
            let img = RgbImage::from_tensor(&x, depth).unwrap();
            let max = depth.max_value();
            let expect = match depth {
                BitDepth::U8 => {
                    Samples::U8(whole.iter().map(|&s| (s * max).round() as u8).collect())
                }
                BitDepth::U16 => {
                    Samples::U16(whole.iter().map(|&s| (s * max).round() as u16).collect())
                }
                BitDepth::F32 => Samples::F32(whole.iter().map(|&s| s as f32).collect()),
            };
            assert_eq!((img.width, img.height), (w as usize, h as usize));
            assert!(img.samples == expect, "{depth}");
        }
    }

    #[test]
    fn grayscale_float_tiff_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.tif");
        let gray: Vec<f32> = (0..35).map(|i| i as f32 / 34.0 * 0.9 + 0.01).collect();
        let img = RgbImage {
            width: 7,
            height: 5,
            samples: Samples::F32(gray.iter().flat_map(|&g| [g, g, g]).collect()),
        };
        let extras = Extras {
            gray: true,
            alpha: None,
        };
        write_with_extras(&p, &img, &extras, 95).unwrap();
        let e = read_extras(&p).unwrap();
        assert!(e.gray && e.alpha.is_none());
        assert_eq!(read(&p).unwrap(), img);
        // Written as one float sample per pixel (a third of an RGB float file's data).
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len < 35 * 4 + 400, "{len} bytes");
    }

    #[test]
    fn npy_header_is_aligned() {
        let mut v = Vec::new();
        npy_header(&mut v, "<f4", &[3, 4, 3]);
        assert_eq!(v.len() % 64, 0);
        assert_eq!(*v.last().unwrap(), b'\n');
    }

    #[test]
    fn listing_sorts_by_name_and_skips_others() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.png", "a.JPG", "c.txt", "10.tif"] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let names: Vec<String> = list_images(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10.tif", "a.JPG", "b.png"]);
    }
}
