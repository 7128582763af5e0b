//! The `clipdenoise` element: video frames through the CLIPDenoising network, in batches.
//!
//! A plain `gst::Element` with its own pads: sink chain -> bounded channel -> one worker
//! thread that owns the model ([`clipdenoise::engine`]) -> src pad task pushing cleaned frames
//! in input order.
//!
//! This module is also compiled into the CLI (`#[path]`-included), so it only uses gst,
//! gst-base, gst-video, glib (through gst), tch and the clipdenoise core, and no `crate::`
//! paths.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct ClipDenoise(ObjectSubclass<imp::ClipDenoise>) @extends gst::Element, gst::Object;
}

/// Register the element with `plugin`, or statically (for the process) with `None`.
pub fn register(plugin: Option<&gst::Plugin>) -> Result<(), glib::BoolError> {
    gst::Element::register(
        plugin,
        "clipdenoise",
        gst::Rank::NONE,
        ClipDenoise::static_type(),
    )
}
