//! The node's chat model: `/v1/generate` (text, optionally under a GBNF grammar), `/v1/classify`
//! (one label of a set, with every label's probability) and `/v1/extract` (facts as triples;
//! with `insert`, written to the space as `EvaluationLink(PredicateNode relation,
//! ListLink(ConceptNode subject, ConceptNode object))`, each link's truth value revised once per
//! source text and its provenance kept in the named value `provenance`). Any node answers the
//! model's part; the insert is one batch through Raft. 503 naming the setting when no generation
//! model is configured.

use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::command::{AtomRef, Command, CommandResult};
use cograft_actors::inference::extract::{self, Triple};
use cograft_actors::inference::protocol::{Generate, Prompt};
use cograft_actors::inference::{ClassifyText, ExtractFacts, GenerateText};
use cograft_actors::model::{Merge, TruthValue};
use cograft_actors::Error;
use serde::Deserialize;
use serde_json::json;

use super::{propose, space_of};
use crate::api::error::ApiError;
use crate::api::AppState;

/// The named value that holds an extracted link's sources.
pub const PROVENANCE_KEY: &str = "provenance";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/generate", web::post().to(generate))
        .route("/classify", web::post().to(classify))
        .route("/extract", web::post().to(extract_facts));
}

fn default_chat() -> bool {
    true
}
fn default_max_tokens() -> u32 {
    128
}
fn default_top_p() -> f32 {
    1.0
}
fn default_repeat_penalty() -> f32 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateBody {
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    /// Through the model's chat template (default), or the prompt as it is.
    #[serde(default = "default_chat")]
    chat: bool,
    #[serde(default = "default_max_tokens")]
    max_tokens: u32,
    /// 0 (default) = greedy: the same request answers the same text.
    #[serde(default)]
    temperature: f32,
    #[serde(default = "default_top_p")]
    top_p: f32,
    #[serde(default)]
    seed: u32,
    #[serde(default = "default_repeat_penalty")]
    repeat_penalty: f32,
    #[serde(default)]
    stop: Vec<String>,
    #[serde(default)]
    grammar: Option<String>,
}

async fn generate(
    state: web::Data<AppState>,
    body: web::Json<GenerateBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let request = Generate {
        prompt: Prompt { chat: b.chat, system: b.system, user: b.prompt },
        max_tokens: b.max_tokens,
        temperature: b.temperature,
        top_p: b.top_p,
        seed: b.seed,
        repeat_penalty: b.repeat_penalty,
        stop: b.stop,
        grammar: b.grammar,
    };
    let g = state.inference.send(GenerateText(request)).await??;
    Ok(HttpResponse::Ok().json(json!({
        "text": g.text,
        "tokens": g.tokens,
        "prompt_tokens": g.prompt_tokens,
        "finish": g.finish,
        "tokens_per_second": g.tokens_per_second(),
        "first_token_ms": g.first_token_ms,
        "elapsed_ms": g.elapsed_ms,
        "model": g.model,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyBody {
    text: String,
    #[serde(default)]
    labels: Option<Vec<String>>,
}

async fn classify(
    state: web::Data<AppState>,
    body: web::Json<ClassifyBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let c = state.inference.send(ClassifyText { text: b.text, labels: b.labels }).await??;
    Ok(HttpResponse::Ok().json(c))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtractBody {
    text: String,
    #[serde(default)]
    insert: bool,
}

async fn extract_facts(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ExtractBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    // A bad space is refused before the model runs.
    let space = space_of(&req)?;
    let source = extract::source_digest(&b.text);
    let e = state.inference.send(ExtractFacts { text: b.text.clone() }).await??;
    let mut answer = json!({
        "triples": e.triples,
        "dropped": e.dropped,
        "answer": e.answer,
        "model": e.model,
        "grammar": e.grammar,
        "prompt_version": e.prompt_version,
        "source": source,
        "tokens": e.tokens,
        "elapsed_ms": e.elapsed_ms,
        "space": space,
    });
    if b.insert && !e.triples.is_empty() {
        let entry = json!({
            "model": e.model,
            "grammar": e.grammar,
            "prompt_version": e.prompt_version,
            "text_bytes": b.text.len(),
        });
        let limit = state.settings.inference.provenance_limit as u32;
        let ops = insert_ops(&e.triples, &source, &entry, limit);
        let outcome = propose(&state, &req, Command::Batch { ops }).await?;
        let results = match outcome.result {
            CommandResult::Batch { results } => results,
            CommandResult::Rejected { error } => return Err(error.into()),
            other => {
                return Err(Error::Internal(format!("an extraction insert was answered {other:?}")).into())
            }
        };
        let inserted: Vec<_> = results
            .chunks(OPS_PER_TRIPLE)
            .map(|r| match r.last() {
                Some(CommandResult::Evidence { id, added, sources, full }) => {
                    Ok(json!({ "link": id, "added": added, "sources": sources, "full": full }))
                }
                other => Err(Error::Internal(format!("an extracted fact's evidence was answered {other:?}"))),
            })
            .collect::<Result<_, _>>()?;
        answer["inserted"] = inserted.into();
        answer["index"] = outcome.index.into();
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// Ops one triple takes in the insert batch (the evidence last).
const OPS_PER_TRIPLE: usize = 6;

/// The batch that writes `triples`: per triple its predicate, subject and object nodes, the
/// list and evaluation links (created with no truth value of their own), and the evidence that
/// revises the evaluation link's truth value once per source.
fn insert_ops(triples: &[Triple], source: &str, entry: &serde_json::Value, limit: u32) -> Vec<Command> {
    let node = |atom_type: &str, name: &str| Command::AddNode {
        atom_type: atom_type.into(),
        name: name.into(),
        tv: None,
        merge: Merge::Latest,
    };
    let mut ops = Vec::with_capacity(triples.len() * OPS_PER_TRIPLE);
    for t in triples {
        let at = ops.len();
        ops.push(node("PredicateNode", &t.relation));
        ops.push(node("ConceptNode", &t.subject));
        ops.push(node("ConceptNode", &t.object));
        ops.push(Command::AddLink {
            atom_type: "ListLink".into(),
            outgoing: vec![AtomRef::Op(at + 1), AtomRef::Op(at + 2)],
            tv: None,
            merge: Merge::Latest,
        });
        ops.push(Command::AddLink {
            atom_type: "EvaluationLink".into(),
            outgoing: vec![AtomRef::Op(at), AtomRef::Op(at + 3)],
            tv: None,
            merge: Merge::Latest,
        });
        ops.push(Command::AddEvidence {
            id: AtomRef::Op(at + 4),
            tv: TruthValue { strength: 1.0, confidence: t.confidence },
            key: PROVENANCE_KEY.into(),
            source: source.into(),
            entry: entry.clone(),
            limit,
        });
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_triple_becomes_six_ops_referring_within_their_group() {
        let triples = vec![
            Triple {
                subject: "Paris".into(),
                relation: "capital of".into(),
                object: "France".into(),
                confidence: 0.9,
            },
            Triple {
                subject: "Rome".into(),
                relation: "capital of".into(),
                object: "Italy".into(),
                confidence: 0.8,
            },
        ];
        let ops = insert_ops(&triples, "abc", &json!({"model": "m"}), 32);
        assert_eq!(ops.len(), 2 * OPS_PER_TRIPLE);
        let batch = Command::Batch { ops: ops.clone() };
        batch.validate().unwrap();
        let Command::AddLink { outgoing, .. } = &ops[OPS_PER_TRIPLE + 4] else { panic!("{:?}", ops[10]) };
        assert_eq!(outgoing, &vec![AtomRef::Op(OPS_PER_TRIPLE), AtomRef::Op(OPS_PER_TRIPLE + 3)]);
        let Command::AddEvidence { id, tv, source, .. } = &ops[2 * OPS_PER_TRIPLE - 1] else { panic!() };
        assert_eq!(*id, AtomRef::Op(OPS_PER_TRIPLE + 4));
        assert_eq!(tv.confidence, 0.8);
        assert_eq!(source, "abc");
    }
}
