//! The `clipdenoise` element: video frames through the CLIPDenoising network, in batches.
//!
//! A plain `gst::Element` with its own pads: sink chain -> bounded channel -> one worker
//! thread that owns the model ([`clipdenoise::engine`]) -> src pad task pushing cleaned frames
//! in input order.

use gst::glib;
use gst::prelude::*;

mod auto;
mod eos;
mod imp;
mod live;
mod props;
mod stats;
#[cfg(test)]
mod tests;

glib::wrapper! {
    pub struct ClipDenoise(ObjectSubclass<imp::ClipDenoise>) @extends gst::Element, gst::Object;
}

/// Register the element with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "clipdenoise",
        gst::Rank::NONE,
        ClipDenoise::static_type(),
    )
}
