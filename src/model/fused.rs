//! Fused convolutions for inference: conv + bias + activation (+ residual add) as one oneDNN
//! primitive (libtorch's `mkldnn::_convolution_pointwise`, through `conv_pointwise.cpp`), with
//! the weights reordered once, at load, into the blocked layout oneDNN computes in. Every
//! inference conv of the network goes through [`InferConv`], one per layer, so a layer added
//! later gets the fusion by building its convs the same way.
//!
//! Where the fused operator cannot run (CUDA, fp16, a libtorch without oneDNN, a CPU without
//! bf16 support), [`InferConv`] runs the unfused ops: conv2d, then the activation and the add
//! as separate passes, which is exactly the path the network ran before fusion existed.

use std::ffi::{c_char, c_int, CStr};

use tch::{Device, Kind, Tensor};

/// The pointwise operation after a conv (and its bias, and the residual add if any).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    None,
    Relu,
    /// LeakyReLU with this negative slope (the decoder's `prelu` with one shared slope).
    Leaky(f64),
}

impl Act {
    fn name(self) -> &'static std::ffi::CStr {
        match self {
            Act::None => c"none",
            Act::Relu => c"relu",
            Act::Leaky(_) => c"leaky_relu",
        }
    }

    fn slope(self) -> f64 {
        match self {
            Act::Leaky(s) => s,
            _ => 0.0,
        }
    }

    /// The unfused activation, as a separate pass (LeakyReLU as `prelu` with one shared
    /// slope, as the decoder ran it before fusion).
    pub fn apply(self, x: Tensor) -> Tensor {
        match self {
            Act::None => x,
            Act::Relu => x.relu(),
            // Made on the device (no host-to-device copy, which would wait for the GPU).
            Act::Leaky(s) => x.prelu(&Tensor::full([1], s, (x.kind(), x.device()))),
        }
    }
}

unsafe extern "C" {
    fn cd_conv_pointwise_available() -> c_int;
    fn cd_conv_pointwise(
        x: *const torch_sys::C_tensor,
        w: *const torch_sys::C_tensor,
        b: *const torch_sys::C_tensor,
        other: *const torch_sys::C_tensor,
        stride: i64,
        padding: i64,
        unary: *const c_char,
        slope: f64,
        err: *mut *mut c_char,
    ) -> *mut torch_sys::C_tensor;
}

/// Whether this libtorch has the fused operators at all.
pub fn operators_available() -> bool {
    // SAFETY: no arguments; the shim catches every exception.
    unsafe { cd_conv_pointwise_available() != 0 }
}

/// Call the fused operator: act(conv(x, w) + b [+ other]).
fn conv_pointwise(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    other: Option<&Tensor>,
    stride: i64,
    padding: i64,
    act: Act,
) -> Result<Tensor, String> {
    let mut err: *mut c_char = std::ptr::null_mut();
    let ptr = |t: Option<&Tensor>| t.map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: the tensors outlive the call; the shim returns a new owned tensor or an error
    // string allocated with malloc, never both, and catches every C++ exception.
    unsafe {
        let out = cd_conv_pointwise(
            x.as_ptr(),
            w.as_ptr(),
            ptr(b),
            ptr(other),
            stride,
            padding,
            act.name().as_ptr(),
            act.slope(),
            &mut err,
        );
        shim_result(out, err, "mkldnn::_convolution_pointwise failed")
    }
}

unsafe extern "C" {
    #[link_name = "free"]
    fn libc_free(p: *mut c_char);
}

/// What a C++ shim of src/model/ returned: its new tensor, or the message it left in `err`
/// (malloc'd by the shim, freed here; `default` when there is none).
///
/// # Safety
/// `out` is null or a tensor the shim allocated for the caller; `err` is null or a
/// NUL-terminated string from malloc.
pub(super) unsafe fn shim_result(
    out: *mut torch_sys::C_tensor,
    err: *mut c_char,
    default: &str,
) -> Result<Tensor, String> {
    if out.is_null() {
        if err.is_null() {
            return Err(default.to_string());
        }
        // SAFETY: as promised by the caller.
        let m = unsafe { CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        unsafe { libc_free(err) };
        return Err(m);
    }
    // SAFETY: a new tensor owned by the caller.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// One convolution layer ready for inference: weights (and bias) in the inference precision,
/// prepacked for oneDNN when the fused path runs.
#[derive(Debug)]
pub struct InferConv {
    /// Dense weights in the inference kind and layout (the unfused path's).
    weight: Tensor,
    bias: Option<Tensor>,
    /// oneDNN's blocked copy of `weight`, when the fused operator runs on this device and kind.
    packed: Option<Tensor>,
    /// The direct kernel's copy of `weight`, for a fused 3x3 conv with 1 to 4 outputs in f32
    /// ([`super::conv_small_out`]).
    small_out: Option<Tensor>,
    stride: i64,
    padding: i64,
}

impl InferConv {
    /// `weight` (O, I, k, k) and `bias` already in the inference kind, layout and device.
    /// `fuse`: use the fused operator where it runs ([`fusion_runs`]).
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: i64,
        padding: i64,
        fuse: bool,
    ) -> Self {
        let _guard = tch::no_grad_guard();
        let packed = (fuse && fusion_runs(weight.device(), weight.kind()))
            .then(|| prepack(&weight, stride, padding).ok())
            .flatten();
        let small_out = packed
            .as_ref()
            .and_then(|_| super::conv_small_out::prepare(&weight, stride, padding));
        InferConv {
            weight,
            bias,
            packed,
            small_out,
            stride,
            padding,
        }
    }

    /// Whether this layer runs fused.
    pub fn is_fused(&self) -> bool {
        self.packed.is_some()
    }

    /// act(conv(x) + bias).
    pub fn forward(&self, x: &Tensor, act: Act) -> Tensor {
        self.run(x, None, act)
    }

    /// act(conv(x) + bias + residual): the residual add fused into the conv's output.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor, act: Act) -> Tensor {
        self.run(x, Some(residual), act)
    }

    fn run(&self, x: &Tensor, residual: Option<&Tensor>, act: Act) -> Tensor {
        if let (Some(w), None) = (&self.small_out, residual) {
            if let Ok(y) = super::conv_small_out::forward(x, w, self.bias.as_ref()) {
                return act.apply(y);
            }
        }
        if let Some(w) = &self.packed {
            // The fused op wants the residual in the output's layout and kind.
            let res = residual.map(|r| super::layers::to_layout(r, is_channels_last(x)));
            // A shape or layout the op refuses falls through to the unfused ops (same result).
            if let Ok(y) = conv_pointwise(
                x,
                w,
                self.bias.as_ref(),
                res.as_ref(),
                self.stride,
                self.padding,
                act,
            ) {
                return y;
            }
        }
        let y = x.conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride; 2],
            [self.padding; 2],
            [1, 1],
            1,
        );
        let y = match residual {
            Some(r) => y + r,
            None => y,
        };
        act.apply(y)
    }
}

/// NCHW shape with NHWC strides (more than one channel: else both layouts are one).
fn is_channels_last(x: &Tensor) -> bool {
    x.dim() == 4 && x.size()[1] > 1 && x.stride()[1] == 1
}

/// oneDNN's blocked layout of conv weights, reordered once (an MKLDNN-layout tensor).
fn prepack(weight: &Tensor, stride: i64, padding: i64) -> Result<Tensor, tch::TchError> {
    weight
        .f_contiguous()?
        .f_to_mkldnn(weight.kind())?
        .f_mkldnn_reorder_conv2d_weight([padding; 2], [stride; 2], [1, 1], 1, None::<&[i64]>)
}

/// Whether the fused operator runs for `kind` on `device`: CPU, fp32 or bf16, and a probe
/// conv succeeds (a CPU without bf16 support makes oneDNN refuse bf16).
pub fn fusion_runs(device: Device, kind: Kind) -> bool {
    if device != Device::Cpu || !matches!(kind, Kind::Float | Kind::BFloat16) {
        return false;
    }
    use std::sync::OnceLock;
    static FP32: OnceLock<bool> = OnceLock::new();
    static BF16: OnceLock<bool> = OnceLock::new();
    let cell = if kind == Kind::Float { &FP32 } else { &BF16 };
    *cell.get_or_init(|| operators_available() && probe(kind))
}

/// One small fused conv in `kind`, checked against the unfused ops.
fn probe(kind: Kind) -> bool {
    let _guard = tch::no_grad_guard();
    let x = Tensor::ones([1, 4, 8, 8], (kind, Device::Cpu));
    let w = Tensor::ones([4, 4, 3, 3], (kind, Device::Cpu)) * 0.125;
    let Ok(packed) = prepack(&w, 1, 1) else {
        return false;
    };
    match conv_pointwise(&x, &packed, None, None, 1, 1, Act::Relu) {
        Ok(y) => {
            let want = x
                .conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
                .relu();
            y.size() == want.size()
                && f64::try_from(
                    (y.to_kind(Kind::Float) - want.to_kind(Kind::Float))
                        .abs()
                        .max(),
                )
                .is_ok_and(|d| d < 1e-3)
        }
        Err(_) => false,
    }
}
