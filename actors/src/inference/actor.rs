//! The InferenceActor: the node's door to its models. It owns one [`WorkerPool`] per configured
//! model (embeddings today), checks requests against the configured limits before they reach a
//! worker, and answers [`Embed`] and [`Status`]. With no model configured it answers 503 naming
//! the setting; everything else in the node works as before.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler, Message, MessageResult, ResponseFuture};
use serde::Serialize;

use super::config::InferenceConfig;
use super::metrics::InferenceMetrics;
use super::process::Launch;
use super::protocol::{Reply, Request};
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

#[derive(Clone, Debug, Serialize)]
pub struct InferenceStatus {
    pub embedding: Option<EmbeddingStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EmbeddingStatus {
    pub model_id: String,
    pub model_path: String,
    #[serde(flatten)]
    pub pool: PoolStatus,
}

struct EmbeddingPool {
    pool: WorkerPool,
    path: String,
}

pub struct InferenceActor {
    config: InferenceConfig,
    embedding: Option<Arc<EmbeddingPool>>,
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
        let embedding = if config.embedding_model.as_os_str().is_empty() {
            None
        } else {
            let path = &config.embedding_model;
            let launch = Launch {
                program: program.to_path_buf(),
                args: vec![
                    "inference-worker".into(),
                    "--model".into(),
                    path.clone().into_os_string(),
                    "--threads".into(),
                    config.threads_per_worker.to_string().into(),
                    "--batch-tokens".into(),
                    config.batch_tokens.to_string().into(),
                ],
                start_timeout: START_TIMEOUT,
            };
            let breaker = Breaker::new(
                "inference_embedding",
                BreakerConfig {
                    failure_threshold: config.breaker_failures,
                    open_for: Duration::from_millis(config.breaker_open_ms),
                    ..BreakerConfig::default()
                },
                breaker_metrics,
            );
            let pool = WorkerPool::start(
                PoolConfig {
                    pool: "embedding",
                    launch,
                    workers_min: config.workers_min,
                    workers_max: config.workers_max,
                    request_timeout: config.request_timeout(),
                    idle_retire: Duration::from_millis(config.idle_retire_ms),
                    queue_limit: config.queue_limit,
                },
                Arc::new(breaker),
                metrics,
            );
            Some(Arc::new(EmbeddingPool { pool, path: path.display().to_string() }))
        };
        Ok(InferenceActor { config, embedding })
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
        if let Some(e) = &self.embedding {
            e.pool.close();
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

impl Handler<Status> for InferenceActor {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _: Status, _: &mut Self::Context) -> Self::Result {
        MessageResult(InferenceStatus {
            embedding: self.embedding.as_ref().map(|e| EmbeddingStatus {
                model_id: e.pool.model().map(|m| format!("{}@{}", m.name, m.digest)).unwrap_or_default(),
                model_path: e.path.clone(),
                pool: e.pool.status(),
            }),
        })
    }
}
