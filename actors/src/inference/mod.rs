//! Inference: llama.cpp models run in worker processes the node supervises (`supervisor`,
//! `process`), speaking length-prefixed msgpack frames over their stdin/stdout (`protocol`).
//! The worker side (`worker`, with `embedder` and `generator`, behind the `inference` feature)
//! loads one GGUF model; the `InferenceActor` (`actor`) owns the pools and answers embedding,
//! generation and scoring requests. What the node asks a chat model for lives beside it: the
//! extraction prompt and grammar (`extract`), classification (`classify`) and the check of a
//! user's grammar (`grammar`). llama.cpp aborts the process on some inputs, and an abort cannot
//! be caught: out of process, it costs one request.

pub mod actor;
pub mod classify;
pub mod config;
#[cfg(feature = "inference")]
pub mod embedder;
pub mod extract;
#[cfg(feature = "inference")]
pub mod generator;
pub mod grammar;
pub mod metrics;
pub mod process;
pub mod protocol;
pub mod supervisor;
pub mod tasks;
#[cfg(feature = "inference")]
pub mod worker;

pub use actor::{Embed, EmbedReply, GenerateText, InferenceActor, InferenceStatus, Status};
pub use config::InferenceConfig;
pub use tasks::{Classification, ClassifyText, ExtractFacts, Extraction};
