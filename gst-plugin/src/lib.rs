//! GStreamer plugin `clipdenoise`: the CLIPDenoising network (CVPR 2024) as a video filter.
//!
//! Built as a cdylib (`libgstclipdenoise.so`, for `GST_PLUGIN_PATH`) and as an rlib, through
//! which the tests and the `clipdenoise` CLI register it in-process with
//! `gstclipdenoise::plugin_register_static()`. The element is in [`clipdenoise`].

use gst::glib;

mod clipdenoise;
pub mod malloc;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    malloc::tune();
    clipdenoise::register(plugin)
}

gst::plugin_define!(
    clipdenoise,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
