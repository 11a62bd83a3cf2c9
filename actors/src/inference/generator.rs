//! The generation side of an inference worker: one llama.cpp context over a causal chat model,
//! used one request at a time. `generate` samples a continuation (optionally under a GBNF
//! grammar); `score` measures how likely each of a few continuations is. Grammar sampling is where
//! llama.cpp aborts, so the grammar is built before any decoding (a grammar its parser refuses is
//! the caller's error), the grammar comes first in the sampler chain, each token is accepted once
//! through the exception-catching `try_accept` (not `sample`, which accepts inside C++ and aborts
//! when the grammar has no way on), and generation stops at the end of text and at `max_tokens`.
//! What still aborts costs one request: this is its own process.

use std::num::NonZeroU32;
use std::time::Instant;

use anyhow::{anyhow, Context};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use super::protocol::{Finish, Generate, Generation, ModelInfo, Prompt, Reply, Scores};
use super::worker::WorkerArgs;

pub struct Generator<'m> {
    model: &'m LlamaModel,
    context: LlamaContext<'m>,
    pub info: ModelInfo,
    template: Option<LlamaChatTemplate>,
    batch_tokens: usize,
    context_tokens: usize,
    /// What ends a turn: the vocabulary's end-of-turn token, else its end-of-sequence token.
    end_of_turn: LlamaToken,
    /// Control tokens that do not end generation (`<|im_start|>`, ...): kept out of grammar
    /// sampling, where the grammar would match their text but the output shows them empty.
    control: Vec<LlamaLogitBias>,
}

/// Why a request cannot be served: the caller's input (`Rejected`) or the model (`Failed`).
enum Problem {
    Input(String),
    Model(anyhow::Error),
}

impl From<anyhow::Error> for Problem {
    fn from(e: anyhow::Error) -> Self {
        Problem::Model(e)
    }
}

impl Problem {
    fn reply(self) -> Reply {
        match self {
            Problem::Input(detail) => Reply::Rejected { detail },
            Problem::Model(e) => Reply::Failed { detail: format!("{e:#}") },
        }
    }
}

impl<'m> Generator<'m> {
    pub fn new(
        backend: &LlamaBackend,
        model: &'m LlamaModel,
        args: &WorkerArgs,
        digest: String,
    ) -> anyhow::Result<Self> {
        let trained = model.n_ctx_train() as usize;
        let context_tokens =
            if trained == 0 { args.context_tokens } else { args.context_tokens.min(trained) };
        let batch_tokens = args.batch_tokens.min(context_tokens).max(1);
        let threads = i32::try_from(args.threads).context("inference.threads_per_worker is too large")?;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(u32::try_from(context_tokens).context("inference.context_tokens")?))
            .with_n_batch(batch_tokens as u32)
            .with_n_ubatch(batch_tokens as u32)
            .with_n_seq_max(1)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let context = model.new_context(backend, params).context("creating the llama.cpp context")?;
        let name = model.meta_val_str("general.name").unwrap_or_else(|_| "unnamed".to_string());
        let dim = usize::try_from(model.n_embd()).context("the model's width")?;
        let vocab = model.vocab();
        let eot = vocab.eot();
        let end_of_turn = if eot.0 >= 0 { eot } else { vocab.eos() };
        if end_of_turn.0 < 0 {
            return Err(anyhow!(
                "{}: the model has no end-of-turn or end-of-sequence token",
                args.model.display()
            ));
        }
        let control = (0..vocab.n_tokens())
            .map(LlamaToken)
            .filter(|&t| vocab.is_control(t) && !vocab.is_eog(t))
            .map(|t| LlamaLogitBias::new(t, f32::NEG_INFINITY))
            .collect();
        Ok(Generator {
            model,
            context,
            info: ModelInfo { name, digest, dim, max_tokens: context_tokens },
            template: model.chat_template(None).ok(),
            batch_tokens,
            context_tokens,
            end_of_turn,
            control,
        })
    }

    fn model_id(&self) -> String {
        format!("{}@{}", self.info.name, self.info.digest)
    }

    /// The prompt's tokens: through the chat template when asked, with the model's special tokens.
    fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<LlamaToken>, Problem> {
        let text = if prompt.chat {
            let template = self.template.as_ref().ok_or_else(|| {
                Problem::Input(format!(
                    "the model {} has no chat template: send \"chat\": false and a prompt in the model's own format",
                    self.info.name
                ))
            })?;
            let mut messages = Vec::with_capacity(2);
            let message = |role: &str, content: &str| {
                LlamaChatMessage::new(role.into(), content.into())
                    .map_err(|_| Problem::Input("the prompt holds a NUL character".into()))
            };
            if let Some(system) = &prompt.system {
                self.no_control_tokens(system)?;
                messages.push(message("system", system)?);
            }
            self.no_control_tokens(&prompt.user)?;
            messages.push(message("user", &prompt.user)?);
            self.model
                .apply_chat_template(template, &messages, true)
                .map_err(|e| Problem::Model(anyhow!("applying the model's chat template: {e}")))?
        } else {
            prompt.user.clone()
        };
        let tokens = self.model.vocab().tokenize(text.as_bytes(), true, prompt.chat);
        if tokens.is_empty() {
            return Err(Problem::Input("the prompt has no tokens".into()));
        }
        Ok(tokens)
    }

    /// The template's text is tokenized with its special tokens parsed, and so is what it
    /// wraps: a text holding one (`<|im_end|>`) could end its turn and write another role's.
    fn no_control_tokens(&self, text: &str) -> Result<(), Problem> {
        let vocab = self.model.vocab();
        match vocab.tokenize(text.as_bytes(), false, true).into_iter().find(|&t| vocab.is_control(t)) {
            Some(t) => Err(Problem::Input(format!(
                "the text holds the model's control token {:?}: remove it",
                String::from_utf8_lossy(&vocab.token_to_piece(t, true, None))
            ))),
            None => Ok(()),
        }
    }

    fn fits(&self, prompt: usize, more: usize) -> Result<(), Problem> {
        if prompt + more > self.context_tokens {
            return Err(Problem::Input(format!(
                "the prompt's {prompt} tokens and {more} more exceed the model's context of {} tokens \
                 (inference.context_tokens): shorten the prompt or ask for fewer tokens",
                self.context_tokens
            )));
        }
        Ok(())
    }

    /// Decodes `tokens` from position `from` on, in batches, with logits for the last token
    /// only, or for every token when `all_logits`.
    fn decode(&mut self, tokens: &[LlamaToken], from: usize, all_logits: bool) -> anyhow::Result<()> {
        let mut pos = from;
        for chunk in tokens.chunks(self.batch_tokens) {
            let mut batch = LlamaBatch::new(chunk.len(), 1);
            for (i, token) in chunk.iter().enumerate() {
                let last = pos + i + 1 == from + tokens.len();
                batch.add(*token, (pos + i) as i32, &[0], all_logits || last).context("filling the batch")?;
            }
            self.context.decode(&mut batch).context("llama.cpp decode")?;
            pos += chunk.len();
        }
        Ok(())
    }

    pub fn generate(&mut self, request: &Generate) -> Reply {
        match self.try_generate(request) {
            Ok(generation) => Reply::Generated(generation),
            Err(problem) => problem.reply(),
        }
    }

    fn sampler(&self, request: &Generate) -> Result<LlamaSampler, Problem> {
        let mut chain = Vec::with_capacity(4);
        if let Some(grammar) = &request.grammar {
            let sampler = LlamaSampler::grammar(self.model, grammar, "root").map_err(|e| {
                Problem::Input(format!(
                    "llama.cpp's GBNF parser refused the grammar ({e}): it needs a `root` rule, every \
                     rule it names defined, and no left recursion"
                ))
            })?;
            chain.push(sampler);
            chain.push(LlamaSampler::logit_bias(self.model.n_vocab(), &self.control));
        }
        if request.repeat_penalty != 1.0 {
            chain.push(LlamaSampler::penalties(self.model.n_vocab(), 64, request.repeat_penalty, 0.0, 0.0));
        }
        if request.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
        } else {
            chain.push(LlamaSampler::top_p(request.top_p, 1));
            chain.push(LlamaSampler::temp(request.temperature));
            chain.push(LlamaSampler::dist(request.seed));
        }
        Ok(LlamaSampler::chain_simple(chain))
    }

    fn try_generate(&mut self, request: &Generate) -> Result<Generation, Problem> {
        let started = Instant::now();
        let prompt = self.prompt_tokens(&request.prompt)?;
        self.fits(prompt.len(), request.max_tokens as usize)?;
        let mut sampler = self.sampler(request)?;
        self.context.clear_kv_cache();
        self.decode(&prompt, 0, false)?;
        let mut text: Vec<u8> = Vec::new();
        let mut generated = 0u32;
        let mut first_token_ms = 0.0;
        let finish = loop {
            let mut candidates = self.context.token_data_array_ith(-1);
            candidates.apply_sampler(&mut sampler);
            let token = match candidates.selected.and_then(|i| candidates.data.get(i)) {
                Some(chosen) if chosen.logit().is_finite() => chosen.id(),
                _ => {
                    return Err(Problem::Input(format!(
                        "the grammar admits no token after {:?}: it cannot be completed from here",
                        String::from_utf8_lossy(&text)
                    )))
                }
            };
            if generated == 0 {
                first_token_ms = started.elapsed().as_secs_f64() * 1e3;
            }
            // Not accepted: the grammar let it through only because it is complete, and there
            // is nothing after it.
            if self.model.vocab().is_eog(token) {
                break Finish::EndOfText;
            }
            sampler.try_accept(token).map_err(|e| {
                Problem::Input(format!(
                    "the grammar sampler refused the token it chose after {:?} ({e})",
                    String::from_utf8_lossy(&text)
                ))
            })?;
            generated += 1;
            let before = text.len();
            text.extend_from_slice(&self.model.vocab().token_to_piece(token, false, None));
            if let Some(at) = first_stop(&text, before, &request.stop) {
                text.truncate(at);
                break Finish::Stop;
            }
            if generated == request.max_tokens {
                break Finish::Length;
            }
            self.decode(&[token], prompt.len() + generated as usize - 1, false)?;
        };
        Ok(Generation {
            model: self.model_id(),
            text: String::from_utf8_lossy(&text).into_owned(),
            tokens: generated,
            prompt_tokens: prompt.len() as u32,
            finish,
            first_token_ms,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    pub fn score(&mut self, prompt: &Prompt, continuations: &[String]) -> Reply {
        match self.try_score(prompt, continuations) {
            Ok(scores) => Reply::Scores(scores),
            Err(problem) => problem.reply(),
        }
    }

    /// The log-probability of each continuation, the prompt decoded once: each continuation is
    /// decoded after it and then removed from the cache again.
    fn try_score(&mut self, prompt: &Prompt, continuations: &[String]) -> Result<Scores, Problem> {
        let prompt_tokens = self.prompt_tokens(prompt)?;
        let mut sequences = Vec::with_capacity(continuations.len());
        for (i, c) in continuations.iter().enumerate() {
            let mut tokens = self.model.vocab().tokenize(c.as_bytes(), false, false);
            if tokens.is_empty() {
                return Err(Problem::Input(format!("continuation {i} has no tokens")));
            }
            tokens.push(self.end_of_turn);
            sequences.push(tokens);
        }
        let longest = sequences.iter().map(Vec::len).max().unwrap_or(0);
        self.fits(prompt_tokens.len(), longest)?;
        if longest > self.batch_tokens {
            return Err(Problem::Input(format!(
                "a continuation of {longest} tokens is longer than one batch ({} tokens)",
                self.batch_tokens
            )));
        }
        self.context.clear_kv_cache();
        self.decode(&prompt_tokens, 0, false)?;
        let after_prompt = log_softmax(self.context.get_logits_ith(-1));
        let at = prompt_tokens.len();
        let mut logprobs = Vec::with_capacity(sequences.len());
        for tokens in &sequences {
            let mut lp = after_prompt[tokens[0].0 as usize];
            let rest = &tokens[..tokens.len() - 1];
            if tokens.len() > 1 {
                self.decode(rest, at, true)?;
                for (j, next) in tokens[1..].iter().enumerate() {
                    lp += log_softmax(self.context.get_logits_ith(j as i32))[next.0 as usize];
                }
                let cleared = self
                    .context
                    .clear_kv_cache_seq(Some(0), Some(at as u32), None)
                    .map_err(|e| anyhow!("clearing the continuation from the cache: {e}"))?;
                if !cleared {
                    return Err(
                        anyhow!("this model's cache cannot drop a continuation: it cannot score").into()
                    );
                }
            }
            logprobs.push(lp);
        }
        Ok(Scores {
            model: self.model_id(),
            logprobs,
            tokens: sequences.iter().map(|s| s.len() as u32).collect(),
            prompt_tokens: at as u32,
        })
    }
}

/// Where the first stop string begins, looking only at matches that end in the bytes added
/// since `before` (earlier ones were checked already).
fn first_stop(text: &[u8], before: usize, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = s.as_bytes();
            let from = before.saturating_sub(s.len() - 1);
            text[from..].windows(s.len()).position(|w| w == s).map(|p| from + p)
        })
        .min()
}

/// Natural-log softmax of `logits`, in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let log_sum = max + sum.ln();
    logits.iter().map(|&l| l as f64 - log_sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_are_found_across_token_boundaries_and_only_once() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        // "EN" came with the previous token, "D" with this one.
        assert_eq!(first_stop(b"abc EN", 4, &stops), None);
        assert_eq!(first_stop(b"abc END", 6, &stops), Some(4));
        // The "\n\n" at 1 was checked when it came; only matches ending in the new "D" count.
        assert_eq!(first_stop(b"a\n\nb END", 7, &stops), Some(5));
        assert_eq!(first_stop(b"a\n\nb EN", 7, &stops), None);
        assert_eq!(first_stop(b"a\n\n", 2, &stops), Some(1));
        assert_eq!(first_stop(b"abc", 0, &[String::new()]), None, "an empty stop never matches");
    }

    #[test]
    fn log_softmax_sums_to_one_and_keeps_order() {
        let lp = log_softmax(&[1.0, 2.0, 3.0, f32::NEG_INFINITY]);
        let total: f64 = lp.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        assert!(lp[0] < lp[1] && lp[1] < lp[2]);
        assert_eq!(lp[3], f64::NEG_INFINITY);
    }
}
