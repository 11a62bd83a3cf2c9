//! The embedding side of an inference worker: one llama.cpp context over a sentence-embedding
//! model (BERT-style, non-causal), texts packed into batches, mean-pooled, L2-normalised.

use std::num::NonZeroU32;

use anyhow::{anyhow, Context};
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::protocol::{Embeddings, ModelInfo};
use super::worker::WorkerArgs;

/// Sequences one batch holds at most (llama.cpp sizes its output buffers by it).
const MAX_SEQUENCES: usize = 64;

/// One llama.cpp context over an embedding model, and the batching of texts into it.
pub struct Embedder<'m> {
    model: &'m LlamaModel,
    context: LlamaContext<'m>,
    pub info: ModelInfo,
    batch_tokens: usize,
}

impl<'m> Embedder<'m> {
    pub fn new(
        backend: &LlamaBackend,
        model: &'m LlamaModel,
        args: &WorkerArgs,
        digest: String,
    ) -> anyhow::Result<Self> {
        let max_tokens = model.n_ctx_train() as usize;
        if max_tokens == 0 {
            return Err(anyhow!("{}: the model declares no context length", args.model.display()));
        }
        // A non-causal sequence must fit one ubatch: batch, ubatch and context are one size.
        let batch_tokens = args.batch_tokens.max(max_tokens);
        let tokens = u32::try_from(batch_tokens).context("inference.batch_tokens is too large")?;
        let threads = i32::try_from(args.threads).context("inference.threads_per_worker is too large")?;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(tokens))
            .with_n_batch(tokens)
            .with_n_ubatch(tokens)
            .with_n_seq_max(MAX_SEQUENCES as u32)
            // Unsplit: llama.cpp would otherwise pad a per-sequence context of n_ctx / n_seq_max up to
            // 256 tokens and grow n_ctx to 64 of them (BERT keeps no cache; only sizes change).
            .with_kv_unified(true)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean);
        let context = model.new_context(backend, params).context("creating the llama.cpp context")?;
        let name = model.meta_val_str("general.name").unwrap_or_else(|_| "unnamed".to_string());
        let dim = usize::try_from(model.n_embd()).context("the model's embedding width")?;
        let info = ModelInfo { name, digest, dim, max_tokens };
        Ok(Embedder { model, context, info, batch_tokens })
    }

    /// The text's tokens with the model's special tokens, cut to its context (keeping the
    /// closing separator, as sentence-transformers does), and whether it was cut.
    fn tokens(&self, text: &str) -> anyhow::Result<(Vec<LlamaToken>, bool)> {
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(text.as_bytes(), true, false);
        let max = self.info.max_tokens;
        if tokens.len() <= max {
            return Ok((tokens, false));
        }
        let last = *tokens.last().ok_or_else(|| anyhow!("no tokens"))?;
        tokens.truncate(max - 1);
        tokens.push(last);
        Ok((tokens, true))
    }

    /// L2-normalised embeddings of `texts`, in order, packed into as few batches as fit.
    pub fn embed(&mut self, texts: &[String]) -> anyhow::Result<Embeddings> {
        let mut out = Embeddings {
            model: format!("{}@{}", self.info.name, self.info.digest),
            vectors: Vec::with_capacity(texts.len()),
            tokens: Vec::with_capacity(texts.len()),
            truncated: Vec::with_capacity(texts.len()),
        };
        let mut pending: Vec<Vec<LlamaToken>> = Vec::new();
        let mut pending_tokens = 0;
        for text in texts {
            let (tokens, truncated) = self.tokens(text)?;
            out.tokens.push(tokens.len() as u32);
            out.truncated.push(truncated);
            if pending_tokens + tokens.len() > self.batch_tokens || pending.len() == MAX_SEQUENCES {
                self.run_batch(&pending, &mut out.vectors)?;
                pending.clear();
                pending_tokens = 0;
            }
            pending_tokens += tokens.len();
            pending.push(tokens);
        }
        if !pending.is_empty() {
            self.run_batch(&pending, &mut out.vectors)?;
        }
        Ok(out)
    }

    fn run_batch(
        &mut self,
        sequences: &[Vec<LlamaToken>],
        vectors: &mut Vec<Vec<f32>>,
    ) -> anyhow::Result<()> {
        let total: usize = sequences.iter().map(Vec::len).sum();
        // The second argument is sequence ids per token: each token belongs to one.
        let mut batch = LlamaBatch::new(total, 1);
        for (seq, tokens) in sequences.iter().enumerate() {
            batch.add_sequence(tokens, seq as i32, true).context("filling the batch")?;
        }
        self.context.encode(&mut batch).context("llama.cpp encode")?;
        for seq in 0..sequences.len() {
            let pooled = self
                .context
                .embeddings_seq_ith(seq as i32)
                .map_err(|_| anyhow!("llama.cpp gave no pooled embedding for sequence {seq}"))?;
            vectors.push(normalised(pooled));
        }
        Ok(())
    }
}

/// `v / |v|` (a zero vector stays zero).
fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
}
