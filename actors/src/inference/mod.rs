//! Inference: llama.cpp models run in worker processes the node supervises (`supervisor`,
//! `process`), speaking length-prefixed msgpack frames over their stdin/stdout (`protocol`).
//! The worker side (`worker`, behind the `inference` feature) loads one GGUF model; the
//! `InferenceActor` (`actor`) owns the pools and answers embedding requests. llama.cpp aborts the
//! process on some inputs, and an abort cannot be caught: out of process, it costs one request.

pub mod actor;
pub mod config;
pub mod metrics;
pub mod process;
pub mod protocol;
pub mod supervisor;
#[cfg(feature = "inference")]
pub mod worker;

pub use actor::{Embed, EmbedReply, InferenceActor, InferenceStatus, Status};
pub use config::InferenceConfig;
