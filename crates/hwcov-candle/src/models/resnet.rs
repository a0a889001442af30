//! ResNet as a backbone, ported from transformers' `models/resnet/modeling_resnet.py` (ResNetBackbone,
//! inference only), with every BatchNorm2d replaced by DETR's frozen batch norm as `DetrConvEncoder`
//! replaces them (`replace_batch_norm` in modeling_detr.py).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use serde::Deserialize;

use crate::activation::Activation;
use crate::nn::{Conv2d, conv2d_no_bias};

/// `ResNetConfig`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct ResNetConfig {
    #[serde(default = "d3")]
    pub num_channels: usize,
    #[serde(default = "d64")]
    pub embedding_size: usize,
    #[serde(default = "default_hidden_sizes")]
    pub hidden_sizes: Vec<usize>,
    #[serde(default = "default_depths")]
    pub depths: Vec<usize>,
    #[serde(default = "default_layer_type")]
    pub layer_type: String,
    #[serde(default = "relu")]
    pub hidden_act: Activation,
    #[serde(default)]
    pub downsample_in_first_stage: bool,
    #[serde(default)]
    pub downsample_in_bottleneck: bool,
    #[serde(default)]
    pub out_features: Option<Vec<String>>,
    #[serde(default)]
    pub out_indices: Option<Vec<i64>>,
}

fn d3() -> usize {
    3
}
fn d64() -> usize {
    64
}
fn default_hidden_sizes() -> Vec<usize> {
    vec![256, 512, 1024, 2048]
}
fn default_depths() -> Vec<usize> {
    vec![3, 4, 6, 3]
}
fn default_layer_type() -> String {
    "bottleneck".to_string()
}
fn relu() -> Activation {
    Activation::Relu
}

impl ResNetConfig {
    /// `stage_names`: "stem", then "stage1" ... one per depth.
    pub fn stage_names(&self) -> Vec<String> {
        std::iter::once("stem".to_string())
            .chain((1..=self.depths.len()).map(|i| format!("stage{i}")))
            .collect()
    }

    /// The stage indices the backbone returns (`set_output_features_output_indices`): out_indices,
    /// else out_features by name, else the last stage. Negative indices count from the end.
    pub fn out_indices(&self) -> std::result::Result<Vec<usize>, String> {
        let names = self.stage_names();
        let n = names.len() as i64;
        if let Some(idx) = &self.out_indices {
            return idx
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + n } else { i };
                    if (0..n).contains(&j) {
                        Ok(j as usize)
                    } else {
                        Err(format!("out_indices holds {i}, but there are {n} stages"))
                    }
                })
                .collect();
        }
        if let Some(feats) = &self.out_features {
            return feats
                .iter()
                .map(|f| {
                    names
                        .iter()
                        .position(|s| s == f)
                        .ok_or_else(|| format!("out_features names `{f}`, not one of {names:?}"))
                })
                .collect();
        }
        Ok(vec![names.len() - 1])
    }

    /// Channels of each stage's output (`num_features`): the stem's, then each stage's.
    pub fn num_features(&self) -> Vec<usize> {
        std::iter::once(self.embedding_size)
            .chain(self.hidden_sizes.iter().copied())
            .collect()
    }
}

/// `DetrFrozenBatchNorm2d`: batch norm with fixed statistics, eps 1e-5.
pub struct DetrFrozenBatchNorm2d {
    scale: Tensor,
    bias: Tensor,
}

impl DetrFrozenBatchNorm2d {
    pub fn new(n: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get(n, "weight")?.reshape((1, n, 1, 1))?;
        let bias = vb.get(n, "bias")?.reshape((1, n, 1, 1))?;
        let running_var = vb.get(n, "running_var")?.reshape((1, n, 1, 1))?;
        let running_mean = vb.get(n, "running_mean")?.reshape((1, n, 1, 1))?;
        let epsilon = 1e-5;
        // weight * (running_var + epsilon).rsqrt(), each step rounded to the dtype as torch stores it.
        let var_eps = crate::nn::in_f32(&running_var, |v| v.affine(1.0, epsilon))?;
        let scale = weight.mul(&crate::nn::in_f32(&var_eps, crate::nn::rsqrt)?)?;
        let bias = bias.sub(&running_mean.mul(&scale)?)?;
        Ok(Self { scale, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(&self.scale)?.broadcast_add(&self.bias)
    }
}

pub struct ResNetConvLayer {
    convolution: Conv2d,
    normalization: DetrFrozenBatchNorm2d,
    activation: Option<Activation>,
}

impl ResNetConvLayer {
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        activation: Option<Activation>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: kernel_size / 2,
            stride,
            ..Default::default()
        };
        Ok(Self {
            convolution: conv2d_no_bias(in_channels, out_channels, kernel_size, cfg, vb.pp("convolution"))?,
            normalization: DetrFrozenBatchNorm2d::new(out_channels, vb.pp("normalization"))?,
            activation,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.normalization.forward(&self.convolution.forward(x)?)?;
        match self.activation {
            Some(a) => a.forward(&h),
            None => Ok(h),
        }
    }
}

/// `nn.MaxPool2d(kernel_size=3, stride=2, padding=1)`: the padding never wins the max.
fn max_pool_3x3_s2_p1(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let neg =
        |shape: (usize, usize, usize, usize)| Tensor::full(f32::NEG_INFINITY, shape, x.device())?.to_dtype(x.dtype());
    let x = Tensor::cat(&[&neg((b, c, h, 1))?, x, &neg((b, c, h, 1))?], 3)?;
    let x = Tensor::cat(&[&neg((b, c, 1, w + 2))?, &x, &neg((b, c, 1, w + 2))?], 2)?;
    x.max_pool2d_with_stride(3, 2)
}

pub struct ResNetEmbeddings {
    embedder: ResNetConvLayer,
}

impl ResNetEmbeddings {
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            embedder: ResNetConvLayer::new(
                cfg.num_channels,
                cfg.embedding_size,
                7,
                2,
                Some(cfg.hidden_act),
                vb.pp("embedder"),
            )?,
        })
    }

    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        max_pool_3x3_s2_p1(&self.embedder.forward(pixel_values)?)
    }
}

/// `ResNetShortCut`: a strided 1x1 projection of the residual.
pub struct ResNetShortCut {
    convolution: Conv2d,
    normalization: DetrFrozenBatchNorm2d,
}

impl ResNetShortCut {
    pub fn new(in_channels: usize, out_channels: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig {
            stride,
            ..Default::default()
        };
        Ok(Self {
            convolution: conv2d_no_bias(in_channels, out_channels, 1, cfg, vb.pp("convolution"))?,
            normalization: DetrFrozenBatchNorm2d::new(out_channels, vb.pp("normalization"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.normalization.forward(&self.convolution.forward(x)?)
    }
}

/// `ResNetBasicLayer` (two 3x3 convolutions) or `ResNetBottleNeckLayer` (1x1, 3x3, 1x1), with the
/// shortcut where the channels or the stride change.
pub struct ResNetLayer {
    shortcut: Option<ResNetShortCut>,
    layer: Vec<ResNetConvLayer>,
    activation: Activation,
}

impl ResNetLayer {
    pub fn basic(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        act: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        let shortcut = (in_channels != out_channels || stride != 1)
            .then(|| ResNetShortCut::new(in_channels, out_channels, stride, vb.pp("shortcut")))
            .transpose()?;
        Ok(Self {
            shortcut,
            layer: vec![
                ResNetConvLayer::new(
                    in_channels,
                    out_channels,
                    3,
                    stride,
                    Some(Activation::Relu),
                    vb.pp("layer.0"),
                )?,
                ResNetConvLayer::new(out_channels, out_channels, 3, 1, None, vb.pp("layer.1"))?,
            ],
            activation: act,
        })
    }

    pub fn bottleneck(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        act: Activation,
        downsample_in_bottleneck: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let shortcut = (in_channels != out_channels || stride != 1)
            .then(|| ResNetShortCut::new(in_channels, out_channels, stride, vb.pp("shortcut")))
            .transpose()?;
        let reduces = out_channels / 4;
        let (s1, s2) = if downsample_in_bottleneck {
            (stride, 1)
        } else {
            (1, stride)
        };
        // ResNetConvLayer's activation defaults to "relu" whatever the config's hidden_act.
        Ok(Self {
            shortcut,
            layer: vec![
                ResNetConvLayer::new(in_channels, reduces, 1, s1, Some(Activation::Relu), vb.pp("layer.0"))?,
                ResNetConvLayer::new(reduces, reduces, 3, s2, Some(Activation::Relu), vb.pp("layer.1"))?,
                ResNetConvLayer::new(reduces, out_channels, 1, 1, None, vb.pp("layer.2"))?,
            ],
            activation: act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layer {
            h = l.forward(&h)?;
        }
        let residual = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        self.activation.forward(&(h + residual)?)
    }
}

pub struct ResNetStage {
    layers: Vec<ResNetLayer>,
}

impl ResNetStage {
    pub fn new(
        cfg: &ResNetConfig,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        depth: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let bottleneck = cfg.layer_type == "bottleneck";
        let act = cfg.hidden_act;
        let layers = (0..depth)
            .map(|i| {
                let (cin, s) = if i == 0 {
                    (in_channels, stride)
                } else {
                    (out_channels, 1)
                };
                let vb = vb.pp(format!("layers.{i}"));
                if bottleneck {
                    // Only the first layer of a stage gets downsample_in_bottleneck.
                    let dib = i == 0 && cfg.downsample_in_bottleneck;
                    ResNetLayer::bottleneck(cin, out_channels, s, act, dib, vb)
                } else {
                    ResNetLayer::basic(cin, out_channels, s, act, vb)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h)?;
        }
        Ok(h)
    }
}

/// ResNetBackbone: the stem and the stages up to the last one asked for.
pub struct ResNetBackbone {
    embedder: ResNetEmbeddings,
    stages: Vec<ResNetStage>,
    out_indices: Vec<usize>,
}

impl ResNetBackbone {
    pub fn new(cfg: &ResNetConfig, out_indices: Vec<usize>, vb: VarBuilder) -> Result<Self> {
        let last = out_indices.iter().copied().max().unwrap_or(0);
        let mut stages = Vec::new();
        let mut in_channels = cfg.embedding_size;
        for (i, (&out_channels, &depth)) in cfg.hidden_sizes.iter().zip(&cfg.depths).enumerate().take(last) {
            let stride = if i == 0 && !cfg.downsample_in_first_stage { 1 } else { 2 };
            stages.push(ResNetStage::new(
                cfg,
                in_channels,
                out_channels,
                stride,
                depth,
                vb.pp(format!("encoder.stages.{i}")),
            )?);
            in_channels = out_channels;
        }
        Ok(Self {
            embedder: ResNetEmbeddings::new(cfg, vb.pp("embedder"))?,
            stages,
            out_indices,
        })
    }

    /// The feature maps of `out_indices`, in stage order.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Vec<Tensor>> {
        let mut hidden_states = vec![self.embedder.forward(pixel_values)?];
        for s in &self.stages {
            let next = s.forward(hidden_states.last().expect("the stem is there"))?;
            hidden_states.push(next);
        }
        let mut idx = self.out_indices.clone();
        idx.sort_unstable();
        idx.dedup();
        Ok(idx.into_iter().map(|i| hidden_states[i].clone()).collect())
    }
}
