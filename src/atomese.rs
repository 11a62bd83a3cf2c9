//! AtomSpace's Atomese s-expressions, to and from the import NDJSON: `(ConceptNode "cat")`,
//! `(InheritanceLink (stv 0.9 0.8) (ConceptNode "cat") (ConceptNode "animal"))`, a truth value
//! `(stv strength confidence)` anywhere among an atom's arguments, `;` comments. A type ending
//! in `Node` takes one string, its name; any other type is a link of the expressions inside it.
//! Atomese carries atoms and truth values; named values and vectors travel in NDJSON only.
//!
//! Reading: every top-level expression becomes NDJSON lines, members first (a nested link gets
//! a line and a key of its own, a nested node is named by `{type, name}`, and gets a line of
//! its own only when it carries a truth value). Writing: every exported atom once, at top
//! level, with its truth value; its members nested by content, without theirs (so an import of
//! the output never merges a truth value twice).

use std::collections::HashMap;

use serde_json::{json, Value};

/// What reading Atomese made: NDJSON lines, the Atomese line each came from, and the
/// expressions that could not be read (line, why).
#[derive(Debug, Default)]
pub struct Converted {
    pub lines: Vec<String>,
    pub source_lines: Vec<usize>,
    pub errors: Vec<(usize, String)>,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Open,
    Close,
    Text(String),
    Word(String),
}

/// Splits `text` into tokens with the line each starts on.
fn tokens(text: &str) -> Result<Vec<(usize, Token)>, (usize, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            ';' => while chars.next_if(|c| *c != '\n').is_some() {},
            '(' => out.push((line, Token::Open)),
            ')' => out.push((line, Token::Close)),
            '"' => {
                let start = line;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err((start, "a string is not closed".into())),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(other) => s.push(other),
                            None => return Err((start, "a string is not closed".into())),
                        },
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            s.push(c);
                        }
                    }
                }
                out.push((start, Token::Text(s)));
            }
            c => {
                let mut w = String::from(c);
                while let Some(c) = chars.next_if(|c| !c.is_whitespace() && !"()\";".contains(*c)) {
                    w.push(c);
                }
                out.push((line, Token::Word(w)));
            }
        }
    }
    Ok(out)
}

/// One parsed expression.
#[derive(Debug)]
enum Expr {
    List(Vec<Expr>),
    Text(String),
    Word(String),
}

fn parse(tokens: &[(usize, Token)], at: &mut usize) -> Result<Expr, (usize, String)> {
    let (line, token) = tokens[*at].clone();
    *at += 1;
    match token {
        Token::Open => {
            let mut items = Vec::new();
            loop {
                match tokens.get(*at) {
                    None => return Err((line, "an expression is not closed".into())),
                    Some((_, Token::Close)) => {
                        *at += 1;
                        return Ok(Expr::List(items));
                    }
                    Some(_) => items.push(parse(tokens, at)?),
                }
            }
        }
        Token::Close => Err((line, "a ')' closes nothing".into())),
        Token::Text(s) => Ok(Expr::Text(s)),
        Token::Word(w) => Ok(Expr::Word(w)),
    }
}

/// Reads Atomese into import NDJSON (see the module's comment).
pub fn to_ndjson(text: &str) -> Converted {
    let mut out = Converted::default();
    let tokens = match tokens(text) {
        Ok(t) => t,
        Err(e) => {
            out.errors.push(e);
            return out;
        }
    };
    let (mut at, mut keys) = (0, 0usize);
    while at < tokens.len() {
        let line = tokens[at].0;
        match parse(&tokens, &mut at) {
            Ok(expr) => {
                let mut lines = Vec::new();
                match member(&expr, &mut lines, &mut keys, true) {
                    Ok(_) => {
                        out.source_lines.extend(std::iter::repeat_n(line, lines.len()));
                        out.lines.extend(lines);
                    }
                    Err(e) => out.errors.push((line, e)),
                }
            }
            Err(e) => {
                out.errors.push(e);
                // Resynchronise at the next top-level expression: nothing after a broken one
                // is trusted.
                break;
            }
        }
    }
    out
}

/// The truth value `(stv s c)`, if `expr` is one.
fn stv(expr: &Expr) -> Option<Result<Value, String>> {
    let Expr::List(items) = expr else { return None };
    match items.first() {
        Some(Expr::Word(w)) if w == "stv" => {}
        _ => return None,
    }
    let number = |e: Option<&Expr>| match e {
        Some(Expr::Word(w)) => w.parse::<f64>().map_err(|_| format!("{w:?} is not a number")),
        _ => Err("(stv strength confidence) takes two numbers".to_string()),
    };
    Some(number(items.get(1)).and_then(|s| {
        let c = number(items.get(2))?;
        if items.len() > 3 {
            return Err("(stv strength confidence) takes two numbers".into());
        }
        Ok(json!({ "strength": s, "confidence": c }))
    }))
}

/// Writes the lines `expr` needs into `lines` (a node at `top` level always gets one); answers
/// how a link names it.
fn member(expr: &Expr, lines: &mut Vec<String>, keys: &mut usize, top: bool) -> Result<Value, String> {
    let Expr::List(items) = expr else {
        return Err("an atom is written (Type ...)".into());
    };
    let Some(Expr::Word(atom_type)) = items.first() else {
        return Err("an atom starts with its type, e.g. (ConceptNode \"cat\")".into());
    };
    let mut tv = None;
    let mut args = Vec::new();
    for item in &items[1..] {
        match stv(item) {
            Some(value) => tv = Some(value?),
            None => args.push(item),
        }
    }
    if atom_type.ends_with("Node") {
        let [Expr::Text(name)] = args.as_slice() else {
            return Err(format!("({atom_type} \"name\") takes one string, its name"));
        };
        let reference = json!({ "type": atom_type, "name": name });
        match tv {
            Some(tv) => lines.push(json!({ "type": atom_type, "name": name, "tv": tv }).to_string()),
            None if top => lines.push(reference.to_string()),
            None => {}
        }
        return Ok(reference);
    }
    if args.is_empty() {
        return Err(format!("the link ({atom_type} ...) has no members"));
    }
    let mut outgoing = Vec::with_capacity(args.len());
    for arg in args {
        outgoing.push(member(arg, lines, keys, false)?);
    }
    *keys += 1;
    let key = format!("atomese:{keys}");
    let mut line = json!({ "key": key, "type": atom_type, "outgoing": outgoing });
    if let Some(tv) = tv {
        line["tv"] = tv;
    }
    lines.push(line.to_string());
    Ok(json!({ "key": key }))
}

/// Writes exported atoms as Atomese, one export NDJSON line at a time.
#[derive(Default)]
pub struct Writer {
    /// Each written atom's expression by content (no truth value), by export key.
    content: HashMap<String, String>,
}

/// `s` as an Atomese string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Writer {
    /// The Atomese of one export line (`None` for values, embeddings and end lines, which Atomese does not
    /// carry), or why it cannot be written.
    pub fn line(&mut self, line: &Value) -> Result<Option<String>, String> {
        let (Some(key), Some(atom_type)) = (line["key"].as_str(), line["type"].as_str()) else {
            return Ok(None);
        };
        let tv = match (line["tv"]["strength"].as_f64(), line["tv"]["confidence"].as_f64()) {
            // OpenCog's default truth value, (stv 1 0), is left unsaid.
            (Some(s), Some(c)) if !(s == 1.0 && c == 0.0) => Some(format!("(stv {s:?} {c:?})")),
            _ => None,
        };
        let (content, written) = if let Some(name) = line["name"].as_str() {
            let content = format!("({atom_type} {})", quoted(name));
            let written = match &tv {
                Some(tv) => format!("({atom_type} {} {tv})", quoted(name)),
                None => content.clone(),
            };
            (content, written)
        } else {
            let members = line["outgoing"].as_array().ok_or("a link line without outgoing")?;
            let mut parts = Vec::with_capacity(members.len());
            for m in members {
                let k = m["key"].as_str().ok_or("an export names members by key")?;
                parts.push(
                    self.content.get(k).ok_or_else(|| format!("member {k} comes before its atom"))?.clone(),
                );
            }
            let inner = parts.join(" ");
            let content = format!("({atom_type} {inner})");
            let written = match &tv {
                Some(tv) => format!("({atom_type} {tv} {inner})"),
                None => content.clone(),
            };
            (content, written)
        };
        self.content.insert(key.to_string(), content);
        Ok(Some(written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<Value> {
        let c = to_ndjson(text);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        c.lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn nodes_links_truth_values_and_comments_become_lines_members_first() {
        let got = lines(
            "; a comment\n(ConceptNode \"cat\" (stv 0.9 0.8))\n\
             (InheritanceLink (stv 1 0.5)\n  (ConceptNode \"cat\")\n  (ConceptNode \"a \\\"big\\\" animal\"))\n\
             (EvaluationLink (PredicateNode \"eats\") (ListLink (ConceptNode \"cat\") (ConceptNode \"mouse\")))",
        );
        assert_eq!(
            got[0],
            json!({ "type": "ConceptNode", "name": "cat", "tv": { "strength": 0.9, "confidence": 0.8 } })
        );
        assert_eq!(got[1]["type"], "InheritanceLink");
        assert_eq!(got[1]["tv"], json!({ "strength": 1.0, "confidence": 0.5 }));
        assert_eq!(got[1]["outgoing"][1], json!({ "type": "ConceptNode", "name": "a \"big\" animal" }));
        // The nested ListLink first, named by key in the EvaluationLink.
        assert_eq!(got[2]["type"], "ListLink");
        assert_eq!(got[3]["outgoing"][1], json!({ "key": got[2]["key"] }));
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn bad_expressions_name_their_line_and_the_others_still_convert() {
        let c = to_ndjson("(ConceptNode \"a\" (stv 0.5 0.5))\n(ConceptNode 12)\n(ListLink)\n(ConceptNode \"b\" (stv x 1))\n(ConceptNode \"c\" (stv 1 1))");
        let lines: Vec<usize> = c.errors.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![2, 3, 4], "{:?}", c.errors);
        assert_eq!(c.lines.len(), 2);
        assert_eq!(c.source_lines, vec![1, 5]);
        let unclosed = to_ndjson("(ConceptNode \"a\")\n(ListLink (ConceptNode \"b\")");
        assert_eq!(unclosed.errors[0].0, 2);
        assert_eq!(unclosed.lines, vec![json!({ "type": "ConceptNode", "name": "a" }).to_string()]);
    }

    #[test]
    fn written_atomese_reads_back_to_the_same_atoms() {
        let export = [
            json!({ "key": "a1", "type": "ConceptNode", "name": "cat \"felix\"", "tv": { "strength": 0.9, "confidence": 0.8 } }),
            json!({ "key": "a2", "type": "ConceptNode", "name": "animal", "tv": { "strength": 1.0, "confidence": 0.0 } }),
            json!({ "key": "a3", "type": "InheritanceLink", "outgoing": [{ "key": "a1" }, { "key": "a2" }], "tv": { "strength": 0.7, "confidence": 0.6 } }),
            json!({ "key": "a4", "type": "ListLink", "outgoing": [{ "key": "a3" }], "tv": { "strength": 1.0, "confidence": 0.0 } }),
            json!({ "key": "a1", "values": { "x": 1 } }),
            json!({ "end": { "atoms": 4 } }),
        ];
        let mut w = Writer::default();
        let text: Vec<String> = export.iter().filter_map(|l| w.line(l).unwrap()).collect();
        assert_eq!(text[0], "(ConceptNode \"cat \\\"felix\\\"\" (stv 0.9 0.8))");
        assert_eq!(text[1], "(ConceptNode \"animal\")");
        assert_eq!(
            text[3],
            "(ListLink (InheritanceLink (ConceptNode \"cat \\\"felix\\\"\") (ConceptNode \"animal\")))"
        );
        let back = lines(&text.join("\n"));
        // Every top-level atom gets a line; nested ones are named by content (a link by key).
        assert_eq!(back.len(), 5, "{back:?}");
        assert_eq!(back[0]["name"], "cat \"felix\"");
        assert_eq!(back[1], json!({ "type": "ConceptNode", "name": "animal" }));
        assert_eq!(back[2]["tv"], json!({ "strength": 0.7, "confidence": 0.6 }));
        assert!(back[3].get("tv").is_none(), "a nested member carries no truth value");
        assert_eq!(back[4]["type"], "ListLink");
    }
}
