//! Small building blocks shared by the encoder and decoder.

use tch::{nn, Kind, Tensor};

use super::fused::{Act, InferConv};

/// BatchNorm2d with the PyTorch buffers, `num_batches_tracked` included, so that state dicts
/// round-trip key for key. Uses running statistics unless `train`.
#[derive(Debug)]
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
}

pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm {
    pub fn new(p: &nn::Path, c: i64) -> Self {
        BatchNorm {
            weight: p.ones("weight", &[c]),
            bias: p.zeros("bias", &[c]),
            running_mean: p.zeros_no_train("running_mean", &[c]),
            running_var: p.ones_no_train("running_var", &[c]),
            num_batches_tracked: p.add(
                "num_batches_tracked",
                Tensor::zeros([], (Kind::Int64, p.device())),
                false,
            ),
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        if train {
            let _ = tch::no_grad(|| self.num_batches_tracked.shallow_clone().g_add_scalar_(1));
        }
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            true,
        )
    }
}

/// A bias-free conv followed by BatchNorm. For inference the pair can be folded into one
/// conv with bias (`fuse`), which is what the deployed model runs.
#[derive(Debug)]
pub struct ConvBn {
    pub conv: nn::Conv2D,
    pub bn: BatchNorm,
    stride: i64,
    padding: i64,
    /// The folded conv for inference ([`ConvBn::fuse`]).
    fused: Option<InferConv>,
}

impl ConvBn {
    pub fn new(
        p: &nn::Path,
        conv_name: &str,
        bn_name: &str,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
    ) -> Self {
        let cfg = nn::ConvConfig {
            stride,
            padding: k / 2,
            bias: false,
            ..Default::default()
        };
        ConvBn {
            conv: nn::conv2d(p / conv_name, cin, cout, k, cfg),
            bn: BatchNorm::new(&(p / bn_name), cout),
            stride,
            padding: k / 2,
            fused: None,
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_act(x, train, Act::None)
    }

    /// act(BN(conv(x))); once folded ([`ConvBn::fuse`]) and not training, one fused conv.
    pub fn forward_act(&self, x: &Tensor, train: bool, act: Act) -> Tensor {
        match &self.fused {
            Some(conv) if !train => conv.forward(x, act),
            _ => act.apply(self.bn.forward_t(&x.apply(&self.conv), train)),
        }
    }

    /// act(BN(conv(x)) + residual); once folded and not training, one fused conv.
    pub fn forward_add_act(&self, x: &Tensor, residual: &Tensor, train: bool, act: Act) -> Tensor {
        match &self.fused {
            Some(conv) if !train => conv.forward_add(x, residual, act),
            _ => act.apply(self.bn.forward_t(&x.apply(&self.conv), train) + residual),
        }
    }

    /// Fold the BN running statistics into the conv (computed in f32, stored as `kind`);
    /// `fuse`: run it as one fused oneDNN conv with its activation where that runs.
    pub fn fuse(&mut self, kind: Kind, channels_last: bool, fuse: bool) {
        let _guard = tch::no_grad_guard();
        let f = |t: &Tensor| t.to_kind(Kind::Float);
        let scale = f(&self.bn.weight) / (f(&self.bn.running_var) + BN_EPS).sqrt();
        let w = f(&self.conv.ws) * scale.view([-1, 1, 1, 1]);
        let b = f(&self.bn.bias) - f(&self.bn.running_mean) * &scale;
        self.fused = Some(InferConv::new(
            to_layout(&w.to_kind(kind), channels_last),
            Some(b.to_kind(kind)),
            self.stride,
            self.padding,
            fuse,
        ));
    }
}

/// `channels_last` as libtorch understands it: NCHW shape with NHWC strides.
pub fn to_layout(t: &Tensor, channels_last: bool) -> Tensor {
    if channels_last && t.dim() == 4 {
        t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    } else {
        t.contiguous()
    }
}

/// 3x3 conv, padding 1, no bias: the decoder's only conv.
pub fn conv3x3(p: nn::Path, cin: i64, cout: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        padding: 1,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(p, cin, cout, 3, cfg)
}

/// The inference copy of a bias-free conv (stride 1, "same" padding) such as the decoder's:
/// weights in `kind` and layout, fused with its activation where that runs.
pub fn infer_conv(conv: &nn::Conv2D, kind: Kind, channels_last: bool, fuse: bool) -> InferConv {
    let _guard = tch::no_grad_guard();
    let w = to_layout(&conv.ws.to_kind(kind), channels_last);
    let padding = w.size()[2] / 2;
    let bias = conv.bs.as_ref().map(|b| b.to_kind(kind));
    InferConv::new(w, bias, 1, padding, fuse)
}
