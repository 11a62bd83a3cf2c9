//! The node's own check of a user's GBNF grammar, before it reaches llama.cpp: size, no NUL, a
//! `root` rule, closed literals and character classes, and bounded repetitions (llama.cpp
//! expands `x{m,n}` into rules, so `{1000000}` would cost the worker its memory, and computes
//! `n - m` unsigned, so `{5,3}` would expand without end). The worker's
//! llama.cpp parser then has the last word on everything else; a grammar it refuses is a 400 too.

/// The largest count a repetition `{m}` / `{m,n}` may name.
pub const MAX_REPETITION: u64 = 256;

/// Checks `grammar`; the error names the problem and where it is (line:column).
pub fn check(grammar: &str, max_bytes: usize) -> Result<(), String> {
    if grammar.trim().is_empty() {
        return Err("the grammar is empty".into());
    }
    if grammar.len() > max_bytes {
        return Err(format!(
            "the grammar has {} bytes, over inference.max_grammar_bytes ({max_bytes})",
            grammar.len()
        ));
    }
    if grammar.contains('\0') {
        return Err("the grammar holds a NUL character".into());
    }
    let mut scan = Scan { chars: grammar.char_indices().peekable(), text: grammar };
    let mut line_start = true;
    let mut has_root = false;
    while let Some((at, c)) = scan.chars.next() {
        match c {
            '#' => scan.skip_line(),
            '"' => scan.closed(at, '"', "string literal")?,
            '[' => scan.closed(at, ']', "character class")?,
            '{' => scan.repetition(at)?,
            _ => {}
        }
        if line_start && !matches!(c, ' ' | '\t') && grammar[at..].starts_with("root") {
            let rest = grammar[at + 4..].trim_start_matches([' ', '\t']);
            has_root |= rest.starts_with("::=");
        }
        // A rule may be indented: spaces keep a line's start.
        line_start = c == '\n' || (line_start && matches!(c, ' ' | '\t'));
    }
    if !has_root {
        return Err("the grammar has no `root ::= ...` rule at the start of a line".into());
    }
    Ok(())
}

struct Scan<'g> {
    chars: std::iter::Peekable<std::str::CharIndices<'g>>,
    text: &'g str,
}

impl Scan<'_> {
    fn skip_line(&mut self) {
        while self.chars.next_if(|&(_, c)| c != '\n').is_some() {}
    }

    /// Skips to the `close` of a literal or class opened at `at`, past escapes.
    fn closed(&mut self, at: usize, close: char, what: &str) -> Result<(), String> {
        while let Some((_, c)) = self.chars.next() {
            match c {
                '\\' => {
                    self.chars.next();
                }
                c if c == close => return Ok(()),
                _ => {}
            }
        }
        Err(format!("the {what} opened at {} is not closed", self.position(at)))
    }

    /// Reads `{m}`, `{m,}` or `{m,n}` and checks its counts.
    fn repetition(&mut self, at: usize) -> Result<(), String> {
        let mut body = String::new();
        loop {
            match self.chars.next() {
                Some((_, '}')) => break,
                Some((_, c)) if c.is_ascii_digit() || c == ',' || c == ' ' => body.push(c),
                _ => {
                    return Err(format!(
                        "the repetition at {} is not {{m}}, {{m,}} or {{m,n}}",
                        self.position(at)
                    ))
                }
            }
        }
        let mut counts = body.split(',').map(str::trim);
        let bad =
            || format!("the repetition {{{body}}} at {} is not {{m}}, {{m,}} or {{m,n}}", self.position(at));
        let min = counts.next().filter(|m| !m.is_empty()).ok_or_else(bad)?;
        let max = counts.next();
        if counts.next().is_some() {
            return Err(bad());
        }
        let min: u64 = min.parse().map_err(|_| bad())?;
        let max: Option<u64> =
            max.filter(|m| !m.is_empty()).map(|m| m.parse().map_err(|_| bad())).transpose()?;
        if max.is_some_and(|max| max < min) {
            // llama.cpp computes max - min unsigned: it would wrap and expand without end.
            return Err(format!(
                "the repetition {{{body}}} at {} has its maximum below its minimum",
                self.position(at)
            ));
        }
        for n in std::iter::once(min).chain(max) {
            if n > MAX_REPETITION {
                return Err(format!(
                    "the repetition {{{body}}} at {} counts {n}, over {MAX_REPETITION}: use * or + instead",
                    self.position(at)
                ));
            }
        }
        Ok(())
    }

    fn position(&self, at: usize) -> String {
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("{line}:{column}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_grammars_pass() {
        check(super::super::extract::GRAMMAR, 16384).unwrap();
        check("root ::= \"yes\" | \"no\"", 100).unwrap();
        check("# a comment with \" and [ and {\nroot   ::= [a-z]{1,8} \"}\" [\\]]", 100).unwrap();
    }

    #[test]
    fn bad_grammars_are_named() {
        let err = |g: &str| check(g, 1000).unwrap_err();
        assert!(err("").contains("empty"));
        assert!(check(&format!("root ::= \"{}\"", "a".repeat(100)), 50)
            .unwrap_err()
            .contains("max_grammar_bytes"));
        assert!(err("answer ::= \"x\"").contains("no `root"));
        check("  root ::= \"x\"", 100).unwrap();
        check("root ::= \"two\nlines\"", 100).unwrap();
        assert!(err("x ::= \"a\" root ::= \"x\"").contains("no `root"), "root must start a rule");
        assert!(err("root ::= \"open").contains("string literal opened at 1:10"));
        assert!(err("root ::= \"x\"\nx ::= [a-z").contains("character class opened at 2:7"));
        assert!(err("root ::= \"a\"{1000000}").contains("over 256"));
        assert!(err("root ::= \"a\"{2,99999}").contains("over 256"));
        assert!(err("root ::= \"a\"{x}").contains("not {m}"));
        assert!(err("root ::= \"a\"{,3}").contains("not {m}"));
        assert!(err("root ::= \"a\"{1,2,3}").contains("not {m}"));
        assert!(err("root ::= \"a\"{5,3}").contains("maximum below its minimum"));
        assert!(err("root ::= \"\0\"").contains("NUL"));
    }
}
