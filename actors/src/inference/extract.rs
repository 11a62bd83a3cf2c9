//! Fact extraction by the chat model: the prompt, the GBNF grammar its answer is sampled under
//! (a JSON list of at most [`MAX_TRIPLES`] subject-relation-object triples with a confidence, so
//! the answer always parses), the parse and clean-up of that answer, and the provenance an
//! inserted fact keeps. The grammar bounds the answer to [`MAX_ANSWER_BYTES`] bytes, and a token
//! is at least one byte, so a generation of that many tokens always completes it.

use serde::{Deserialize, Serialize};

use super::protocol::Prompt;

/// The version of the prompt below; provenance names it, so a fact says how it was asked for.
pub const PROMPT_VERSION: &str = "extract-v1";

/// Triples one answer holds at most, and characters of each of its fields.
pub const MAX_TRIPLES: usize = 4;
pub const MAX_FIELD_CHARS: usize = 32;

/// Printable ASCII fields without quotes or backslashes: nothing to unescape, one byte each.
pub const GRAMMAR: &str = r#"root ::= "[" ( triple ( ", " triple ){0,3} )? "]"
triple ::= "{\"subject\": " field ", \"relation\": " field ", \"object\": " field ", \"confidence\": " confidence "}"
field ::= "\"" [ !#-\[\]-~]{1,32} "\""
confidence ::= "0." [0-9] [0-9]? | "1.0"
"#;

/// The longest answer [`GRAMMAR`] admits, in bytes: the brackets, and per triple its fixed
/// text (the keys, quotes, separators and the longest confidence) and three longest fields.
pub const MAX_ANSWER_BYTES: usize = 2 + MAX_TRIPLES * (2 + TRIPLE_FIXED_BYTES + 3 * MAX_FIELD_CHARS);
const TRIPLE_FIXED_BYTES: usize =
    r#"{"subject": "", "relation": "", "object": "", "confidence": 0.00}"#.len();

/// The first 16 hex digits of the grammar's BLAKE3 digest, for provenance.
pub fn grammar_digest() -> String {
    blake3::hash(GRAMMAR.as_bytes()).to_hex()[..16].to_string()
}

/// What identifies a source text: its BLAKE3 digest (32 hex digits).
pub fn source_digest(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex()[..32].to_string()
}

/// The chat prompt asking for the facts of `text`.
pub fn prompt(text: &str) -> Prompt {
    Prompt {
        chat: true,
        system: Some(
            "You extract facts from a text. Answer with a JSON list of triples. In each triple, \
             subject and object are short noun phrases taken from the text, relation is a short \
             verb phrase joining them, and confidence (0.0 to 1.0) says how clearly the text \
             states the fact. Answer [] when the text states no fact.\n\
             Example text: Marie Curie was born in Warsaw. She won the Nobel Prize in 1903.\n\
             Example answer: [{\"subject\": \"Marie Curie\", \"relation\": \"born in\", \"object\": \
             \"Warsaw\", \"confidence\": 0.95}, {\"subject\": \"Marie Curie\", \"relation\": \"won\", \
             \"object\": \"Nobel Prize\", \"confidence\": 0.9}]"
                .into(),
        ),
        user: format!("Text: {text}"),
    }
}

/// One fact, cleaned: fields trimmed with inner whitespace collapsed, the relation lower-case.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Triple {
    pub subject: String,
    pub relation: String,
    pub object: String,
    pub confidence: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answered {
    subject: String,
    relation: String,
    object: String,
    confidence: f64,
}

/// The triples of an answer, and how many it dropped (a field blank after clean-up, a subject
/// that is its own object, a repeat of an earlier triple, which keeps the higher confidence). An answer that does not parse is an
/// error: under [`GRAMMAR`] it cannot happen, and the caller counts it if it does.
pub fn parse(answer: &str) -> Result<(Vec<Triple>, usize), String> {
    let answered: Vec<Answered> = serde_json::from_str(answer)
        .map_err(|e| format!("the answer {answer:?} is not the grammar's JSON: {e}"))?;
    let mut triples: Vec<Triple> = Vec::with_capacity(answered.len());
    let mut dropped = 0;
    for a in answered {
        let t = Triple {
            subject: clean(&a.subject),
            relation: clean(&a.relation).to_lowercase(),
            object: clean(&a.object),
            confidence: a.confidence.clamp(0.0, 1.0),
        };
        if t.subject.is_empty()
            || t.relation.is_empty()
            || t.object.is_empty()
            || t.subject.eq_ignore_ascii_case(&t.object)
        {
            dropped += 1;
            continue;
        }
        match triples
            .iter_mut()
            .find(|k| k.subject == t.subject && k.relation == t.relation && k.object == t.object)
        {
            Some(kept) => {
                kept.confidence = kept.confidence.max(t.confidence);
                dropped += 1;
            }
            None => triples.push(t),
        }
    }
    Ok((triples, dropped))
}

fn clean(field: &str) -> String {
    field.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_are_cleaned() {
        let (triples, dropped) = parse(
            r#"[{"subject": " Paris ", "relation": "Is  Capital Of", "object": "France", "confidence": 0.9}, {"subject": "   ", "relation": "is", "object": "x", "confidence": 0.5}, {"subject": "Paris", "relation": "is", "object": "paris", "confidence": 0.5}, {"subject": "Paris", "relation": "is capital of", "object": "France", "confidence": 0.95}]"#,
        )
        .unwrap();
        assert_eq!(
            triples,
            vec![Triple {
                subject: "Paris".into(),
                relation: "is capital of".into(),
                object: "France".into(),
                confidence: 0.95
            }]
        );
        assert_eq!(dropped, 3, "one blank subject, one subject that is its object, one repeat");
        assert_eq!(parse("[]").unwrap(), (vec![], 0));
        assert!(parse("[{\"subject\": \"a\"").is_err());
        assert!(parse("not json").unwrap_err().contains("not the grammar's JSON"));
    }

    #[test]
    fn the_longest_answer_the_grammar_admits_parses_and_is_the_bound() {
        let field = |c: &str| format!("\"{}\"", c.repeat(MAX_FIELD_CHARS));
        let (s, r, o) = (field("s"), field("r"), field("o"));
        let triple =
            format!("{{\"subject\": {s}, \"relation\": {r}, \"object\": {o}, \"confidence\": 0.99}}");
        let answer = format!("[{}]", vec![triple; MAX_TRIPLES].join(", "));
        // The bound counts a separator per triple; the answer has one fewer.
        assert_eq!(answer.len() + 2, MAX_ANSWER_BYTES);
        assert_eq!(parse(&answer).unwrap().0.len(), 1, "repeats collapse into one");
        assert!(GRAMMAR.contains(&format!("{{0,{}}}", MAX_TRIPLES - 1)));
        assert!(GRAMMAR.contains(&format!("{{1,{MAX_FIELD_CHARS}}}")));
    }

    #[test]
    fn digests_are_stable() {
        assert_eq!(grammar_digest().len(), 16);
        assert_eq!(source_digest("a"), source_digest("a"));
        assert_ne!(source_digest("a"), source_digest("b"));
        assert_eq!(source_digest("a").len(), 32);
    }
}
