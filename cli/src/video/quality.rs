//! The constant-quality level (`--crf`) of each codec, with the range its encoder accepts read
//! from the encoder's own property spec (x264enc's `quantizer` stops at 50, not x264's 51),
//! so that `--help`, the argument check and the encoder agree; likewise `--batch-size`'s
//! range from the element's `batch-size`.

use anyhow::anyhow;
use gst::glib;
use gst::prelude::*;

use super::plan::Codec;

/// The encoder property whose range is the quality scale, and the default level; None for a
/// lossless codec. x265enc takes the CRF through `option-string`: its `qp` has the same scale.
fn scale(codec: Codec) -> Option<(&'static str, u32)> {
    match codec {
        Codec::H264 => Some(("quantizer", 20)),
        Codec::H265 => Some(("qp", 24)),
        Codec::Vp9 => Some(("cq-level", 32)),
        Codec::Ffv1 => None,
    }
}

/// (lowest, highest, default) quality level of `codec`'s encoder, None for a lossless codec.
/// GStreamer must be initialised.
pub fn range(codec: Codec) -> anyhow::Result<Option<(u32, u32, u32)>> {
    let Some((prop, default)) = scale(codec) else {
        return Ok(None);
    };
    let enc = codec.encoder();
    let factory = gst::ElementFactory::find(enc).ok_or_else(|| {
        anyhow!("GStreamer element {enc} is missing (install the plugin that provides it)")
    })?;
    let class = glib::object::ObjectClass::from_type(factory.load()?.element_type())
        .ok_or_else(|| anyhow!("{enc}: cannot read its properties"))?;
    let pspec = class
        .find_property(prop)
        .ok_or_else(|| anyhow!("{enc} has no property {prop}"))?;
    let (lo, hi) = if let Some(p) = pspec.downcast_ref::<glib::ParamSpecUInt>() {
        (p.minimum(), p.maximum())
    } else if let Some(p) = pspec.downcast_ref::<glib::ParamSpecInt>() {
        (p.minimum().max(0) as u32, p.maximum().max(0) as u32)
    } else {
        return Err(anyhow!("{enc}: {prop} is not an integer"));
    };
    Ok(Some((lo, hi, default.clamp(lo, hi))))
}

/// `--crf`'s help: each codec's range as its encoder here accepts it.
pub fn help() -> String {
    let ranges: Vec<String> = Codec::ALL
        .iter()
        .filter_map(|&c| match range(c) {
            Ok(Some((lo, hi, d))) => Some(format!("{} {lo}-{hi} (default {d})", c.name())),
            Ok(None) => None,
            Err(_) => Some(format!("{} (encoder missing)", c.name())),
        })
        .collect();
    format!(
        "Constant-quality level, lower is better: {} [ranges from the installed encoders]",
        ranges.join(", ")
    )
}

/// `--batch-size`'s help with the range and default of the element's `batch-size`.
pub fn batch_size_help() -> Option<String> {
    let factory = gst::ElementFactory::find(super::pipeline::ELEMENT)?;
    let class = glib::object::ObjectClass::from_type(factory.load().ok()?.element_type())?;
    let pspec = class.find_property("batch-size")?;
    let p = pspec.downcast_ref::<glib::ParamSpecUInt>()?;
    Some(format!(
        "Frames per model call: {}-{} (default {}, the element's)",
        p.minimum(),
        p.maximum(),
        p.default_value()
    ))
}
