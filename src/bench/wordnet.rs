//! WordNet 3.0 as a knowledge graph, read from Debian's `wordnet-base` database files
//! (`/usr/share/wordnet/data.{noun,verb,adj,adv}`): a `ConceptNode` per synset, a `WordNode`
//! per lemma, a `MemberLink(word, synset)` per sense, and per relation between synsets the
//! OpenCog form `EvaluationLink(PredicateNode relation, ListLink(source, target))`. About 1.2M
//! atoms: the size the scale figures are measured at.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};

/// One synset: its key (part of speech + offset), lemmas and relations to other synsets.
pub struct Synset {
    pub key: String,
    pub words: Vec<String>,
    /// (relation name, target synset key), without repeats.
    pub relations: BTreeSet<(&'static str, String)>,
}

/// Every synset of the four parts of speech.
pub struct WordNet {
    pub synsets: Vec<Synset>,
}

impl WordNet {
    pub fn load(dir: &Path) -> anyhow::Result<WordNet> {
        let mut synsets = Vec::new();
        for pos in ["noun", "verb", "adj", "adv"] {
            let path = dir.join(format!("data.{pos}"));
            let bytes = std::fs::read(&path).with_context(|| {
                format!("reading {} (install Debian's wordnet-base: `make bench` does)", path.display())
            })?;
            // The files are Latin-1; every byte maps to the code point of the same value.
            let text: String = bytes.iter().map(|b| char::from(*b)).collect();
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.starts_with("  ")) {
                synsets.push(parse(line).with_context(|| format!("{}:{}", path.display(), n + 1))?);
            }
        }
        Ok(WordNet { synsets })
    }

    /// Distinct lemmas (lower-cased), in order.
    pub fn words(&self) -> BTreeSet<String> {
        self.synsets.iter().flat_map(|s| s.words.iter().cloned()).collect()
    }

    /// Relation names in use, in order.
    pub fn relations(&self) -> BTreeSet<&'static str> {
        self.synsets.iter().flat_map(|s| s.relations.iter().map(|(r, _)| *r)).collect()
    }

    /// How many atoms the graph makes.
    pub fn atom_count(&self) -> usize {
        let senses: usize = self.synsets.iter().map(|s| s.words.len()).sum();
        let relations: usize = self.synsets.iter().map(|s| s.relations.len()).sum();
        self.synsets.len() + self.words().len() + self.relations().len() + senses + 2 * relations
    }
}

/// One atom of the WordNet graph; a link names its members by their positions in the list
/// [`WordNet::atoms`] answers.
pub enum AtomSpec {
    Node { atom_type: &'static str, name: String },
    Link { atom_type: &'static str, members: [usize; 2] },
}

impl WordNet {
    /// The graph, members before the links that hold them: a PredicateNode per relation, a
    /// ConceptNode per synset, a WordNode per lemma, a MemberLink(word, synset) per sense, and
    /// per relation to a synset that exists ListLink(source, target) then
    /// EvaluationLink(predicate, list). The one description of the graph the benches load.
    pub fn atoms(&self) -> Vec<AtomSpec> {
        let mut atoms = Vec::with_capacity(self.atom_count());
        let node = |atoms: &mut Vec<AtomSpec>, atom_type, name: &str| {
            atoms.push(AtomSpec::Node { atom_type, name: name.to_string() });
            atoms.len() - 1
        };
        let predicates: BTreeMap<&str, usize> =
            self.relations().into_iter().map(|r| (r, node(&mut atoms, "PredicateNode", r))).collect();
        let synsets: BTreeMap<&str, usize> =
            self.synsets.iter().map(|s| (s.key.as_str(), node(&mut atoms, "ConceptNode", &s.key))).collect();
        let words: BTreeMap<String, usize> =
            self.words().into_iter().map(|w| (w.clone(), node(&mut atoms, "WordNode", &w))).collect();
        for s in &self.synsets {
            for w in &s.words {
                atoms.push(AtomSpec::Link {
                    atom_type: "MemberLink",
                    members: [words[w], synsets[s.key.as_str()]],
                });
            }
        }
        for s in &self.synsets {
            for (relation, target) in &s.relations {
                let Some(target) = synsets.get(target.as_str()) else { continue };
                atoms.push(AtomSpec::Link {
                    atom_type: "ListLink",
                    members: [synsets[s.key.as_str()], *target],
                });
                let list = atoms.len() - 1;
                atoms.push(AtomSpec::Link {
                    atom_type: "EvaluationLink",
                    members: [predicates[relation], list],
                });
            }
        }
        atoms
    }

    /// The graph as import NDJSON, each atom keyed `k<position>`; answers the lines written.
    pub fn write_ndjson(&self, out: &mut impl std::io::Write) -> anyhow::Result<usize> {
        let atoms = self.atoms();
        for (i, atom) in atoms.iter().enumerate() {
            let key = format!("k{i}");
            let line = match atom {
                AtomSpec::Node { atom_type, name } => {
                    serde_json::json!({ "key": key, "type": atom_type, "name": name })
                }
                AtomSpec::Link { atom_type, members } => {
                    let members: Vec<_> =
                        members.iter().map(|m| serde_json::json!({ "key": format!("k{m}") })).collect();
                    serde_json::json!({ "key": key, "type": atom_type, "outgoing": members })
                }
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
        Ok(atoms.len())
    }
}

fn parse(line: &str) -> anyhow::Result<Synset> {
    let fields = line.split_once(" | ").map(|(f, _gloss)| f).unwrap_or(line);
    let f: Vec<&str> = fields.split_whitespace().collect();
    let field = |i: usize| f.get(i).copied().context("the line ends early");
    let (offset, ss_type) = (field(0)?, field(2)?);
    let count = usize::from_str_radix(field(3)?, 16).context("word count")?;
    let mut i = 4;
    let mut words = Vec::with_capacity(count);
    for _ in 0..count {
        words.push(field(i)?.to_lowercase());
        i += 2;
    }
    let pointers: usize = field(i)?.parse().context("pointer count")?;
    i += 1;
    let mut relations = BTreeSet::new();
    for _ in 0..pointers {
        let (symbol, target, target_pos) = (field(i)?, field(i + 1)?, field(i + 2)?);
        i += 4;
        relations.insert((relation(symbol), format!("{}{target}", pos_letter(target_pos)?)));
    }
    Ok(Synset { key: format!("{}{offset}", pos_letter(ss_type)?), words, relations })
}

/// Satellite adjectives (`s`) share the adjective files: one letter per part of speech.
fn pos_letter(ss_type: &str) -> anyhow::Result<char> {
    Ok(match ss_type {
        "n" => 'n',
        "v" => 'v',
        "a" | "s" => 'a',
        "r" => 'r',
        other => bail!("unknown part of speech {other:?}"),
    })
}

/// WordNet's pointer symbols, named as predicates (wndb(5WN)).
fn relation(symbol: &str) -> &'static str {
    let names: BTreeMap<&str, &'static str> = [
        ("!", "antonym"),
        ("@", "hypernym"),
        ("@i", "instance_hypernym"),
        ("~", "hyponym"),
        ("~i", "instance_hyponym"),
        ("#m", "member_holonym"),
        ("#s", "substance_holonym"),
        ("#p", "part_holonym"),
        ("%m", "member_meronym"),
        ("%s", "substance_meronym"),
        ("%p", "part_meronym"),
        ("=", "attribute"),
        ("+", "derivation"),
        (";c", "topic_domain"),
        ("-c", "topic_member"),
        (";r", "region_domain"),
        ("-r", "region_member"),
        (";u", "usage_domain"),
        ("-u", "usage_member"),
        ("*", "entailment"),
        (">", "cause"),
        ("^", "also_see"),
        ("$", "verb_group"),
        ("&", "similar_to"),
        ("<", "participle"),
        ("\\", "pertainym"),
    ]
    .into_iter()
    .collect();
    names.get(symbol).copied().unwrap_or("related")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_line_becomes_a_synset() {
        let s = parse("00002137 03 n 02 abstraction 0 abstract_entity 0 002 @ 00001740 n 0000 + 00692347 v 0101 | a general concept").unwrap();
        assert_eq!(s.key, "n00002137");
        assert_eq!(s.words, vec!["abstraction", "abstract_entity"]);
        let relations: Vec<_> = s.relations.iter().cloned().collect();
        assert_eq!(
            relations,
            vec![("derivation", "v00692347".to_string()), ("hypernym", "n00001740".to_string())]
        );
        assert!(parse("00002137 03 n 02 abstraction").is_err(), "a short line is an error");
    }
}
