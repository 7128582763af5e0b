//! A 3x3 conv (stride 1, padding 1) with 1 to 4 output channels in f32 on an AVX-512 CPU,
//! computed directly (`conv_small_out.cpp`): the pixel head's last conv (16 -> 3 channels at
//! full resolution), which oneDNN runs as slowly as a 16 -> 16 conv (it pads the output
//! channels to 16). [`super::fused::InferConv`] takes it where it applies.

use std::ffi::{c_char, c_int};

use tch::{Device, Kind, Tensor};

use super::fused::shim_result;

unsafe extern "C" {
    fn cd_conv_small_out_available() -> c_int;
    fn cd_conv_small_out(
        x: *const torch_sys::C_tensor,
        w: *const torch_sys::C_tensor,
        b: *const torch_sys::C_tensor,
        err: *mut *mut c_char,
    ) -> *mut torch_sys::C_tensor;
}

/// The kernel's copy of `weight` (O, I, 3, 3): (O, 3, 3, I) contiguous, when the conv is one
/// it runs (f32 on the CPU, 1 to 4 outputs, inputs a multiple of 16, stride 1, padding 1, an
/// AVX-512 CPU).
pub fn prepare(weight: &Tensor, stride: i64, padding: i64) -> Option<Tensor> {
    let s = weight.size();
    // SAFETY: no arguments.
    let cpu_runs = unsafe { cd_conv_small_out_available() } != 0;
    let fits = weight.device() == Device::Cpu
        && weight.kind() == Kind::Float
        && s.len() == 4
        && (1..=4).contains(&s[0])
        && s[1] > 0
        && s[1] % 16 == 0
        && s[2..] == [3, 3]
        && stride == 1
        && padding == 1;
    (cpu_runs && fits).then(|| weight.permute([0, 2, 3, 1]).contiguous())
}

/// conv(x, weight) + bias with `wt` from [`prepare`]; `x` f32 channels_last. An error (a
/// layout or shape the kernel refuses) leaves the caller to run the usual conv.
pub fn forward(x: &Tensor, wt: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, String> {
    let mut err: *mut c_char = std::ptr::null_mut();
    let b = bias.map_or(std::ptr::null(), |b| b.as_ptr());
    // SAFETY: the tensors outlive the call; the shim returns a new owned tensor or an error
    // string allocated with malloc, never both, and catches every C++ exception.
    unsafe {
        let out = cd_conv_small_out(x.as_ptr(), wt.as_ptr(), b, &mut err);
        shim_result(out, err, "conv_small_out failed")
    }
}
