//! The InferenceActor: the node's door to its models. It owns one [`WorkerPool`] per configured
//! model (embedding, generation), checks requests against the configured limits before they
//! reach a worker, and answers [`Embed`], [`GenerateText`] and [`Status`] (and, in `tasks`,
//! `ExtractFacts` and `ClassifyText`). With a model not configured, its requests answer 503 naming the setting;
//! everything else in the node works as before.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler, Message, MessageResult, ResponseFuture};
use serde::Serialize;

use super::config::InferenceConfig;
use super::metrics::InferenceMetrics;
use super::process::Launch;
use super::protocol::{Generate, Generation, Prompt, Reply, Request, WorkerKind};
use super::supervisor::{PoolConfig, PoolStatus, WorkerPool};
use crate::resilience::{Breaker, BreakerConfig, BreakerMetrics};
use crate::{Error, Result};

/// How long a worker may take to load its model.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Sentence embeddings of `texts`, in order.
#[derive(Message)]
#[rtype(result = "Result<EmbedReply>")]
pub struct Embed {
    pub texts: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EmbedReply {
    pub embeddings: Vec<Vec<f32>>,
    /// The model's name and the digest of the file its worker loaded: vectors of different ids
    /// never mix.
    pub model: String,
    pub dim: usize,
    /// Texts cut to the model's context, and every text's token count.
    pub truncated: Vec<bool>,
    pub tokens: Vec<u32>,
}

/// The pools' state, for `/admin/inference`.
#[derive(Message)]
#[rtype(result = "InferenceStatus")]
pub struct Status;

/// A generation: checked against the limits here, run by a generation worker.
#[derive(Message)]
#[rtype(result = "Result<Generation>")]
pub struct GenerateText(pub Generate);

#[derive(Clone, Debug, Serialize)]
pub struct InferenceStatus {
    pub embedding: Option<ModelStatus>,
    pub generation: Option<ModelStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelStatus {
    pub model_id: String,
    pub model_path: String,
    #[serde(flatten)]
    pub pool: PoolStatus,
}

pub struct ModelPool {
    pub(super) pool: WorkerPool,
    path: String,
}

impl ModelPool {
    fn status(&self) -> ModelStatus {
        ModelStatus {
            model_id: self.pool.model().map(|m| format!("{}@{}", m.name, m.digest)).unwrap_or_default(),
            model_path: self.path.clone(),
            pool: self.pool.status(),
        }
    }
}

pub struct InferenceActor {
    pub(super) config: InferenceConfig,
    embedding: Option<Arc<ModelPool>>,
    generation: Option<Arc<ModelPool>>,
    pub(super) metrics: InferenceMetrics,
}

impl InferenceActor {
    /// Starts the configured pools; `program` is this binary (workers are `program
    /// inference-worker ...`). Call inside the node's actix system.
    pub fn new(
        config: InferenceConfig,
        program: &Path,
        breaker_metrics: BreakerMetrics,
        metrics: InferenceMetrics,
    ) -> Result<InferenceActor> {
        let start = |kind: WorkerKind, path: &Path| {
            (!path.as_os_str().is_empty())
                .then(|| Arc::new(start_pool(&config, kind, path, program, &breaker_metrics, &metrics)))
        };
        let embedding = start(WorkerKind::Embedding, &config.embedding_model);
        let generation = start(WorkerKind::Generation, &config.generation_model);
        Ok(InferenceActor { config, embedding, generation, metrics })
    }

    fn check(&self, texts: &[String]) -> Result<()> {
        if texts.is_empty() {
            return Err(Error::Invalid("texts must hold at least one text".into()));
        }
        if texts.len() > self.config.max_texts {
            return Err(Error::LimitExceeded {
                what: format!("{} texts in one request", texts.len()),
                limit: self.config.max_texts,
                setting: "inference.max_texts",
            });
        }
        for (i, text) in texts.iter().enumerate() {
            if text.trim().is_empty() {
                return Err(Error::Invalid(format!("texts[{i}] is empty: give each text some words")));
            }
            if text.len() > self.config.max_text_bytes {
                return Err(Error::LimitExceeded {
                    what: format!("texts[{i}] has {} bytes", text.len()),
                    limit: self.config.max_text_bytes,
                    setting: "inference.max_text_bytes",
                });
            }
        }
        Ok(())
    }
}

impl Actor for InferenceActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        for pool in self.embedding.iter().chain(&self.generation) {
            pool.pool.close();
        }
    }
}

impl Handler<Embed> for InferenceActor {
    type Result = ResponseFuture<Result<EmbedReply>>;

    fn handle(&mut self, msg: Embed, _: &mut Self::Context) -> Self::Result {
        let checked = self.check(&msg.texts);
        let embedding = self.embedding.clone();
        Box::pin(async move {
            let embedding = embedding.ok_or_else(|| Error::Unavailable {
                what: "no embedding model is configured: set inference.embedding_model \
                       (COGRAFT__INFERENCE__EMBEDDING_MODEL) to a GGUF sentence-embedding model; \
                       `make models` writes models/all-minilm-l6-v2.gguf"
                    .into(),
                retry_after_s: 60,
            })?;
            checked?;
            let count = msg.texts.len();
            let reply = embedding.pool.call(Request::Embed { texts: msg.texts }).await?;
            match reply {
                Reply::Embeddings(e) if e.vectors.len() == count => Ok(EmbedReply {
                    dim: e.vectors.first().map_or(0, Vec::len),
                    embeddings: e.vectors,
                    model: e.model,
                    truncated: e.truncated,
                    tokens: e.tokens,
                }),
                // The input was checked and tokenizing cannot fail: this is llama.cpp's failure.
                Reply::Failed { detail } => Err(Error::Unavailable {
                    what: format!("the embedding model failed on this request: {detail}"),
                    retry_after_s: 1,
                }),
                other => Err(Error::Unavailable {
                    what: format!("the embedding worker answered {count} texts with {other:?}"),
                    retry_after_s: 1,
                }),
            }
        })
    }
}

/// Stop strings one generation may give, and bytes of each.
const MAX_STOPS: usize = 8;
const MAX_STOP_BYTES: usize = 64;

impl InferenceActor {
    pub(super) fn generation_pool(&self) -> Result<Arc<ModelPool>> {
        self.generation.clone().ok_or_else(|| Error::Unavailable {
            what: "no generation model is configured: set inference.generation_model \
                   (COGRAFT__INFERENCE__GENERATION_MODEL) to a GGUF chat model; `make models` writes \
                   models/smollm2-135m-instruct-q4_1.gguf"
                .into(),
            retry_after_s: 60,
        })
    }

    /// A text to extract from or classify: not blank, within `inference.max_prompt_bytes`.
    pub(super) fn check_text(&self, text: &str) -> Result<()> {
        if text.trim().is_empty() {
            return Err(Error::Invalid("text is empty: give it some words".into()));
        }
        if text.len() > self.config.max_prompt_bytes {
            return Err(Error::LimitExceeded {
                what: format!("a text of {} bytes", text.len()),
                limit: self.config.max_prompt_bytes,
                setting: "inference.max_prompt_bytes",
            });
        }
        if text.contains('\0') {
            return Err(Error::Invalid("the text holds a NUL character".into()));
        }
        Ok(())
    }

    fn check_prompt(&self, prompt: &Prompt) -> Result<()> {
        if prompt.user.trim().is_empty() {
            return Err(Error::Invalid("the prompt is empty: give it some words".into()));
        }
        let bytes = prompt.user.len() + prompt.system.as_ref().map_or(0, String::len);
        if bytes > self.config.max_prompt_bytes {
            return Err(Error::LimitExceeded {
                what: format!("a prompt of {bytes} bytes"),
                limit: self.config.max_prompt_bytes,
                setting: "inference.max_prompt_bytes",
            });
        }
        if prompt.user.contains('\0') || prompt.system.as_ref().is_some_and(|s| s.contains('\0')) {
            return Err(Error::Invalid("the prompt holds a NUL character".into()));
        }
        Ok(())
    }

    fn check_generate(&self, g: &Generate) -> Result<()> {
        self.check_prompt(&g.prompt)?;
        if g.max_tokens == 0 {
            return Err(Error::Invalid("max_tokens must be at least 1".into()));
        }
        if g.max_tokens > self.config.max_generate_tokens {
            return Err(Error::LimitExceeded {
                what: format!("max_tokens {}", g.max_tokens),
                limit: self.config.max_generate_tokens as usize,
                setting: "inference.max_generate_tokens",
            });
        }
        if !(g.temperature.is_finite() && (0.0..=2.0).contains(&g.temperature)) {
            return Err(Error::Invalid(format!("temperature must be in [0, 2], got {}", g.temperature)));
        }
        if !(g.top_p.is_finite() && g.top_p > 0.0 && g.top_p <= 1.0) {
            return Err(Error::Invalid(format!("top_p must be in (0, 1], got {}", g.top_p)));
        }
        if !(g.repeat_penalty.is_finite() && (1.0..=2.0).contains(&g.repeat_penalty)) {
            return Err(Error::Invalid(format!(
                "repeat_penalty must be in [1, 2], got {}",
                g.repeat_penalty
            )));
        }
        if g.stop.len() > MAX_STOPS {
            return Err(Error::Invalid(format!("at most {MAX_STOPS} stop strings, got {}", g.stop.len())));
        }
        if let Some(i) = g.stop.iter().position(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
            return Err(Error::Invalid(format!("stop[{i}] must be 1..={MAX_STOP_BYTES} bytes")));
        }
        if let Some(grammar) = &g.grammar {
            super::grammar::check(grammar, self.config.max_grammar_bytes)
                .map_err(|e| Error::Invalid(format!("grammar: {e}")))?;
        }
        Ok(())
    }
}

/// What a generation worker's reply means for the caller.
pub(super) fn model_answer<T>(reply: Reply, pick: impl FnOnce(Reply) -> Option<T>) -> Result<T> {
    match reply {
        Reply::Rejected { detail } => Err(Error::Invalid(detail)),
        Reply::Failed { detail } => Err(Error::Unavailable {
            what: format!("the generation model failed on this request: {detail}"),
            retry_after_s: 1,
        }),
        other => {
            let shown = format!("{other:?}");
            pick(other).ok_or_else(|| Error::Internal(format!("the generation worker answered {shown}")))
        }
    }
}

/// Runs one generation on the pool and records its speed.
pub(super) async fn generate(
    pool: &ModelPool,
    metrics: &InferenceMetrics,
    request: Generate,
) -> Result<Generation> {
    let reply = pool.pool.call(Request::Generate(request)).await?;
    let generation = model_answer(reply, |r| match r {
        Reply::Generated(g) => Some(g),
        _ => None,
    })?;
    metrics.generated_tokens.inc_by(u64::from(generation.tokens));
    if generation.tokens > 0 {
        metrics.first_token_seconds.observe(generation.first_token_ms / 1e3);
    }
    if generation.tokens > 1 {
        metrics.tokens_per_second.observe(generation.tokens_per_second());
    }
    Ok(generation)
}

impl Handler<GenerateText> for InferenceActor {
    type Result = ResponseFuture<Result<Generation>>;

    fn handle(&mut self, msg: GenerateText, _: &mut Self::Context) -> Self::Result {
        let pool = self.generation_pool();
        let metrics = self.metrics.clone();
        let checked = self.check_generate(&msg.0);
        Box::pin(async move {
            let pool = pool?;
            checked?;
            generate(&pool, &metrics, msg.0).await
        })
    }
}

impl Handler<Status> for InferenceActor {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _: Status, _: &mut Self::Context) -> Self::Result {
        MessageResult(InferenceStatus {
            embedding: self.embedding.as_ref().map(|p| p.status()),
            generation: self.generation.as_ref().map(|p| p.status()),
        })
    }
}

/// Starts the worker pool of one model, with its own circuit breaker.
fn start_pool(
    config: &InferenceConfig,
    kind: WorkerKind,
    path: &Path,
    program: &Path,
    breaker_metrics: &BreakerMetrics,
    metrics: &InferenceMetrics,
) -> ModelPool {
    let arg = |s: String| std::ffi::OsString::from(s);
    let launch = Launch {
        program: program.to_path_buf(),
        args: vec![
            arg("inference-worker".into()),
            arg("--model".into()),
            path.as_os_str().to_owned(),
            arg("--kind".into()),
            arg(kind.as_str().into()),
            arg("--threads".into()),
            arg(config.threads_per_worker.to_string()),
            arg("--batch-tokens".into()),
            arg(config.batch_tokens.to_string()),
            arg("--context-tokens".into()),
            arg(config.context_tokens.to_string()),
        ],
        start_timeout: START_TIMEOUT,
    };
    let component = match kind {
        WorkerKind::Embedding => "inference_embedding",
        WorkerKind::Generation => "inference_generation",
    };
    let breaker = Breaker::new(
        component,
        BreakerConfig {
            failure_threshold: config.breaker_failures,
            open_for: Duration::from_millis(config.breaker_open_ms),
            ..BreakerConfig::default()
        },
        breaker_metrics.clone(),
    );
    let pool = WorkerPool::start(
        PoolConfig {
            pool: kind.as_str(),
            launch,
            workers_min: config.workers_min,
            workers_max: config.workers_max,
            request_timeout: config.request_timeout(),
            idle_retire: Duration::from_millis(config.idle_retire_ms),
            queue_limit: config.queue_limit,
        },
        Arc::new(breaker),
        metrics.clone(),
    );
    ModelPool { pool, path: path.display().to_string() }
}
