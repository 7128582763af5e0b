//! A kernel model written before the kernel head's passes were configurable (no
//! `kernel_dilations`: [1, 2]) computes bit for bit what main's code computed then
//! (tests/fixtures/kernel-w8, written at 2e8ec9a) with the reference passes, and within float
//! rounding with the CPU kernel that inference now runs (src/model/kernel_apply.cpp). Alone in
//! its file: it switches the kernel with the environment (`CLIPDENOISE_KERNEL_APPLY`), which
//! the process shares.

use std::path::{Path, PathBuf};

use clipdenoise::inference::{Denoiser, Options};
use clipdenoise::weights;
use tch::Kind;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kernel-w8")
        .join(name)
}

#[test]
fn a_kernel_model_without_kernel_dilations_computes_what_it_did() {
    let model = fixture("model.safetensors");
    let (io, _) = weights::read_safetensors(&fixture("outputs.safetensors")).unwrap();
    let load = |max_pixels, tile_overlap| {
        Denoiser::load(
            &model,
            Options {
                cpu_threads: 1,
                max_pixels,
                tile_overlap,
                ..Options::default()
            },
        )
        .unwrap()
    };
    // (input, expected output, max_pixels, tile_overlap) as written.
    let cases = [
        ("batch_input", "batch_input_fp32", 0, 192),
        ("padded_50x70_input", "padded_50x70_input_fp32", 0, 192),
        ("tiled_input", "tiled_fp32", 96 * 96, 64),
    ];
    // The reference passes: bit for bit.
    std::env::set_var("CLIPDENOISE_KERNEL_APPLY", "reference");
    for (input, output, max_pixels, overlap) in cases {
        let d = load(max_pixels, overlap);
        assert_eq!(d.config().kernel_dilations, None);
        assert_eq!(d.config().kernel_dilations(), &[1, 2]);
        let (x, want) = (&io[input], &io[output]);
        assert!(d.denoise(x).unwrap().equal(want), "{input}: output changed");
        // (and the kernels do something: the golden output is not the input)
        let moved = (want - x).abs().mean(Kind::Float).double_value(&[]);
        assert!(moved > 1e-3, "{input}: {moved}");
    }
    // The CPU kernel (where this CPU runs it): the same to float rounding.
    std::env::remove_var("CLIPDENOISE_KERNEL_APPLY");
    for (input, output, max_pixels, overlap) in cases {
        let got = load(max_pixels, overlap).denoise(&io[input]).unwrap();
        let err = (got - &io[output]).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{input}: off by {err}");
    }
}
