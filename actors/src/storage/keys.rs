//! The key layout of every state-machine table (integers big-endian, so byte order is numeric
//! order; names end with `\0`, which no space, type or subject contains). Every key stays under
//! [`MAX_KEY_LEN`](super::MAX_KEY_LEN): long node names and wide links are indexed by hash.
//!
//! | table | key | value |
//! |---|---|---|
//! | Meta | name | counters, clock, last applied, membership, maintenance |
//! | Atoms | id | Atom (with its space) |
//! | NodeIndex | space \0 type \0 name (or 0xFF blake3(name)) | id |
//! | LinkIndex | space \0 type \0 (0 ids... or 1 blake3(ids)) | id |
//! | TypeIndex | space \0 type \0 id | () |
//! | Incoming | target id ++ link id | () |
//! | Values | atom id ++ key | JSON |
//! | Spaces | space | SpaceInfo |
//! | Sessions | space \0 id | Session |
//! | SessionDeadlines | deadline ms ++ id | space |
//! | Observations | space \0 subject \0 id | Observation |
//! | ObservationOrder | id | recorded ms ++ space \0 subject |
//! | SubjectTotals | space \0 subject | SubjectTotals |
//! | Idempotency | space \0 key | (index, result) |
//! | IdempotencyOrder | index ++ space \0 key | () |
//! | Attention | space \0 id | STI (f64, big-endian bits) |
//! | Embeddings | space \0 id model | vector (f32 little-endian) |
//! | EmbeddingModels | space \0 model | ModelVectors |

use super::be;
use crate::model::AtomId;

/// Names longer than this are indexed by their BLAKE3 hash.
const MAX_PLAIN_NAME: usize = 256;
/// Links with more members than this are indexed by the hash of their outgoing ids.
const MAX_PLAIN_OUTGOING: usize = 64;
/// Marks a hashed name: UTF-8 never contains the byte 0xFF, so no plain name starts with it.
const HASHED_NAME: u8 = 0xFF;
const PLAIN_OUTGOING: u8 = 0;
const HASHED_OUTGOING: u8 = 1;

/// `a \0 b \0 ...`
fn joined(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for part in parts {
        key.extend_from_slice(part);
        key.push(0);
    }
    key
}

/// `space \0`: the prefix of everything one space owns in a space-keyed table.
pub fn space_prefix(space: &str) -> Vec<u8> {
    joined(&[space.as_bytes()])
}

/// `space \0 type \0`: the prefix of one type's index entries.
pub fn type_prefix(space: &str, atom_type: &str) -> Vec<u8> {
    joined(&[space.as_bytes(), atom_type.as_bytes()])
}

pub fn node_key(space: &str, atom_type: &str, name: &str) -> Vec<u8> {
    let mut key = type_prefix(space, atom_type);
    if name.len() <= MAX_PLAIN_NAME {
        key.extend_from_slice(name.as_bytes());
    } else {
        key.push(HASHED_NAME);
        key.extend_from_slice(blake3::hash(name.as_bytes()).as_bytes());
    }
    key
}

pub fn link_key(space: &str, atom_type: &str, outgoing: &[AtomId]) -> Vec<u8> {
    let mut key = type_prefix(space, atom_type);
    let ids: Vec<u8> = outgoing.iter().flat_map(|id| be(*id)).collect();
    if outgoing.len() <= MAX_PLAIN_OUTGOING {
        key.push(PLAIN_OUTGOING);
        key.extend_from_slice(&ids);
    } else {
        key.push(HASHED_OUTGOING);
        key.extend_from_slice(blake3::hash(&ids).as_bytes());
    }
    key
}

pub fn type_index_key(space: &str, atom_type: &str, id: AtomId) -> Vec<u8> {
    [type_prefix(space, atom_type), be(id).to_vec()].concat()
}

pub fn pair_key(a: u64, b: u64) -> Vec<u8> {
    [be(a), be(b)].concat()
}

pub fn value_key(id: AtomId, key: &str) -> Vec<u8> {
    [&be(id)[..], key.as_bytes()].concat()
}

/// `space \0 id`.
fn space_and_id(space: &str, id: u64) -> Vec<u8> {
    [space_prefix(space), be(id).to_vec()].concat()
}

pub fn session_key(space: &str, id: u64) -> Vec<u8> {
    space_and_id(space, id)
}

/// `space \0 subject \0`: the prefix of one subject's observations.
pub fn subject_prefix(space: &str, subject: &str) -> Vec<u8> {
    joined(&[space.as_bytes(), subject.as_bytes()])
}

pub fn observation_key(space: &str, subject: &str, id: u64) -> Vec<u8> {
    [subject_prefix(space, subject), be(id).to_vec()].concat()
}

/// `space \0 subject` (the totals' key and the observation order's value).
pub fn subject_key(space: &str, subject: &str) -> Vec<u8> {
    [space.as_bytes(), &[0], subject.as_bytes()].concat()
}

pub fn attention_key(space: &str, id: AtomId) -> Vec<u8> {
    space_and_id(space, id)
}

/// `space \0 id`: the prefix of one atom's vectors.
pub fn embeddings_prefix(space: &str, id: AtomId) -> Vec<u8> {
    space_and_id(space, id)
}

pub fn embedding_key(space: &str, id: AtomId, model: &str) -> Vec<u8> {
    [space_and_id(space, id), model.as_bytes().to_vec()].concat()
}

/// Splits an [`embedding_key`] into (space, id, model).
pub fn split_embedding_key(key: &[u8]) -> Option<(&str, AtomId, &str)> {
    let (space, rest) = split_space(key)?;
    if rest.len() < 8 {
        return None;
    }
    let model = std::str::from_utf8(&rest[8..]).ok()?;
    Some((space, super::from_be(&rest[..8]), model))
}

pub fn embedding_model_key(space: &str, model: &str) -> Vec<u8> {
    [space.as_bytes(), &[0], model.as_bytes()].concat()
}

pub fn idempotency_key(space: &str, key: &str) -> Vec<u8> {
    [space.as_bytes(), &[0], key.as_bytes()].concat()
}

/// Splits `space \0 rest` (an idempotency or subject key) at its first NUL.
pub fn split_space(key: &[u8]) -> Option<(&str, &[u8])> {
    let at = key.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&key[..at]).ok()?, &key[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_space_never_share_a_prefix_with_another() {
        // "a" and "ab" would collide without the terminator.
        assert!(!node_key("ab", "T", "x").starts_with(&space_prefix("a")));
        assert!(node_key("a", "T", "x").starts_with(&type_prefix("a", "T")));
        assert!(!node_key("a", "TT", "x").starts_with(&type_prefix("a", "T")));
        assert!(type_index_key("a", "T", 7).starts_with(&type_prefix("a", "T")));
    }

    #[test]
    fn embedding_keys_split_back() {
        let key = embedding_key("agent_7", 258, "minilm@00ff");
        assert_eq!(split_embedding_key(&key), Some(("agent_7", 258, "minilm@00ff")));
        assert!(key.starts_with(&embeddings_prefix("agent_7", 258)));
        assert!(!key.starts_with(&embeddings_prefix("agent_7", 2)));
    }

    #[test]
    fn long_names_and_wide_links_are_hashed_into_short_keys() {
        let long = "n".repeat(16 * 1024);
        assert!(node_key("s", "T", &long).len() < 100);
        assert_ne!(node_key("s", "T", &long), node_key("s", "T", &format!("{long}x")));
        let wide: Vec<AtomId> = (1..=4096).collect();
        assert!(link_key("s", "L", &wide).len() < 100);
        assert_ne!(link_key("s", "L", &[1, 2]), link_key("s", "L", &[2, 1]));
    }
}
