//! Text to `input_ids`, `attention_mask` and `token_type_ids`, with the model folder's tokenizer.json
//! and the padding side and pad token of its tokenizer_config.json, as transformers' tokenizers do.

use std::path::Path;

use hwcov_core::error::read_json;
use hwcov_core::{Error, HostTensor, NamedTensors, Result};
use tokenizers::{EncodeInput, PaddingDirection, PaddingParams, PaddingStrategy};

/// A text input: one sequence, or a pair (question and context, two sentences).
#[derive(Debug, Clone)]
pub enum TextInput<'a> {
    Single(&'a str),
    Pair(&'a str, &'a str),
}

#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// Whether the model takes `token_type_ids` (tokenizer_config.json's `model_input_names`).
    token_type_ids: bool,
    /// tokenizer_config.json, when the folder has one.
    config: Option<serde_json::Value>,
    config_path: std::path::PathBuf,
    /// The chat template (chat_template.jinja, else tokenizer_config.json's `chat_template`, else
    /// chat_template.json), when the folder has one.
    chat_template: Option<String>,
    tokenizer_path: std::path::PathBuf,
}

/// One message of a conversation, as chat templates take them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json`, when present) from a model folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "the model folder has no tokenizer.json"),
            ));
        }
        let mut inner = load_tokenizer(&path)?;
        // transformers ignores the truncation and padding saved in tokenizer.json unless asked.
        inner.with_truncation(None).map_err(|e| Error::format(&path, e))?;
        inner.with_padding(None);
        let config_path = dir.join("tokenizer_config.json");
        let mut config = if config_path.is_file() {
            Some(read_json(&config_path)?)
        } else {
            None
        };
        // Older folders keep the special tokens in special_tokens_map.json.
        let map_path = dir.join("special_tokens_map.json");
        if map_path.is_file()
            && let serde_json::Value::Object(map) = read_json(&map_path)?
        {
            let c = config.get_or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let Some(obj) = c.as_object_mut() {
                for (k, v) in map {
                    obj.entry(k).or_insert(v);
                }
            }
        }
        let field = |name: &str| config.as_ref().and_then(|c| c.get(name)).cloned();

        let token_type_ids = match field("model_input_names") {
            Some(serde_json::Value::Array(names)) => names.iter().any(|n| n == "token_type_ids"),
            _ => false,
        };
        let direction = match field("padding_side").as_ref().and_then(|v| v.as_str()) {
            Some("left") => PaddingDirection::Left,
            Some("right") | None => PaddingDirection::Right,
            Some(other) => {
                return Err(Error::config(
                    &config_path,
                    "padding_side",
                    format!("`{other}` is neither left nor right"),
                ));
            }
        };
        if let Some(pad) = field("pad_token").as_ref().and_then(token_content) {
            let pad = pad.as_str();
            let pad_id = inner.token_to_id(pad).ok_or_else(|| {
                Error::config(
                    &config_path,
                    "pad_token",
                    format!("`{pad}` is not in the vocabulary of tokenizer.json"),
                )
            })?;
            inner.with_padding(Some(PaddingParams {
                strategy: PaddingStrategy::BatchLongest,
                direction,
                pad_id,
                pad_type_id: 0,
                pad_token: pad.to_string(),
                pad_to_multiple_of: None,
            }));
        }
        let chat_template = read_chat_template(dir, config.as_ref(), &config_path)?;
        Ok(TextTokenizer {
            inner,
            token_type_ids,
            config,
            config_path,
            chat_template,
            tokenizer_path: path,
        })
    }

    /// tokenizer.json's path (for error messages).
    pub fn path(&self) -> &Path {
        &self.tokenizer_path
    }

    /// A special token of tokenizer_config.json by its role (`bos_token`, `eos_token`, `pad_token`,
    /// ...), as a string; the JSON may hold the string or an AddedToken object.
    pub fn special_token(&self, name: &str) -> Option<String> {
        token_content(self.config.as_ref()?.get(name)?)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// `model_max_length` of tokenizer_config.json, unless it is transformers' "no limit"
    /// placeholder (1e30).
    pub fn model_max_length(&self) -> Option<usize> {
        let v = self.config.as_ref()?.get("model_max_length")?.as_f64()?;
        (v > 0.0 && v < 1e12).then_some(v as usize)
    }

    /// `truncation_side` of tokenizer_config.json: whether truncation drops tokens at the left.
    pub fn truncates_left(&self) -> bool {
        self.config
            .as_ref()
            .and_then(|c| c.get("truncation_side"))
            .and_then(|v| v.as_str())
            == Some("left")
    }

    /// The id of the pad token, when tokenizer_config.json names one.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.inner.get_padding().map(|p| p.pad_id)
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Renders the chat template as transformers' `apply_chat_template(tokenize=False)` does: Jinja
    /// with trim_blocks and lstrip_blocks, the special tokens as variables, `raise_exception` and
    /// `strftime_now`, and Python's string methods.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            Error::config(
                &self.config_path,
                "chat_template",
                "the model folder has no chat template",
            )
        })?;
        let messages = serde_json::to_value(messages).map_err(|e| Error::Usage(e.to_string()))?;
        self.render_chat_template(template, messages, add_generation_prompt)
            .map_err(|e| Error::config(&self.config_path, "chat_template", e))
    }

    /// Renders a chat template (the tokenizer's, or a processor's) over `messages` as given (their
    /// `content` may be a list of typed parts, as processors' templates take), with the tokenizer's
    /// special tokens as variables. The error is the template's message.
    pub fn render_chat_template(
        &self,
        template: &str,
        messages: serde_json::Value,
        add_generation_prompt: bool,
    ) -> std::result::Result<String, String> {
        let mut ctx = serde_json::Map::new();
        // The named special tokens (`special_tokens_map`): the standard ones and those a model adds
        // (`image_token`, ...), which tokenizer_config.json keeps at its top level.
        if let Some(serde_json::Value::Object(config)) = &self.config {
            for (name, value) in config {
                if name.ends_with("_token")
                    && let Some(t) = token_content(value)
                {
                    ctx.insert(name.clone(), serde_json::Value::String(t));
                }
            }
        }
        ctx.insert("messages".into(), messages);
        ctx.insert(
            "add_generation_prompt".into(),
            serde_json::Value::Bool(add_generation_prompt),
        );
        render_chat_template(template, serde_json::Value::Object(ctx))
    }

    /// The token ids of one text, with or without the special tokens that the tokenizer's
    /// post-processor adds (BOS, EOS, ...).
    pub fn encode_ids(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::runtime("tokenizer", e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids back to text, as transformers' `decode`: special tokens left out when asked, and
    /// spaces before punctuation cleaned up when tokenizer_config.json says
    /// `clean_up_tokenization_spaces`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self
            .inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::runtime("tokenizer", e.to_string()))?;
        let clean = self
            .config
            .as_ref()
            .and_then(|c| c.get("clean_up_tokenization_spaces"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        Ok(if clean { clean_up_tokenization(&text) } else { text })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// As [`encode`](Self::encode), each sequence cut to at most `max_length` tokens (special
    /// tokens included) from the tokenizer's truncation side, as transformers' tokenizers do with
    /// `truncation=True, max_length=...` (sentence-transformers' `max_seq_length`).
    pub fn encode_truncated(&self, batch: &[TextInput], max_length: usize) -> Result<NamedTensors> {
        self.clone_with_truncation(max_length)?.encode(batch)
    }

    fn clone_with_truncation(&self, max_length: usize) -> Result<Self> {
        let mut cut = self.clone();
        let direction = if self.truncates_left() {
            tokenizers::TruncationDirection::Left
        } else {
            tokenizers::TruncationDirection::Right
        };
        cut.inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length,
                direction,
                strategy: tokenizers::TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| Error::format(&self.tokenizer_path, e))?;
        Ok(cut)
    }

    /// Encodes a batch with the special tokens, padded to its longest sequence: (batch, seq) tensors
    /// named as the model's forward arguments.
    pub fn encode(&self, batch: &[TextInput]) -> Result<NamedTensors> {
        if batch.is_empty() {
            return Err(Error::Usage("no text to encode".to_string()));
        }
        if batch.len() > 1 && self.inner.get_padding().is_none() {
            return Err(Error::Usage(
                "several texts need padding, but tokenizer_config.json names no pad_token".to_string(),
            ));
        }
        let inputs: Vec<EncodeInput> = batch
            .iter()
            .map(|t| match *t {
                TextInput::Single(a) => EncodeInput::from(a),
                TextInput::Pair(a, b) => EncodeInput::from((a, b)),
            })
            .collect();
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::runtime("tokenizer", e.to_string()))?;
        let rows = encodings.len();
        let len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        if len == 0 {
            return Err(Error::Usage("the text encodes to no tokens".to_string()));
        }
        let gather = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<i64> {
            encodings.iter().flat_map(|e| f(e).iter().map(|&x| x as i64)).collect()
        };
        let mut out = NamedTensors::new();
        out.insert(
            "input_ids".into(),
            HostTensor::i64(vec![rows, len], gather(&|e| e.get_ids()))?,
        );
        out.insert(
            "attention_mask".into(),
            HostTensor::i64(vec![rows, len], gather(&|e| e.get_attention_mask()))?,
        );
        if self.token_type_ids {
            out.insert(
                "token_type_ids".into(),
                HostTensor::i64(vec![rows, len], gather(&|e| e.get_type_ids()))?,
            );
        }
        Ok(out)
    }
}

/// A special token as tokenizer_config.json writes it: the string, or an AddedToken object.
fn token_content(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Pads rows of token ids to the longest (left or right, with `pad_id`): `input_ids` and
/// `attention_mask` (batch, seq).
pub fn pad_batch(rows: &[Vec<u32>], pad_id: u32, left: bool) -> Result<NamedTensors> {
    let len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * len);
    let mut mask = Vec::with_capacity(rows.len() * len);
    for r in rows {
        let pad = len - r.len();
        let (pad_ids, pad_mask) = (vec![pad_id as i64; pad], vec![0i64; pad]);
        if left {
            ids.extend(&pad_ids);
            mask.extend(&pad_mask);
        }
        ids.extend(r.iter().map(|&t| t as i64));
        mask.extend(std::iter::repeat_n(1i64, r.len()));
        if !left {
            ids.extend(&pad_ids);
            mask.extend(&pad_mask);
        }
    }
    let mut out = NamedTensors::new();
    out.insert("input_ids".into(), HostTensor::i64(vec![rows.len(), len], ids)?);
    out.insert("attention_mask".into(), HostTensor::i64(vec![rows.len(), len], mask)?);
    Ok(out)
}

/// transformers' `clean_up_tokenization`: no space before punctuation and English contractions.
pub fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

/// The chat template of a model folder, where transformers looks for it.
fn read_chat_template(dir: &Path, config: Option<&serde_json::Value>, config_path: &Path) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| Error::io(&jinja, e));
    }
    let from_value = |v: &serde_json::Value, path: &Path| -> Result<Option<String>> {
        match v {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) => Ok(Some(s.clone())),
            // A list of named templates: the one named "default".
            serde_json::Value::Array(named) => Ok(named
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string)),
            other => Err(Error::config(
                path,
                "chat_template",
                format!("expected a string or a list of named templates, got {other}"),
            )),
        }
    };
    if let Some(v) = config.and_then(|c| c.get("chat_template")) {
        return from_value(v, config_path);
    }
    let json = dir.join("chat_template.json");
    if json.is_file() {
        let v = read_json(&json)?;
        if let Some(t) = v.get("chat_template") {
            return from_value(t, &json);
        }
    }
    Ok(None)
}

/// tokenizer.json through the tokenizers crate, which panics on some malformed files instead of
/// returning an error: a JSON syntax error inside `decoder` (its streaming parse `expect`s the
/// decoder), a `Precompiled` normalizer whose data does not parse. The JSON is parsed first and
/// those normalizers checked here; any other panic of the crate is caught and reported as the
/// file's error (the panic message is still printed by Rust's hook).
fn load_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    let json = read_json(path)?;
    check_precompiled(path, json.get("normalizer"))?;
    check_template_processing(path, json.get("post_processor"))?;
    let loaded = std::panic::catch_unwind(|| serde_json::from_value::<tokenizers::Tokenizer>(json));
    match loaded {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(Error::format(path, e)),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::format(
                path,
                format!("the tokenizers library cannot read it ({why})"),
            ))
        }
    }
}

/// Refuses a `Precompiled` normalizer (alone or in a `Sequence`) that does not parse.
fn check_precompiled(path: &Path, normalizer: Option<&serde_json::Value>) -> Result<()> {
    let Some(n) = normalizer else { return Ok(()) };
    match n.get("type").and_then(|t| t.as_str()) {
        Some("Precompiled") => serde_json::from_value::<tokenizers::normalizers::Precompiled>(n.clone())
            .map(|_| ())
            .map_err(|e| {
                Error::config(
                    path,
                    "normalizer",
                    format!("a Precompiled normalizer that does not parse: {e}"),
                )
            }),
        Some("Sequence") => n
            .get("normalizers")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .try_for_each(|m| check_precompiled(path, Some(m))),
        _ => Ok(()),
    }
}

/// Refuses a `TemplateProcessing` post-processor (alone or in a `Sequence`) whose templates name a
/// special token it does not define, or whose special tokens' ids and tokens differ in length: the
/// crate indexes its map with the template's names, and panicked at the first encoding.
fn check_template_processing(path: &Path, processor: Option<&serde_json::Value>) -> Result<()> {
    let Some(p) = processor else { return Ok(()) };
    let bad = |m: String| Error::config(path, "post_processor", m);
    match p.get("type").and_then(|t| t.as_str()) {
        Some("TemplateProcessing") => {
            let tokens = p.get("special_tokens").and_then(|t| t.as_object());
            for (name, t) in tokens.into_iter().flatten() {
                let len = |k: &str| t.get(k).and_then(|v| v.as_array()).map(Vec::len);
                if len("ids") != len("tokens") {
                    return Err(bad(format!(
                        "special token `{name}` has ids and tokens of different lengths"
                    )));
                }
            }
            let pieces = ["single", "pair"]
                .into_iter()
                .filter_map(|k| p.get(k).and_then(|v| v.as_array()))
                .flatten();
            for piece in pieces {
                if let Some(id) = piece
                    .get("SpecialToken")
                    .and_then(|s| s.get("id"))
                    .and_then(|i| i.as_str())
                    && !tokens.is_some_and(|t| t.contains_key(id))
                {
                    return Err(bad(format!(
                        "the template names special token `{id}`, which special_tokens does not define"
                    )));
                }
            }
            Ok(())
        }
        Some("Sequence") => p
            .get("processors")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .try_for_each(|q| check_template_processing(path, Some(q))),
        _ => Ok(()),
    }
}

/// transformers' `{% generation %}` ... `{% endgeneration %}` blocks (which only mark the assistant's
/// tokens) render their body as it is: they become `{% if true %}` ... `{% endif %}`, keeping any
/// whitespace control of the tags.
fn rewrite_generation_blocks(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        // The closing `%}` after the opening `{%`: in `{%}` the two overlap.
        let Some(end) = tag[2..].find("%}").map(|e| e + 2) else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (open, body, close) = split_whitespace_control(inner);
        let replaced = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replaced {
            Some(r) => out.push_str(&format!("{{%{open} {r} {close}%}}")),
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// A tag's inside split into its whitespace-control marks (`-` or `+`) and its body.
fn split_whitespace_control(inner: &str) -> (&str, &str, &str) {
    let open = if inner.starts_with(['-', '+']) { &inner[..1] } else { "" };
    let inner = &inner[open.len()..];
    let close = if inner.ends_with(['-', '+']) {
        &inner[inner.len() - 1..]
    } else {
        ""
    };
    (open, &inner[..inner.len() - close.len()], close)
}

/// The most instructions a chat template may run for one rendering (minijinja's fuel). Real
/// templates take a few hundred a message; a template that never ends (or nests loops over huge
/// ranges) is stopped with an error instead of holding hwcov forever.
pub const CHAT_TEMPLATE_FUEL: u64 = 5_000_000;

/// Renders a chat template with the settings of transformers' `_compile_jinja_template`.
fn render_chat_template(template: &str, ctx: serde_json::Value) -> std::result::Result<String, String> {
    let template = rewrite_generation_blocks(template);
    let mut env = minijinja::Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| e.to_string())?;
    env.set_syntax(syntax);
    env.set_fuel(Some(CHAT_TEMPLATE_FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
        },
    );
    env.add_function("strftime_now", |format: String| strftime_now(&format));
    let tmpl = env.template_from_str(&template).map_err(|e| e.to_string())?;
    tmpl.render(minijinja::value::Serde(ctx)).map_err(|e| e.to_string())
}

/// `strftime_now` for chat templates that print today's date: %Y %m %d %B %b %H %M %S and %%.
fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('B') => out.push_str(name),
            Some('b') => out.push_str(&name[..3]),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwcov_core::IoFile;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
    }

    /// The BERT fixture's inputs are what transformers' tokenizer made of the texts in its meta.json:
    /// a pair, and a single sentence padded to its length.
    #[test]
    fn bert_tokens_match_transformers() {
        let tok = TextTokenizer::from_dir(&fixture("bert")).unwrap();
        let meta = read_json(&fixture("bert").join("meta.json")).unwrap();
        let texts: Vec<Vec<String>> = serde_json::from_value(meta["texts"].clone()).unwrap();
        let batch: Vec<TextInput> = texts
            .iter()
            .map(|t| match t.as_slice() {
                [a] => TextInput::Single(a),
                [a, b] => TextInput::Pair(a, b),
                _ => panic!("meta.json texts hold one or two strings each"),
            })
            .collect();
        let got = tok.encode(&batch).unwrap();
        let io = IoFile::read(&fixture("bert").join("io.safetensors")).unwrap();
        for name in ["input_ids", "attention_mask", "token_type_ids"] {
            assert_eq!(got[name], io.inputs[name], "{name}");
        }
    }

    /// The decoder fixtures' prompts are what transformers' tokenizer made of their texts, padded
    /// at the left; decoding gives the texts back.
    #[test]
    fn decoder_prompts_match_transformers_and_decode_back() {
        for name in ["llama", "opt", "qwen2", "qwen3", "t5"] {
            let tok = TextTokenizer::from_dir(&fixture(name)).unwrap();
            let meta = read_json(&fixture(name).join("meta.json")).unwrap();
            let texts: Vec<String> = serde_json::from_value(meta["texts"].clone()).unwrap();
            let rows: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode_ids(t, true).unwrap()).collect();
            let left = name != "t5";
            let got = pad_batch(&rows, tok.pad_token_id().unwrap(), left).unwrap();
            let io = IoFile::read(&fixture(name).join("io.safetensors")).unwrap();
            for input in ["input_ids", "attention_mask"] {
                assert_eq!(got[input], io.inputs[input], "{name} {input}");
            }
            for (t, r) in texts.iter().zip(&rows) {
                assert_eq!(&tok.decode(r, true).unwrap(), t, "{name}");
            }
        }
    }

    /// The Qwen fixtures' chat template, rendered as transformers renders it:
    /// `tok.apply_chat_template([{"role": "user", "content": "Hi there"}], tokenize=False,
    /// add_generation_prompt=True)`.
    #[test]
    fn chat_template_renders_as_transformers() {
        let tok = TextTokenizer::from_dir(&fixture("qwen2")).unwrap();
        let messages = [ChatMessage {
            role: "user".into(),
            content: "Hi there".into(),
        }];
        let got = tok.apply_chat_template(&messages, true).unwrap();
        assert_eq!(got, "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
        assert!(
            TextTokenizer::from_dir(&fixture("llama"))
                .unwrap()
                .chat_template()
                .is_none()
        );
    }

    #[test]
    fn chat_template_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(fixture("qwen2").join(f), dir.path().join(f)).unwrap();
        }
        std::fs::write(
            dir.path().join("chat_template.jinja"),
            "{{ raise_exception('Only user and assistant roles are supported') }}",
        )
        .unwrap();
        let tok = TextTokenizer::from_dir(dir.path()).unwrap();
        let err = tok.apply_chat_template(&[], true).unwrap_err().to_string();
        assert!(
            err.contains("chat_template") && err.contains("Only user and assistant"),
            "{err}"
        );
    }

    #[test]
    fn generation_blocks_render_their_body() {
        assert_eq!(
            rewrite_generation_blocks("a{% generation %}b{%- endgeneration -%} c{% if x %}"),
            "a{% if true %}b{%- endif -%} c{% if x %}"
        );
        // transformers renders this as "hix": trim_blocks eats the newline after the end tag.
        let out = render_chat_template(
            "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}\n{% endfor %}x",
            serde_json::json!({"messages": [{"content": "hi"}]}),
        )
        .unwrap();
        assert_eq!(out, "hix");
    }

    #[test]
    fn clean_up_matches_transformers() {
        assert_eq!(
            clean_up_tokenization("Hello , world ! I 'm here ."),
            "Hello, world! I'm here."
        );
    }

    #[test]
    fn missing_tokenizer_names_the_file() {
        let err = TextTokenizer::from_dir(&fixture("vit")).err().unwrap().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }
}
