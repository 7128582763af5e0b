//! GStreamer plugin `clipdenoise`: the CLIPDenoising network (CVPR 2024) as a video filter.

use gst::glib;

mod clipdenoise;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    clipdenoise::register(Some(plugin))
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
