// Shared by the build scripts of every crate that links a binary, a test or the plugin
// (`include!`d). `tch` alone gives binaries no rpath and lets as-needed linking drop
// libtorch_cuda.so, so CUDA would never be found at run time. torch-sys exports the libtorch
// lib dir as DEP_TCH_LIBTORCH_LIB (links = "tch").
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let dir = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    if let Some(dir) = &dir {
        println!("cargo:rustc-link-arg=-Wl,-rpath={dir}");
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    let has_cuda = dir.is_some_and(|d| std::path::Path::new(&d).join("libtorch_cuda.so").exists());
    if has_cuda {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
}
