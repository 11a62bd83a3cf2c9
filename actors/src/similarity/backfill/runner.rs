//! One backfill run: find the nodes of a [`Next`] that still want a vector, embed their names in
//! one request, check every vector the model answered, and propose them in `Backfill` entries
//! that fit the entry size limit. What a run could not start goes back to the plan untouched;
//! what failed part-way is retried whole (apply skips what was stored already).

use actix::prelude::*;

use super::plan::{Next, Work};
use crate::command::{
    pack, validate_vector, AtomVector, Command, CommandResult, Proposal, MAX_BACKFILL_VECTORS,
};
use crate::error::Error;
use crate::inference::{Embed, InferenceActor, Status};
use crate::raft::actor::ProposeAsLeader;
use crate::raft::RaftActor;
use crate::similarity::metrics::BackfillMetrics;
use crate::storage::actor::{Query, StorageActor};
use crate::storage::reads::{Unembedded, UnembeddedPage};

/// Nodes one step of a whole-space scan looks at (point reads under the read gate).
pub const SCAN_BUDGET: usize = 1024;
/// Steps of a scan one run may take while they find nothing to embed.
const SCAN_STEPS: usize = 16;

/// What one run did.
#[derive(Debug, Default)]
pub struct Ran {
    pub model: Option<String>,
    /// The work, not started: no model answered, or storage could not be read.
    pub untouched: Option<Next>,
    /// The space a scan step went through and where it stopped (`None`: at its end).
    pub scanned: Option<(String, Option<Vec<u8>>)>,
    pub stored: u64,
    pub skipped: u64,
    pub failed: Option<(Work, String)>,
}

impl Ran {
    /// Whether the run moved anything forward (so the next may start at once).
    pub fn progressed(&self) -> bool {
        self.untouched.is_none() && self.failed.is_none()
    }
}

/// The handles one run needs (a run outlives no borrow of the actor).
pub struct Runner {
    pub batch: usize,
    pub max_text_bytes: usize,
    /// Bytes of vectors one entry may carry.
    pub entry_bytes: usize,
    pub raft: Addr<RaftActor>,
    pub storage: Addr<StorageActor>,
    pub inference: Addr<InferenceActor>,
    pub metrics: BackfillMetrics,
}

impl Runner {
    pub async fn run(self, next: Next) -> Ran {
        let mut ran = Ran::default();
        let model = match self.model().await {
            Ok(model) => model,
            Err(error) => {
                tracing::debug!(error, "embedding backfill: the embedding model is not available");
                ran.untouched = Some(next);
                return ran;
            }
        };
        ran.model = Some(model.clone());
        let work = match next {
            Next::Retry(work) => work,
            Next::Fresh { space, ids } => match self.among(&space, &model, &ids).await {
                Ok(nodes) => Work { space, nodes, attempts: 0 },
                Err(Found::SpaceGone) => return ran,
                Err(Found::Unreadable) => {
                    ran.untouched = Some(Next::Fresh { space, ids });
                    return ran;
                }
            },
            Next::Scan { space, after } => match self.scan(&space, &model, after.clone()).await {
                Ok((nodes, next)) => {
                    ran.scanned = Some((space.clone(), next));
                    Work { space, nodes, attempts: 0 }
                }
                Err(Found::SpaceGone) => {
                    ran.scanned = Some((space, None));
                    return ran;
                }
                Err(Found::Unreadable) => {
                    ran.untouched = Some(Next::Scan { space, after });
                    return ran;
                }
            },
        };
        if work.nodes.is_empty() {
            return ran;
        }
        match self.embed_and_propose(&work).await {
            Ok((stored, skipped)) => {
                ran.stored = stored;
                ran.skipped = skipped;
            }
            Err(error) => {
                self.metrics.vectors("failed").inc_by(work.nodes.len() as u64);
                ran.failed = Some((work, error));
            }
        }
        ran
    }

    /// The embedding model's id. A pool whose workers have not loaded the model yet (none
    /// running) answers it after one small request.
    async fn model(&self) -> Result<String, String> {
        let status = self.inference.send(Status).await.map_err(|e| e.to_string())?;
        let embedding = status.embedding.ok_or("no embedding model is configured")?;
        if !embedding.model_id.is_empty() {
            return Ok(embedding.model_id);
        }
        let probe = Embed { texts: vec!["model id".into()] };
        let reply =
            self.inference.send(probe).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        Ok(reply.model)
    }

    /// Of `ids` (new in `space`), the nodes still without a vector of `model`.
    async fn among(&self, space: &str, model: &str, ids: &[u64]) -> Result<Vec<Unembedded>, Found> {
        let (s, m, ids) = (space.to_string(), model.to_string(), ids.to_vec());
        found(space, self.storage.send(Query::new(move |v| v.unembedded_among(&s, &m, &ids))).await)
    }

    /// Steps of a whole-space scan until one finds nodes to embed (or [`SCAN_STEPS`] did not):
    /// the nodes found and where the scan goes on.
    async fn scan(
        &self,
        space: &str,
        model: &str,
        mut at: Option<Vec<u8>>,
    ) -> Result<(Vec<Unembedded>, Option<Vec<u8>>), Found> {
        for step in 0..SCAN_STEPS {
            let (s, m, after, want) = (space.to_string(), model.to_string(), at.clone(), self.batch);
            let read = Query::new(move |v| v.unembedded_nodes(&s, &m, after.as_deref(), SCAN_BUDGET, want));
            let UnembeddedPage { nodes, next } = match found(space, self.storage.send(read).await) {
                Ok(page) => page,
                // Later steps' failures keep what the earlier ones covered.
                Err(Found::Unreadable) if step > 0 => return Ok((Vec::new(), at)),
                Err(e) => return Err(e),
            };
            if !nodes.is_empty() || next.is_none() {
                return Ok((nodes, next));
            }
            at = next;
        }
        Ok((Vec::new(), at))
    }

    /// Embeds the names of `work` (at most a batch: one request) and proposes the vectors;
    /// answers (stored, skipped).
    async fn embed_and_propose(&self, work: &Work) -> Result<(u64, u64), String> {
        let (nodes, blank) = embeddable(&work.nodes, self.max_text_bytes);
        let mut skipped = blank as u64;
        let mut stored = 0;
        for chunk in nodes.chunks(self.batch) {
            let texts = chunk.iter().map(|(_, text)| text.to_string()).collect();
            let reply = self
                .inference
                .send(Embed { texts })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("embedding: {e}"))?;
            if reply.embeddings.len() != chunk.len() {
                return Err(format!(
                    "the model answered {} vectors for {} names",
                    reply.embeddings.len(),
                    chunk.len()
                ));
            }
            let mut vectors = Vec::with_capacity(chunk.len());
            for ((id, _), vector) in chunk.iter().zip(reply.embeddings) {
                match validate_vector(&vector) {
                    Ok(()) if vector.len() == reply.dim => vectors.push(AtomVector { id: *id, vector }),
                    outcome => {
                        tracing::warn!(
                            id,
                            ?outcome,
                            dim = vector.len(),
                            "embedding backfill: the model answered an unusable vector; skipped"
                        );
                        skipped += 1;
                    }
                }
            }
            let (entries, oversized) = pack(vectors, self.entry_bytes, MAX_BACKFILL_VECTORS);
            skipped += oversized as u64;
            for entry in entries {
                match self.propose(&work.space, &reply.model, entry).await? {
                    Proposed::Applied { stored: s, skipped: k } => {
                        stored += s;
                        skipped += k;
                    }
                    Proposed::SpaceGone(n) => return Ok((stored, skipped + n)),
                }
            }
        }
        self.metrics.vectors("stored").inc_by(stored);
        self.metrics.vectors("skipped").inc_by(skipped);
        Ok((stored, skipped))
    }

    async fn propose(&self, space: &str, model: &str, vectors: Vec<AtomVector>) -> Result<Proposed, String> {
        let count = vectors.len() as u64;
        let proposal = Proposal {
            key: String::new(),
            time_ms: crate::now_ms(),
            space: space.to_string(),
            command: Command::Backfill { model: model.to_string(), vectors },
        };
        match self.raft.send(ProposeAsLeader(proposal)).await.map_err(|e| e.to_string())? {
            Ok((_, CommandResult::Backfilled { stored, skipped })) => {
                Ok(Proposed::Applied { stored, skipped })
            }
            Ok((_, CommandResult::Rejected { error })) => {
                // The space is being deleted: nothing of it is wanted any more.
                tracing::debug!(space, %error, "embedding backfill: the entry was refused");
                Ok(Proposed::SpaceGone(count))
            }
            Ok((_, other)) => Err(format!("the backfill entry answered {other:?}")),
            Err(e) => Err(format!("proposing: {e}")),
        }
    }
}

enum Proposed {
    Applied {
        stored: u64,
        skipped: u64,
    },
    /// Refused whole (the space is being deleted): this many vectors were not stored.
    SpaceGone(u64),
}

/// Why nodes could not be found.
#[derive(Debug)]
enum Found {
    /// The space is being deleted: its work ends.
    SpaceGone,
    /// Storage did not answer: the work waits.
    Unreadable,
}

fn found<T>(space: &str, answer: Result<crate::error::Result<T>, MailboxError>) -> Result<T, Found> {
    match answer {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(Error::NotFound { .. })) => Err(Found::SpaceGone),
        Ok(Err(e)) => {
            tracing::warn!(space, error = %e, "embedding backfill: cannot read the nodes to embed");
            Err(Found::Unreadable)
        }
        Err(_) => Err(Found::Unreadable),
    }
}

/// The names to embed, each cut to `max` bytes at a character boundary, and how many had
/// nothing but whitespace there (the model refuses a blank text, and with it the whole request).
pub fn embeddable(nodes: &[Unembedded], max: usize) -> (Vec<(u64, &str)>, usize) {
    let mut blank = 0;
    let texts = nodes
        .iter()
        .filter_map(|n| {
            let text = cut(&n.name, max);
            if text.trim().is_empty() {
                blank += 1;
                None
            } else {
                Some((n.id, text))
            }
        })
        .collect();
    (texts, blank)
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_names_are_left_out_and_names_are_cut_at_character_boundaries() {
        let nodes: Vec<Unembedded> = ["cat", "   ", "\t\n", "aé", "  dog"]
            .iter()
            .enumerate()
            .map(|(i, name)| Unembedded { id: i as u64, name: name.to_string() })
            .collect();
        let (texts, blank) = embeddable(&nodes, 2);
        // "aé" cut inside the two-byte "é" moves back before it; "  dog" cut to two bytes is blank.
        assert_eq!(texts, vec![(0, "ca"), (3, "a")]);
        assert_eq!(blank, 3);
        assert_eq!(cut("abc", 8), "abc");
    }
}
