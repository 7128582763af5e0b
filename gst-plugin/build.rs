fn main() {
    gst_plugin_version_helper::info();
    // libtorch lookup (see the workspace build.rs): absolute rpath, keep libtorch_cuda NEEDED.
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath={dir}");
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
}
