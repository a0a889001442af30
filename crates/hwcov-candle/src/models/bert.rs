//! BERT, ported from transformers' `models/bert/modeling_bert.py` (BertModel, inference only).
//!
//! candle-transformers' bert has no pooler and knows three activations only, so BertModel is
//! written here, class for class as in transformers.

use crate::nn::{Embedding, embedding};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::common::{additive_padding_mask, eager_attention, split_stacked_qkv};
use crate::nn::{LayerNorm, Linear, layer_norm, linear, stack_linears};

/// `BertConfig`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_act() -> Activation {
    Activation::Gelu
}
fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".to_string()
}

pub struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
}

impl BertEmbeddings {
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            word_embeddings: embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("word_embeddings"))?,
            position_embeddings: embedding(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                vb.pp("position_embeddings"),
            )?,
            token_type_embeddings: embedding(cfg.type_vocab_size, cfg.hidden_size, vb.pp("token_type_embeddings"))?,
            layer_norm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    pub fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor) -> Result<Tensor> {
        let seq_len = input_ids.dim(1)?;
        let position_ids = Tensor::arange(0u32, seq_len as u32, input_ids.device())?;
        let embeddings = self
            .word_embeddings
            .forward(input_ids)?
            .add(&self.token_type_embeddings.forward(token_type_ids)?)?
            .broadcast_add(&self.position_embeddings.forward(&position_ids)?)?;
        self.layer_norm.forward(&embeddings)
    }
}

/// `BertSelfAttention`. query, key and value are one stacked Linear (`split_stacked_qkv` says why).
pub struct BertSelfAttention {
    qkv: Linear,
    num_attention_heads: usize,
    attention_head_size: usize,
}

impl BertSelfAttention {
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            qkv: stack_linears(&[
                linear(h, h, vb.pp("query"))?,
                linear(h, h, vb.pp("key"))?,
                linear(h, h, vb.pp("value"))?,
            ])?,
            num_attention_heads: cfg.num_attention_heads,
            attention_head_size: h / cfg.num_attention_heads,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (b, l, _) = hidden_states.dims3()?;
        let qkv = self.qkv.forward(hidden_states)?;
        let (q, k, v) = split_stacked_qkv(&qkv, self.num_attention_heads, self.attention_head_size)?;
        let scaling = (self.attention_head_size as f64).powf(-0.5);
        let context = eager_attention(&q, &k, &v, Some(attention_mask), scaling)?;
        crate::nn::contiguous(&context.transpose(1, 2)?)?.reshape((b, l, ()))
    }
}

/// `BertSelfOutput` and `BertOutput`: dense, then LayerNorm of the sum with the residual.
pub struct BertResidualOutput {
    dense: Linear,
    layer_norm: LayerNorm,
}

impl BertResidualOutput {
    pub fn new(in_dim: usize, cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            dense: linear(in_dim, cfg.hidden_size, vb.pp("dense"))?,
            layer_norm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor, input_tensor: &Tensor) -> Result<Tensor> {
        self.layer_norm
            .forward(&self.dense.forward_residual(hidden_states, input_tensor)?)
    }
}

pub struct BertLayer {
    attention_self: BertSelfAttention,
    attention_output: BertResidualOutput,
    intermediate: Linear,
    act: Activation,
    output: BertResidualOutput,
}

impl BertLayer {
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            attention_self: BertSelfAttention::new(cfg, vb.pp("attention.self"))?,
            attention_output: BertResidualOutput::new(cfg.hidden_size, cfg, vb.pp("attention.output"))?,
            intermediate: linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("intermediate.dense"))?,
            act: cfg.hidden_act,
            output: BertResidualOutput::new(cfg.intermediate_size, cfg, vb.pp("output"))?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let self_outputs = self.attention_self.forward(hidden_states, attention_mask)?;
        let attention_output = self.attention_output.forward(&self_outputs, hidden_states)?;
        let intermediate_output = self.intermediate.forward_act(&attention_output, self.act)?;
        self.output.forward(&intermediate_output, &attention_output)
    }
}

pub struct BertPooler {
    dense: Linear,
}

impl BertPooler {
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            dense: linear(cfg.hidden_size, cfg.hidden_size, vb.pp("dense"))?,
        })
    }

    /// Pools by taking the hidden state of the first token.
    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let first_token_tensor = hidden_states.narrow(1, 0, 1)?.squeeze(1)?;
        self.dense.forward(&first_token_tensor)?.tanh()
    }
}

pub struct BertOutput {
    pub last_hidden_state: Tensor,
    pub pooler_output: Option<Tensor>,
}

pub struct BertModel {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    pooler: Option<BertPooler>,
    dtype: DType,
}

impl BertModel {
    /// `vb` points at the BertModel weights (the root, or `bert.` inside a head model).
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::new(cfg, vb.pp(format!("encoder.layer.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        // Head models built with add_pooling_layer=False have no pooler weights.
        let pooler = if vb.contains_tensor("pooler.dense.weight") {
            Some(BertPooler::new(cfg, vb.pp("pooler"))?)
        } else {
            None
        };
        Ok(Self {
            embeddings: BertEmbeddings::new(cfg, vb.pp("embeddings"))?,
            layers,
            pooler,
            dtype: vb.dtype(),
        })
    }

    /// `attention_mask` is 1 for tokens to attend to and 0 for padding, shape (batch, seq).
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor, token_type_ids: &Tensor) -> Result<BertOutput> {
        let mut hidden_states = self.embeddings.forward(input_ids, token_type_ids)?;
        let mask = additive_padding_mask(attention_mask, self.dtype)?;
        for layer in &self.layers {
            hidden_states = layer.forward(&hidden_states, &mask)?;
        }
        let pooler_output = match &self.pooler {
            Some(p) => Some(p.forward(&hidden_states)?),
            None => None,
        };
        Ok(BertOutput {
            last_hidden_state: hidden_states,
            pooler_output,
        })
    }
}
