//! `hwcov verify`: run a model folder on a platform with the inputs of an io file and compare every
//! reference output with what the platform produced.

use std::path::Path;
use std::time::Instant;

use hwcov_core::{
    Availability, Decoder, Error, HostTensor, IoFile, LoadOptions, ModelClass, ModelFiles, NamedTensors,
    OutputComparison, Precision, Result, Support, Tolerance, VerifyReport, compare, compare::compare_prefix_ids,
};

use crate::generate::whisper::{self, WhisperGenerationConfig, WhisperOptions};
use crate::generate::{GenerateOptions, GenerationConfig, generate};

use crate::platforms;
use hwcov_core::PlatformId;

/// What to verify, and how strictly.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub load: LoadOptions,
    /// Overrides the precision's default tolerance.
    pub tolerance: Option<Tolerance>,
}

/// Runs `io`'s inputs through the model in `model_dir` on `platform` and compares every `out_*`.
/// An `Err` means nothing could be compared (bad input, platform absent); a report with
/// `passed == false` means the outputs disagree.
pub fn verify(model_dir: &Path, io_path: &Path, platform: PlatformId, opts: &VerifyOptions) -> Result<VerifyReport> {
    let files = ModelFiles::open(model_dir)?;
    let io = IoFile::read(io_path)?;
    let platform_impl = platforms::get(platform)?;
    let device = match platform_impl.probe() {
        Availability::Available { device } => device,
        Availability::Unavailable { reason } => {
            return Err(Error::Unavailable {
                platform: platform.to_string(),
                reason,
            });
        }
    };
    match platform_impl.support(files.class) {
        Support::Implemented => {}
        Support::NotImplemented { reason } => {
            return Err(Error::NotImplemented {
                platform: platform.to_string(),
                reason,
            });
        }
        Support::Unsupported { reason } => {
            return Err(Error::Unsupported {
                platform: platform.to_string(),
                what: files.class.name().to_string(),
                reason,
            });
        }
    }

    let started = Instant::now();
    let mut handler = platform_impl.load(&files, &opts.load)?;
    let load_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut produced = handler.forward(&io.inputs).map_err(|e| name_io_tensor(e, io_path))?;
    // `generated` comes from the generation loop, which the handler's decoder drives.
    let mut generation_problem = None;
    let mut prompt_len = 0;
    if let Some(expected) = io.outputs.get("generated")
        && let Some(decoder) = handler.decoder()
    {
        match verify_generation(&files, &io.inputs, expected, decoder) {
            Ok((g, len)) => {
                produced.insert("generated".into(), g);
                prompt_len = len;
            }
            Err(e) => generation_problem = Some(name_io_tensor(e, io_path).to_string()),
        }
    }
    let run_seconds = started.elapsed().as_secs_f64();

    let tolerance = opts
        .tolerance
        .unwrap_or_else(|| Tolerance::for_precision(opts.load.precision));
    let outputs: Vec<OutputComparison> = io
        .outputs
        .iter()
        .map(|(name, expected)| match (produced.get(name), &generation_problem) {
            (Some(actual), _) if name == "generated" && opts.load.precision != Precision::F32 => {
                compare_prefix_ids(name, expected, actual, prompt_len)
            }
            (Some(actual), _) => compare(name, expected, actual, tolerance),
            (None, Some(problem)) if name == "generated" => {
                OutputComparison::failure(name, expected, None, format!("generation failed: {problem}"))
            }
            (None, _) => OutputComparison::missing(name, expected),
        })
        .collect();
    let passed = outputs.iter().all(|o| o.passed);
    Ok(VerifyReport {
        model_dir: model_dir.display().to_string(),
        io: io_path.display().to_string(),
        model_type: files.class.model_type().to_string(),
        platform,
        device,
        precision: opts.load.precision,
        tolerance,
        outputs,
        passed,
        load_seconds,
        run_seconds,
    })
}

/// Greedy generation from the io file's prompt, with as many new tokens as the reference has; also
/// returns how many leading tokens are the echoed prompt. The prompt is `input_ids` for decoder-only
/// models; encoder-decoders start their decoder from `decoder_start_token_id`, Whisper from the prompt
/// its generation config makes (the io file's
/// `decoder_input_ids` are for the logits, not generation).
fn verify_generation(
    files: &ModelFiles,
    inputs: &NamedTensors,
    expected: &HostTensor,
    decoder: &mut dyn Decoder,
) -> Result<(HostTensor, usize)> {
    let mut config = GenerationConfig::from_model(files)?;
    if files.class == ModelClass::Whisper {
        // Whisper's generate() returns the new tokens only, without the final EOS: a reference of n
        // tokens per row is what generation gives with n new tokens at most (a row that ended with
        // EOS at n + 1 is the same n tokens). Nothing of the prompt is echoed.
        let wcfg = WhisperGenerationConfig::from_model(files, &mut config)?;
        let prompts = whisper::decoder_prompts(decoder, inputs, &wcfg, &WhisperOptions::default())?;
        let n = expected.shape().get(1).copied().unwrap_or(0).max(1);
        let tokens = whisper::generate(decoder, inputs, &config, &wcfg, &prompts, Some(n), true)?.to_tensor()?;
        return Ok((tokens, 0));
    }
    let mut inputs = inputs.clone();
    let prompt_len = if config.is_encoder_decoder {
        inputs.remove("decoder_input_ids");
        inputs.remove("decoder_attention_mask");
        1
    } else {
        inputs
            .get("input_ids")
            .and_then(|t| t.shape().get(1).copied())
            .ok_or_else(|| Error::tensor("input_ids", "missing input: generation needs a prompt"))?
    };
    let total = expected.shape().get(1).copied().unwrap_or(0);
    let max_new_tokens = total.checked_sub(prompt_len).ok_or_else(|| {
        Error::tensor(
            "generated",
            format!("the reference has {total} tokens per row, fewer than the prompt's {prompt_len}"),
        )
    })?;
    let opts = GenerateOptions {
        max_new_tokens,
        sampling: None,
        strict: true,
    };
    Ok((generate(decoder, &inputs, &config, &opts)?.to_tensor()?, prompt_len))
}

/// A handler names its inputs as forward() arguments; the user knows them as `in_*` entries of the
/// io file.
fn name_io_tensor(err: Error, io_path: &Path) -> Error {
    match err {
        Error::Tensor {
            name,
            origin: None,
            message,
        } => Error::Tensor {
            name: format!("in_{name}"),
            origin: Some(io_path.to_path_buf()),
            message,
        },
        other => other,
    }
}
