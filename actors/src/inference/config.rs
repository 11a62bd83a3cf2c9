//! `[inference]`: which models the node runs and how its worker pool behaves. Read by the node
//! at start (the file, `COGRAFT__INFERENCE__*`), checked by [`InferenceConfig::validate`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// A GGUF sentence-embedding model; empty = `/v1/embed` answers 503 naming this setting.
    pub embedding_model: PathBuf,
    /// A GGUF chat model; empty = `/v1/generate`, `/v1/extract` and `/v1/classify` answer 503.
    pub generation_model: PathBuf,
    /// Worker processes kept running per model, and the most the pool grows to under load.
    pub workers_min: usize,
    pub workers_max: usize,
    /// llama.cpp threads in each worker.
    pub threads_per_worker: usize,
    /// Tokens one llama.cpp batch holds; texts are packed into batches up to it. At least the
    /// model's context (a non-causal sequence must fit one batch).
    pub batch_tokens: usize,
    /// A request a worker has not answered by then fails (503) and the worker is restarted.
    pub request_timeout_ms: u64,
    /// A worker above `workers_min` idle this long exits.
    pub idle_retire_ms: u64,
    /// Requests waiting for a worker; more answer 503 overloaded.
    pub queue_limit: usize,
    /// Texts per `/v1/embed` request, and bytes per text.
    pub max_texts: usize,
    pub max_text_bytes: usize,
    /// A generation worker's context, in tokens (prompt and output together).
    pub context_tokens: usize,
    /// Bytes of a prompt or of a text to extract from or classify.
    pub max_prompt_bytes: usize,
    /// Tokens one generation may ask for.
    pub max_generate_tokens: u32,
    /// Bytes of a user's GBNF grammar.
    pub max_grammar_bytes: usize,
    /// Labels `/v1/classify` uses when a request gives none, and the most one request may give.
    pub classify_labels: Vec<String>,
    pub max_labels: usize,
    /// Sources kept in an extracted link's provenance list.
    pub provenance_limit: usize,
    /// Worker crashes or timeouts in a row that open the pool's circuit breaker, and how long
    /// it stays open.
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
}

/// The smallest generation context: the extraction prompt (~350 tokens) and its longest answer
/// ([`super::extract::MAX_ANSWER_BYTES`] tokens) fit.
const MIN_CONTEXT_TOKENS: usize = 1024;

impl InferenceConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("workers_min", self.workers_min as u64),
            ("workers_max", self.workers_max as u64),
            ("threads_per_worker", self.threads_per_worker as u64),
            ("request_timeout_ms", self.request_timeout_ms),
            ("idle_retire_ms", self.idle_retire_ms),
            ("queue_limit", self.queue_limit as u64),
            ("max_texts", self.max_texts as u64),
            ("max_text_bytes", self.max_text_bytes as u64),
            ("breaker_failures", u64::from(self.breaker_failures)),
            ("breaker_open_ms", self.breaker_open_ms),
            ("context_tokens", self.context_tokens as u64),
            ("max_prompt_bytes", self.max_prompt_bytes as u64),
            ("max_generate_tokens", u64::from(self.max_generate_tokens)),
            ("max_grammar_bytes", self.max_grammar_bytes as u64),
            ("max_labels", self.max_labels as u64),
            ("provenance_limit", self.provenance_limit as u64),
        ] {
            if v == 0 {
                return Err(format!("inference.{key} must be positive"));
            }
        }
        if self.workers_max < self.workers_min {
            return Err(format!(
                "inference.workers_max ({}) must be at least inference.workers_min ({})",
                self.workers_max, self.workers_min
            ));
        }
        // A request travels to its worker as one frame.
        let request_bytes = self.max_texts.saturating_mul(self.max_text_bytes + 16);
        if request_bytes > super::protocol::MAX_FRAME_BYTES / 2 {
            return Err(format!(
                "inference.max_texts x inference.max_text_bytes ({request_bytes} bytes) must stay under {} \
                 (half the worker frame limit)",
                super::protocol::MAX_FRAME_BYTES / 2
            ));
        }
        if self.batch_tokens < 64 {
            return Err("inference.batch_tokens must be at least 64".into());
        }
        if self.context_tokens < MIN_CONTEXT_TOKENS {
            return Err(format!(
                "inference.context_tokens must be at least {MIN_CONTEXT_TOKENS}: a fact extraction's prompt \
                 and longest answer need about 900"
            ));
        }
        if self.provenance_limit > crate::command::MAX_EVIDENCE_ENTRIES as usize {
            return Err(format!(
                "inference.provenance_limit must be at most {}",
                crate::command::MAX_EVIDENCE_ENTRIES
            ));
        }
        if self.max_generate_tokens as usize >= self.context_tokens {
            return Err(format!(
                "inference.max_generate_tokens ({}) must be below inference.context_tokens ({}): the \
                 prompt needs room too",
                self.max_generate_tokens, self.context_tokens
            ));
        }
        let prompt_frame = self.max_prompt_bytes.saturating_add(self.max_grammar_bytes).saturating_mul(2);
        if prompt_frame > super::protocol::MAX_FRAME_BYTES / 2 {
            return Err(
                "inference.max_prompt_bytes + inference.max_grammar_bytes must stay under 16 MiB".into()
            );
        }
        if !self.classify_labels.is_empty() {
            super::classify::check_labels(&self.classify_labels, self.max_labels)
                .map_err(|e| format!("inference.classify_labels: {e}"))?;
        }
        model_file("embedding_model", &self.embedding_model, "models/all-minilm-l6-v2.gguf")?;
        model_file("generation_model", &self.generation_model, "models/smollm2-135m-instruct-q4_1.gguf")
    }
}

/// An empty path is "off"; a set one must be a file this binary can load.
fn model_file(key: &str, path: &std::path::Path, made_by_make: &str) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    if !cfg!(feature = "inference") {
        return Err(format!(
            "inference.{key} is set ({}), but this binary was built without the `inference` feature; \
             rebuild with `cargo build --features inference` (make does), or leave the setting empty",
            path.display()
        ));
    }
    if !path.is_file() {
        return Err(format!(
            "inference.{key} {} is not a file; `make models` writes {made_by_make}",
            path.display()
        ));
    }
    Ok(())
}
