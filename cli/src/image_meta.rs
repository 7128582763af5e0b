//! What `clipdenoise image` reads from a file besides its pixels: the EXIF orientation (a
//! portrait phone photo stores landscape pixels and a tag), applied to the result so that it
//! is upright as viewers show the input; and whether EXIF data or an ICC profile is present,
//! which the written file does not carry (said in the summary).

use std::path::Path;

use ::image::ImageDecoder;
use clipdenoise::research::imageio::{RgbImage, Samples};

/// The metadata of one input file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta {
    /// EXIF orientation, 1 (as stored) to 8.
    pub orientation: u8,
    pub exif: bool,
    pub icc: bool,
}

/// Read the metadata of `path`; a file whose metadata cannot be read counts as having none
/// (its pixels are read, and their errors reported, elsewhere).
pub fn read(path: &Path) -> Meta {
    let decoder = ::image::ImageReader::open(path)
        .ok()
        .and_then(|r| r.with_guessed_format().ok())
        .and_then(|r| r.into_decoder().ok());
    let Some(mut d) = decoder else {
        return Meta {
            orientation: 1,
            ..Meta::default()
        };
    };
    let exif = d.exif_metadata().ok().flatten();
    let orientation = exif
        .as_deref()
        .and_then(::image::metadata::Orientation::from_exif_chunk)
        .map_or(1, |o| o.to_exif());
    Meta {
        orientation,
        exif: exif.is_some(),
        icc: d.icc_profile().ok().flatten().is_some(),
    }
}

impl Meta {
    /// The summary's words for what happened to the metadata: "", or ", turned upright (EXIF
    /// orientation 6), EXIF and ICC profile not kept".
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if self.orientation != 1 {
            s += &format!(", turned upright (EXIF orientation {})", self.orientation);
        }
        s += match (self.exif, self.icc) {
            (true, true) => ", EXIF and ICC profile not kept",
            (true, false) => ", EXIF not kept",
            (false, true) => ", ICC profile not kept",
            (false, false) => "",
        };
        s
    }
}

/// `img` (and its alpha channel, one sample per pixel) turned as EXIF `orientation` says a
/// viewer shows it.
pub fn upright(
    img: &RgbImage,
    alpha: Option<&Samples>,
    orientation: u8,
) -> (RgbImage, Option<Samples>) {
    let (w, h) = (img.width, img.height);
    let turn = |s: &Samples, c: usize| match s {
        Samples::U8(v) => Samples::U8(orient(v, w, h, c, orientation)),
        Samples::U16(v) => Samples::U16(orient(v, w, h, c, orientation)),
        Samples::F32(v) => Samples::F32(orient(v, w, h, c, orientation)),
    };
    let (ow, oh) = if orientation >= 5 { (h, w) } else { (w, h) };
    (
        RgbImage {
            width: ow,
            height: oh,
            samples: turn(&img.samples, 3),
        },
        alpha.map(|a| turn(a, 1)),
    )
}

/// Interleaved samples (`c` per pixel) of a `w` x `h` image, turned as EXIF `o` says.
fn orient<T: Copy>(v: &[T], w: usize, h: usize, c: usize, o: u8) -> Vec<T> {
    let (ow, oh) = if o >= 5 { (h, w) } else { (w, h) };
    let mut out = Vec::with_capacity(v.len());
    for y in 0..oh {
        for x in 0..ow {
            // The stored pixel shown at (x, y).
            let (sx, sy) = match o {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                8 => (w - 1 - y, x),
                _ => (x, y),
            };
            let i = (sy * w + sx) * c;
            out.extend_from_slice(&v[i..i + c]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every orientation against the image crate's own (DynamicImage::apply_orientation).
    #[test]
    fn orientations_match_the_image_crates() {
        let (w, h) = (5u32, 3u32);
        let src = ::image::RgbImage::from_fn(w, h, |x, y| ::image::Rgb([x as u8, y as u8, 7]));
        for o in 1..=8u8 {
            let mut want = ::image::DynamicImage::ImageRgb8(src.clone());
            want.apply_orientation(::image::metadata::Orientation::from_exif(o).unwrap());
            let got = orient(src.as_raw(), w as usize, h as usize, 3, o);
            assert_eq!(got, want.to_rgb8().into_raw(), "orientation {o}");
        }
    }
}
