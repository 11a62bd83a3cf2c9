//! `cograft bench similar`: exact top-k search over `rows` unit vectors of `dim` dimensions
//! (100k x 384 by default), in batches of 1 and of 64 queries, three ways in one run on the
//! same vectors and queries: the node's search (the vector index's chunked products, ggml's in
//! builds with the `inference` feature, and its top-k selection), a scalar Rust scan (one dot
//! product at a time: the floor), and FAISS's `IndexFlatIP` (the peer, PyPI `faiss-cpu`, run by
//! `scripts/bench/faiss_flat.py` in its own venv). Each reports the median batch latency and
//! queries/s; the figure is cograft's queries/s over FAISS's. The three must agree on the first
//! query's neighbours (ties aside), or the run fails.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use cograft_actors::similarity::index::VectorIndex;
use cograft_actors::similarity::scan::{self, normalised, Scored, TopK};
use cograft_actors::similarity::Matrix;
use cograft_actors::spreading::synthetic::Draw;
use cograft_actors::storage::apply::embeddings::vector_bytes;

pub struct SimilarArgs {
    pub rows: usize,
    pub dim: usize,
    pub queries: usize,
    pub top_k: usize,
    pub threads: usize,
    /// The venv whose python has faiss-cpu (`make faiss-deps`).
    pub faiss_python: PathBuf,
    pub work_dir: PathBuf,
}

const BATCHES: [usize; 2] = [1, 64];

/// Median seconds of a batch and queries/s of a list of batch timings.
fn summary(times: &[f64], batch: usize) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let total: f64 = times.iter().sum();
    (median, (times.len() * batch) as f64 / total)
}

fn unit_rows(draw: &mut Draw, rows: usize, dim: usize) -> Vec<f32> {
    let mut data = Vec::with_capacity(rows * dim);
    for _ in 0..rows {
        // A sum of uniforms is close enough to normal for directions spread over the sphere.
        let row: Vec<f32> =
            (0..dim).map(|_| (draw.unit() + draw.unit() + draw.unit() - 1.5) as f32).collect();
        data.extend(normalised(&row));
    }
    data
}

pub fn run(args: SimilarArgs) -> anyhow::Result<()> {
    if args.queries < *BATCHES.iter().max().unwrap_or(&1) {
        bail!("--queries must be at least {} (one batch of the largest size)", BATCHES[1]);
    }
    let (rows, dim) = (args.rows, args.dim);
    let mut draw = Draw::new(2026);
    let base = unit_rows(&mut draw, rows, dim);
    let queries = unit_rows(&mut draw, args.queries, dim);
    let mut index = VectorIndex::default();
    for (r, row) in base.chunks_exact(dim).enumerate() {
        index
            .set("bench", "m", r as u64, "ConceptNode", Some(&vector_bytes(row)))
            .map_err(anyhow::Error::msg)?;
    }
    let model = index.model("bench", "m").context("the bench's vectors")?;
    println!(
        "== bench similar: top-{} over {rows} x {dim} unit vectors, {} queries, {} thread(s), engine {}",
        args.top_k,
        args.queries,
        args.threads,
        cograft_actors::similarity::PRODUCT_ENGINE
    );

    let query_rows: Vec<Vec<f32>> = queries.chunks_exact(dim).map(<[f32]>::to_vec).collect();
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    let mut first_ours = Vec::new();
    let mut first_floor = Vec::new();
    for batch in BATCHES {
        let (mut t_ours, mut t_floor) = (Vec::new(), Vec::new());
        for (n, chunk) in query_rows.chunks_exact(batch).enumerate() {
            let started = Instant::now();
            let hits =
                model.search(chunk, args.top_k, None, &[], args.threads).map_err(anyhow::Error::msg)?;
            t_ours.push(started.elapsed().as_secs_f64());
            let started = Instant::now();
            let plain = scalar(&base, rows, dim, chunk, args.top_k);
            t_floor.push(started.elapsed().as_secs_f64());
            if n == 0 && batch == 1 {
                first_ours = hits[0].iter().map(|s| s.id).collect();
                first_floor = plain[0].iter().map(|s| s.id).collect();
            }
            // The floor is slow: a few batches give its rate.
            if t_floor.len() >= 8 {
                break;
            }
        }
        // The rest of the batches for cograft's own figure.
        for chunk in query_rows.chunks_exact(batch).skip(t_ours.len()) {
            let started = Instant::now();
            model.search(chunk, args.top_k, None, &[], args.threads).map_err(anyhow::Error::msg)?;
            t_ours.push(started.elapsed().as_secs_f64());
        }
        ours.push(summary(&t_ours, batch));
        floor.push(summary(&t_floor, batch));
    }
    if first_ours != first_floor {
        bail!(
            "the search and the scalar scan disagree on the first query: {first_ours:?} vs {first_floor:?}"
        );
    }

    let faiss = faiss(&args, &base, &queries)?;
    if faiss.first_hits != first_ours {
        bail!("FAISS and cograft disagree on the first query: {:?} vs {first_ours:?}", faiss.first_hits);
    }
    println!(
        "   {:>5} | {:>24} | {:>24} | {:>24} | cograft/FAISS",
        "batch", "cograft", "scalar Rust", "FAISS flat"
    );
    for (i, batch) in BATCHES.iter().enumerate() {
        let (peer_median, peer_qps) = summary(&faiss.batches[i], *batch);
        let cell = |(median, qps): (f64, f64)| format!("{:>8.2} ms {:>9.0} q/s", median * 1e3, qps);
        println!(
            "   {batch:>5} | {} | {} | {} | {:.2}x",
            cell(ours[i]),
            cell(floor[i]),
            cell((peer_median, peer_qps)),
            ours[i].1 / peer_qps
        );
    }
    println!(
        "   (FAISS {} on {} thread(s), per batch size the faster of its two BLAS thresholds, seconds of all \
         batches: {}; the same vectors, queries and first neighbours)",
        faiss.version, args.threads, faiss.configs
    );
    Ok(())
}

/// Every query's top-k by one dot product at a time, the selection the index uses.
fn scalar(base: &[f32], rows: usize, dim: usize, queries: &[Vec<f32>], k: usize) -> Vec<Vec<Scored>> {
    queries
        .iter()
        .map(|q| {
            let mut scores = vec![0.0; rows];
            let qm = Matrix { data: q, rows: 1, cols: dim };
            scan::dot_products(Matrix { data: base, rows, cols: dim }, qm, &mut scores);
            let mut top = TopK::new(k);
            for (r, score) in scores.into_iter().enumerate() {
                top.offer(Scored { score, id: r as u64 });
            }
            top.into_sorted()
        })
        .collect()
}

struct Faiss {
    version: String,
    /// Seconds of all batches per BLAS threshold and batch size, as the script reports them.
    configs: serde_json::Value,
    batches: Vec<Vec<f64>>,
    first_hits: Vec<u64>,
}

fn faiss(args: &SimilarArgs, base: &[f32], queries: &[f32]) -> anyhow::Result<Faiss> {
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let write = |name: &str, data: &[f32]| -> anyhow::Result<PathBuf> {
        let path = args.work_dir.join(name);
        std::fs::write(&path, vector_bytes(data)).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let (base_file, query_file) = (write("base.f32", base)?, write("queries.f32", queries)?);
    let batches = BATCHES.map(|b| b.to_string()).join(",");
    let output = Command::new(&args.faiss_python)
        .arg("scripts/bench/faiss_flat.py")
        .args(["--base".as_ref(), base_file.as_os_str(), "--queries".as_ref(), query_file.as_os_str()])
        .args(["--dim", &args.dim.to_string(), "--k", &args.top_k.to_string(), "--batches", &batches])
        .args(["--threads", &args.threads.to_string()])
        .output()
        .with_context(|| {
            format!(
                "running {} (`make faiss-deps` makes the venv with faiss-cpu)",
                args.faiss_python.display()
            )
        })?;
    if !output.status.success() {
        bail!("the FAISS side failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let reply: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("the FAISS side's answer")?;
    let times = |b: usize| -> Vec<f64> {
        reply["batches"][b.to_string()]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_f64()).collect())
            .unwrap_or_default()
    };
    let batches: Vec<Vec<f64>> = BATCHES.iter().map(|b| times(*b)).collect();
    if batches.iter().any(Vec::is_empty) {
        bail!("the FAISS side timed no batch: {reply}");
    }
    Ok(Faiss {
        version: reply["faiss"].as_str().unwrap_or("?").to_string(),
        configs: reply["configs"].clone(),
        batches,
        first_hits: reply["first_hits"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i.as_u64()).collect())
            .unwrap_or_default(),
    })
}
