include!("../build-support/libtorch_link.rs");

fn main() {
    gst_plugin_version_helper::info();
    link_libtorch();
}
