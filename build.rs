include!("build-support/libtorch_link.rs");

fn main() {
    link_libtorch();
    compile_shims();
}

/// The C++ shims of the fused CPU inference: libtorch's fused oneDNN convolution operators
/// (src/model/conv_pointwise.cpp), the decoder's upsample + cat in one pass
/// (src/model/upsample_cat.cpp) and the few-output-channel 3x3 conv
/// (src/model/conv_small_out.cpp) and the kernel head's passes (src/model/kernel_apply.cpp),
/// compiled against libtorch's headers the way torch-sys
/// compiles its own shim (its lib dir comes as DEP_TCH_LIBTORCH_LIB; the headers sit beside it).
fn compile_shims() {
    const SRCS: [&str; 4] = [
        "src/model/conv_pointwise.cpp",
        "src/model/upsample_cat.cpp",
        "src/model/conv_small_out.cpp",
        "src/model/kernel_apply.cpp",
    ];
    for src in SRCS.iter().chain(&["src/model/shim.h"]) {
        println!("cargo:rerun-if-changed={src}");
    }
    let lib = std::path::PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports DEP_TCH_LIBTORCH_LIB"),
    );
    let include = lib
        .parent()
        .expect("libtorch lib dir has a parent")
        .join("include");
    cc::Build::new()
        .cpp(true)
        .files(SRCS)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false)
        .compile("clipdenoise_conv_pointwise");
}
