// The plugin `clipdenoise` as GStreamer sees it: name, description, version, licence, source.
// Included (`include!`) by the element library (gst-plugin/src/lib.rs, for static
// registration) and by the loader that GStreamer finds on disk (gst-plugin/loader), which
// must describe the same plugin: it cannot depend on the element crate, which links libtorch.
// Both crates' build.rs set COMMIT_ID and BUILD_REL_DATE (gst-plugin-version-helper).
macro_rules! clipdenoise_plugin_define {
    ($init:ident) => {
        gst::plugin_define!(
            clipdenoise,
            "GStreamer element running the CLIPDenoising network on batches of video frames",
            $init,
            concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
            "MIT/X11",
            "gst-plugin-clipdenoise",
            "gst-plugin-clipdenoise",
            env!("CARGO_PKG_REPOSITORY"),
            env!("BUILD_REL_DATE")
        );
    };
}
