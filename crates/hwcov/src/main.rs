//! The `hwcov` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hwcov::bench::{BenchShape, bench};
use hwcov::coverage::run_platforms;
use hwcov::features::ImageBackend;
use hwcov::hub::{ModelId, Need, need_of};
use hwcov::platforms::{self, Build};
use hwcov::run::{RunRequest, run as run_task};
use hwcov::tasks::embed::Pooling;
use hwcov::tasks::text_generation::{ChatMode, TextGenerationSettings};
use hwcov::verify::{VerifyOptions, verify};
use hwcov::{Availability, Error, LoadOptions, PlatformId, Precision, Tolerance};
use hwcov_preprocess::audio::{RandomCrop, file_features as audio_file_features};

#[derive(Parser)]
#[command(
    name = "hwcov",
    version,
    about = "Run Hugging Face models on every hardware platform, and prove it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model folder on a platform with the inputs of an io file; compare every `out_*` tensor.
    /// Exit status: 0 all outputs within tolerance, 1 some are not, 2 nothing could be compared.
    Verify {
        #[command(flatten)]
        model: ModelArg,
        /// A safetensors file of `in_<arg>` inputs and `out_<field>` reference outputs. At f16 or
        /// bf16, the fixtures' `io.f16.safetensors` / `io.bf16.safetensors` hold transformers'
        /// outputs at that precision.
        #[arg(long)]
        io: PathBuf,
        /// cpu (default), cuda, openvino, ... (`hwcov platforms` lists them).
        #[arg(long)]
        platform: Option<PlatformId>,
        /// f32 (default), f16 or bf16; the default tolerance follows the precision.
        #[arg(long, default_value = "f32")]
        precision: Precision,
        /// The device: its index (1) or platform and index (cuda:1); default the platform's first.
        #[arg(long)]
        device: Option<DeviceArg>,
        /// Absolute tolerance (default: the precision's).
        #[arg(long, requires = "rtol")]
        atol: Option<f64>,
        /// Relative tolerance (default: the precision's).
        #[arg(long, requires = "atol")]
        rtol: Option<f64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a model folder on user input, with the task of its class (BERT: sentence embeddings;
    /// T5, OPT, LLaMA, Qwen2, Qwen3: generated text; LLaVA, LLaVA-NeXT: an answer about --image;
    /// Wav2Vec2, Whisper: speech recognition; CLAP: zero-shot audio classification).
    Run {
        #[command(flatten)]
        model: ModelArg,
        /// A text: to embed, a prompt, or a candidate label (repeat for several).
        #[arg(long)]
        text: Vec<String>,
        /// An image file (PNG, JPEG, ...).
        #[arg(long)]
        image: Option<PathBuf>,
        /// A video: a folder of frames or an animated GIF.
        #[arg(long)]
        video: Option<PathBuf>,
        /// An audio file (WAV, FLAC, MP3).
        #[arg(long)]
        audio: Option<PathBuf>,
        /// Embedding pooling: mean (default), cls or pooler. A sentence-transformers folder
        /// (modules.json) pools as its 1_Pooling module says.
        #[arg(long)]
        pooling: Option<Pooling>,
        /// Embeddings: also print the similarity of every pair of texts (a sentence-transformers
        /// folder's similarity function, cosine or dot; else cosine).
        #[arg(long)]
        similarity: bool,
        /// Embeddings: the sentence-transformers prompt to put before each text, by its name in
        /// config_sentence_transformers.json (default: the folder's default prompt).
        #[arg(long)]
        prompt_name: Option<String>,
        /// The most new tokens to generate (default: the folder's generation config, else 20).
        #[arg(long)]
        max_new_tokens: Option<usize>,
        /// Sample the next token instead of taking the most likely one (greedy is the default).
        #[arg(long)]
        do_sample: bool,
        /// Sampling temperature (implies --do-sample).
        #[arg(long)]
        temperature: Option<f32>,
        /// Text generation: sample among the k most likely tokens (implies --do-sample; 0: all).
        /// Image classification: how many labels to show (default 5).
        #[arg(long)]
        top_k: Option<usize>,
        /// Sample among the most likely tokens that make up this probability (implies --do-sample).
        #[arg(long)]
        top_p: Option<f32>,
        /// Random seed of sampling, for reproducible output.
        #[arg(long)]
        seed: Option<u64>,
        /// Wrap the prompt in the folder's chat template (the default when the folder has one).
        #[arg(long, conflicts_with = "no_chat")]
        chat: bool,
        /// Send the prompt as it is, even when the folder has a chat template.
        #[arg(long)]
        no_chat: bool,
        /// Cut a prompt that is too long for the model (by the tokenizer's truncation side) instead
        /// of failing.
        #[arg(long)]
        truncate: bool,
        /// Object detection: keep boxes whose score is above this (default 0.5).
        #[arg(long)]
        threshold: Option<f64>,
        /// Zero-shot image classification: the sentence each --text label is put into
        /// (default "This is a photo of {}.").
        #[arg(long)]
        hypothesis_template: Option<String>,
        /// Whisper: the language of the audio, as a code (en), name (english) or token (<|en|>);
        /// default: the generation config's, else the model detects it.
        #[arg(long)]
        language: Option<String>,
        /// Whisper: transcribe (default) or translate (into English).
        #[arg(long)]
        task: Option<String>,
        /// Images and videos: compute as transformers' torchvision image processors (the default:
        /// what transformers picks where torchvision is installed) or its PIL ones.
        #[arg(long, value_name = "pil|torchvision")]
        image_backend: Option<ImageBackend>,
        #[arg(long)]
        platform: Option<PlatformId>,
        /// The device: its index (1) or platform and index (cuda:1).
        #[arg(long)]
        device: Option<DeviceArg>,
        #[arg(long, default_value = "f32")]
        precision: Precision,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Time forward() on synthetic inputs made from the model's config (for random-weight checkpoints
    /// at real sizes; compare with tools/bench/pytorch_bench.py in the same run).
    Bench {
        #[command(flatten)]
        model: ModelArg,
        #[arg(long)]
        platform: Option<PlatformId>,
        /// f32, f16 or bf16, held exactly; default: f32 where the runtime lets itself choose (OpenVINO
        /// picks bf16 on CPUs with AMX), for speed.
        #[arg(long)]
        precision: Option<Precision>,
        /// The device: its index (1) or platform and index (cuda:1).
        #[arg(long)]
        device: Option<DeviceArg>,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Tokens per sequence (text models).
        #[arg(long, default_value_t = 128)]
        seq: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        #[arg(long, default_value_t = 30)]
        iters: usize,
        /// Generative models: also time this many decoding steps after a prefill (tokens per second).
        #[arg(long, default_value_t = 0)]
        decode: usize,
        #[arg(long)]
        json: bool,
    },
    /// Write the model input tensors that preprocessing makes of user input (named as transformers'
    /// processors name them: pixel_values, pixel_mask, input_features, input_values) to a safetensors
    /// file, with the processor of the model folder (preprocessor_config.json).
    Features {
        #[command(flatten)]
        model: ModelArg,
        /// An image file (PNG, JPEG, GIF); repeat for a batch (padded as the processor pads).
        #[arg(long, conflicts_with_all = ["video", "audio"], required_unless_present_any = ["video", "audio"])]
        image: Vec<PathBuf>,
        /// A video: an animated GIF or a folder of frame images.
        #[arg(long, conflicts_with = "audio")]
        video: Option<PathBuf>,
        /// Frames to sample from the video (default: the model's num_frames from config.json,
        /// else every frame).
        #[arg(long, requires = "video")]
        num_frames: Option<usize>,
        /// An audio file (WAV, FLAC, MP3): resampled to the extractor's rate, channels averaged.
        #[arg(long)]
        audio: Option<PathBuf>,
        /// Images and videos: compute as transformers' torchvision image processors (the default:
        /// what transformers picks where torchvision is installed) or its PIL ones.
        #[arg(long, conflicts_with = "audio", value_name = "pil|torchvision")]
        image_backend: Option<ImageBackend>,
        /// The safetensors file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// List the platforms of this build, available or not, with the device or the reason.
    Platforms {
        #[arg(long)]
        json: bool,
    },
    /// Run every cell of models.toml this build and machine can run; write the run as JSON (to merge
    /// with `cargo xtask coverage`, for machines without a Rust toolchain).
    Coverage {
        /// The workspace root holding models.toml and fixtures/.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Where to write the run (JSON).
        #[arg(long)]
        out: PathBuf,
        /// Only these platforms (repeat; default: all seven).
        #[arg(long)]
        platform: Vec<PlatformId>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Verify {
            model,
            io,
            platform,
            precision,
            device,
            atol,
            rtol,
            json,
        } => {
            let (platform, device_index) = target(platform, device)?;
            let model_dir = model.folder(need_of(platform))?;
            let opts = VerifyOptions {
                load: LoadOptions {
                    precision,
                    device_index,
                    pin_precision: true,
                },
                tolerance: atol.zip(rtol).map(|(atol, rtol)| Tolerance { atol, rtol }),
            };
            let report = verify(&model_dir, &io, platform, &opts)?;
            if json {
                println!("{}", to_json(&report)?);
            } else {
                for o in &report.outputs {
                    println!("{o}");
                }
                println!("{}", report.summary());
            }
            Ok(if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Run {
            model,
            text,
            image,
            video,
            audio,
            pooling,
            similarity,
            prompt_name,
            max_new_tokens,
            do_sample,
            temperature,
            top_k,
            top_p,
            seed,
            chat,
            no_chat,
            truncate,
            threshold,
            hypothesis_template,
            language,
            task,
            image_backend,
            platform,
            device,
            precision,
            json,
        } => {
            let (platform, device_index) = target(platform, device)?;
            let model_dir = model.folder(need_of(platform))?;
            let opts = LoadOptions {
                precision,
                device_index,
                pin_precision: true,
            };
            let request = RunRequest {
                texts: text,
                image,
                video,
                audio,
                pooling,
                similarity,
                prompt_name,
                max_new_tokens,
                language,
                task,
                generation: TextGenerationSettings {
                    max_new_tokens: None,
                    do_sample,
                    temperature,
                    top_k,
                    top_p,
                    seed,
                    chat: if chat {
                        ChatMode::On
                    } else if no_chat {
                        ChatMode::Off
                    } else {
                        ChatMode::Auto
                    },
                    truncate,
                },
                top_k,
                threshold,
                hypothesis_template,
                image_backend,
            };
            let out = run_task(&model_dir, &request, platform, &opts)?;
            if json {
                println!("{}", to_json(&out.json)?);
            } else {
                print!("{}", out.text);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            model,
            platform,
            precision,
            device,
            batch,
            seq,
            warmup,
            iters,
            decode,
            json,
        } => {
            let (platform, device_index) = target(platform, device)?;
            let model_dir = model.folder(need_of(platform))?;
            // Without --precision, each runtime runs at its own default for speed (f32 on candle).
            let opts = LoadOptions {
                precision: precision.unwrap_or_default(),
                device_index,
                pin_precision: precision.is_some(),
            };
            let r = bench(
                &model_dir,
                platform,
                &opts,
                BenchShape { batch, seq },
                warmup,
                iters,
                decode,
            )?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&r).map_err(|e| Error::Usage(e.to_string()))?
                );
            } else {
                println!(
                    "{} on {} ({}, {}) batch {}{}: mean {:.3} ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  stdev {:.3}  {:.1}/s  load {:.2} s",
                    r.model_type,
                    r.platform,
                    r.device,
                    r.precision,
                    r.batch,
                    r.seq.map(|s| format!(" seq {s}")).unwrap_or_default(),
                    r.mean_ms,
                    r.p50_ms,
                    r.p90_ms,
                    r.p99_ms,
                    r.stdev_ms,
                    r.throughput_per_s,
                    r.load_seconds
                );
                if let Some(d) = &r.decode {
                    println!(
                        "decode {} tokens: {:.1} tokens/s, {:.3} ms/token (p50 {:.3}, p90 {:.3}, p99 {:.3})",
                        d.new_tokens,
                        d.tokens_per_s,
                        d.ms_per_token_mean,
                        d.ms_per_token_p50,
                        d.ms_per_token_p90,
                        d.ms_per_token_p99
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Features {
            model,
            image,
            video,
            num_frames,
            audio,
            image_backend,
            out,
        } => {
            let model_dir = model.folder(Need::Processor)?;
            let mut notes = Vec::new();
            let tensors = if let Some(audio) = audio {
                let (f, _) = audio_file_features(&model_dir, &audio, RandomCrop::Refuse)?;
                notes = f.notes;
                f.tensors
            } else if let Some(v) = video {
                hwcov::features::video(&model_dir, &v, num_frames, image_backend)?
            } else {
                let paths: Vec<&std::path::Path> = image.iter().map(PathBuf::as_path).collect();
                hwcov::features::image(&model_dir, &paths, image_backend)?
            };
            hwcov::tensor::write_safetensors(&out, &tensors)?;
            for (name, t) in &tensors {
                println!("{name:<16} {} {:?}", t.dtype(), t.shape());
            }
            for n in &notes {
                eprintln!("note: {n}");
            }
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Platforms { json } => {
            let rows: Vec<(PlatformId, bool, String)> = PlatformId::ALL
                .into_iter()
                .map(|id| match platforms::build(id) {
                    Build::Compiled(p) => match p.probe() {
                        Availability::Available { device } => (id, true, device),
                        Availability::Unavailable { reason } => (id, false, reason),
                    },
                    Build::NotCompiled { feature } => (
                        id,
                        false,
                        format!("not compiled in (rebuild with `--features {feature}`)"),
                    ),
                    Build::NoCrate => (id, false, "not implemented in hwcov yet".to_string()),
                })
                .collect();
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(id, ok, what)| {
                        serde_json::json!({
                            "platform": id,
                            "available": ok,
                            if *ok { "device" } else { "reason" }: what,
                        })
                    })
                    .collect();
                println!("{}", to_json(&v)?);
            } else {
                for (id, ok, what) in rows {
                    println!(
                        "{:<9} {:<13} {what}",
                        id.as_str(),
                        if ok { "available" } else { "unavailable" }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Coverage { root, out, platform } => {
            let specs = hwcov::spec::load_models(&root.join("models.toml"))?;
            let platforms = if platform.is_empty() {
                PlatformId::ALL.to_vec()
            } else {
                platform
            };
            let run = run_platforms(&root, &specs, &platforms);
            for c in &run.cells {
                if c.status != hwcov::Status::NotImplemented {
                    println!("{:<12} {:<9} {}", c.model, c.platform, c.status);
                }
            }
            // Whole or not at all: a run killed mid-way, or two at once, leave no half-written file.
            hwcov::file::write_atomic(&out, (to_json(&run)? + "\n").as_bytes())?;
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--device`: an index (`1`), or a platform and an index (`cuda:1`, `cuda`).
#[derive(Debug, Clone, Copy)]
struct DeviceArg {
    platform: Option<PlatformId>,
    index: usize,
}

impl std::str::FromStr for DeviceArg {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::Usage(format!(
                "--device `{s}`: give an index (1) or a platform and an index (cuda:1)"
            ))
        };
        if let Ok(index) = s.parse() {
            return Ok(DeviceArg { platform: None, index });
        }
        let (p, i) = s.split_once(':').unwrap_or((s, "0"));
        Ok(DeviceArg {
            platform: Some(p.parse()?),
            index: i.parse().map_err(|_| bad())?,
        })
    }
}

/// The platform and device index from `--platform` and `--device` (cpu and 0 by default).
/// The model of a command: a local folder, or a Hub repository fetched into the Hugging Face cache.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct ModelArg {
    /// A save_pretrained folder (config.json + model.safetensors, or an ONNX / OpenVINO IR export
    /// for the graph platforms).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// A Hub model, org/name[@revision]: the files the platform reads are fetched into the
    /// Hugging Face cache and checked (HF_ENDPOINT, HF_HOME or HF_HUB_CACHE, HF_TOKEN, and
    /// HF_HUB_OFFLINE=1 for the cache only).
    #[arg(long, value_name = "ORG/NAME[@REVISION]")]
    model: Option<ModelId>,
}

impl ModelArg {
    fn folder(self, need: Need) -> Result<PathBuf, Error> {
        match (self.model_dir, self.model) {
            (Some(dir), _) => Ok(dir),
            (None, Some(id)) => hwcov::hub::model_folder(&id, need),
            (None, None) => Err(Error::Usage("give --model-dir or --model".to_string())),
        }
    }
}

fn target(platform: Option<PlatformId>, device: Option<DeviceArg>) -> Result<(PlatformId, usize), Error> {
    let named = device.and_then(|d| d.platform);
    let platform = match (platform, named) {
        (Some(p), Some(d)) if p != d => {
            return Err(Error::Usage(format!(
                "--platform {p} and --device {d}:... name different platforms"
            )));
        }
        (Some(p), _) | (None, Some(p)) => p,
        (None, None) => PlatformId::Cpu,
    };
    Ok((platform, device.map(|d| d.index).unwrap_or(0)))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, Error> {
    serde_json::to_string_pretty(v).map_err(|e| Error::Usage(format!("cannot encode JSON: {e}")))
}
