//! What the node asks its chat model for, as InferenceActor messages: [`ExtractFacts`] (triples
//! under the extraction grammar, parsed and cleaned) and [`ClassifyText`] (one label of a set,
//! with every label's probability, calibrated against the model's preference among the labels
//! after a text that says nothing). Both run on the generation pool; inserting extracted facts
//! is the API's (it owns the writes).

use std::time::Instant;

use actix::{Handler, Message, ResponseFuture};
use serde::Serialize;

use super::actor::{generate, model_answer, InferenceActor, ModelPool};
use super::classify::{self, LabelScore};
use super::extract::{self, Triple};
use super::protocol::{Finish, Generate, Prompt, Reply, Request, Scores};
use crate::{Error, Result};

/// The facts of `text`.
#[derive(Message)]
#[rtype(result = "Result<Extraction>")]
pub struct ExtractFacts {
    pub text: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Extraction {
    pub triples: Vec<Triple>,
    /// Triples of the answer left out (a blank field, a repeat).
    pub dropped: usize,
    /// The model's answer as it came (JSON under the grammar).
    pub answer: String,
    pub model: String,
    pub grammar: String,
    pub prompt_version: &'static str,
    pub tokens: u32,
    pub elapsed_ms: f64,
}

/// One label of `labels` (or of `inference.classify_labels`) for `text`.
#[derive(Message)]
#[rtype(result = "Result<Classification>")]
pub struct ClassifyText {
    pub text: String,
    pub labels: Option<Vec<String>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Classification {
    pub label: String,
    /// Every label, most probable first.
    pub scores: Vec<LabelScore>,
    pub model: String,
    pub elapsed_ms: f64,
}

impl Handler<ExtractFacts> for InferenceActor {
    type Result = ResponseFuture<Result<Extraction>>;

    fn handle(&mut self, msg: ExtractFacts, _: &mut Self::Context) -> Self::Result {
        let pool = self.generation_pool();
        let checked = self.check_text(&msg.text);
        let prompt = extract::prompt(&msg.text);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let pool = pool?;
            checked?;
            let request = Generate {
                prompt,
                // A token is at least one byte: the grammar's longest answer always fits.
                max_tokens: extract::MAX_ANSWER_BYTES as u32,
                temperature: 0.0,
                top_p: 1.0,
                seed: 0,
                // A penalty would push the model off the quotes and braces it must repeat
                // (measured: fields filled with "}, {" at 1.3); repeats are dropped instead.
                repeat_penalty: 1.0,
                stop: Vec::new(),
                grammar: Some(extract::GRAMMAR.to_string()),
            };
            let generation = generate(&pool, &metrics, request).await?;
            let parsed = match generation.finish {
                Finish::EndOfText => extract::parse(&generation.text),
                other => Err(format!("the answer ended by {other:?} before the grammar was complete")),
            };
            let (triples, dropped) = parsed.map_err(|e| {
                metrics.extraction_parse_failures.inc();
                Error::Internal(format!("the extraction answer did not parse: {e}"))
            })?;
            metrics.extracted_triples.observe(triples.len() as f64);
            Ok(Extraction {
                triples,
                dropped,
                answer: generation.text,
                model: generation.model,
                grammar: extract::grammar_digest(),
                prompt_version: extract::PROMPT_VERSION,
                tokens: generation.tokens,
                elapsed_ms: generation.elapsed_ms,
            })
        })
    }
}

/// The log-probability of each label after `prompt`, in one worker request.
async fn score(pool: &ModelPool, prompt: Prompt, labels: &[String]) -> Result<Scores> {
    let request = Request::Score { prompt, continuations: labels.to_vec() };
    let scores = model_answer(pool.pool.call(request).await?, |r| match r {
        Reply::Scores(s) => Some(s),
        _ => None,
    })?;
    if scores.logprobs.len() != labels.len() {
        return Err(Error::Internal(format!(
            "the generation worker scored {} of {} labels",
            scores.logprobs.len(),
            labels.len()
        )));
    }
    Ok(scores)
}

impl Handler<ClassifyText> for InferenceActor {
    type Result = ResponseFuture<Result<Classification>>;

    fn handle(&mut self, msg: ClassifyText, _: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let pool = self.generation_pool();
        let labels = match msg.labels {
            Some(labels) => Ok(labels),
            None if !self.config.classify_labels.is_empty() => Ok(self.config.classify_labels.clone()),
            None => Err(Error::Invalid(
                "give labels, or configure a default set in inference.classify_labels".into(),
            )),
        };
        let checked = labels.and_then(|labels| {
            classify::check_labels(&labels, self.config.max_labels).map_err(Error::Invalid)?;
            self.check_text(&msg.text)?;
            Ok((classify::prompt(&msg.text, &labels), labels))
        });
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let pool = pool?;
            let (prompt, labels) = checked?;
            let scores = score(&pool, prompt, &labels).await?;
            // The same labels after a text that says nothing: what the model prefers anyway.
            let prior = score(&pool, classify::prompt(classify::CONTENT_FREE, &labels), &labels).await?;
            let calibrated: Vec<f64> =
                scores.logprobs.iter().zip(&prior.logprobs).map(|(s, p)| s - p).collect();
            let ranked = classify::ranked(&labels, &scores.logprobs, &calibrated);
            metrics.classify_seconds.observe(started.elapsed().as_secs_f64());
            Ok(Classification {
                label: ranked[0].label.clone(),
                scores: ranked,
                model: scores.model,
                elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
            })
        })
    }
}
