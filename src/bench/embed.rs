//! `cograft bench embed`: sentence-embedding throughput through the API (a fresh 1-node cluster,
//! one worker with the same threads) against a direct llama-cpp-2 loop over the same texts in
//! this process, in one run. Rounds alternate (direct, API, API, direct, ...) so the machine's
//! drift falls on both; the medians and the API's overhead are printed, for requests of one text
//! and of a batch.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::json;

use crate::client::Client;

pub struct EmbedArgs {
    pub dir: PathBuf,
    pub base_port: u16,
    pub model: PathBuf,
    pub texts: usize,
    pub batch: usize,
    pub threads: usize,
    pub rounds: usize,
}

/// The environment the bench's node needs (set before any thread starts).
pub fn node_env(args: &EmbedArgs) -> anyhow::Result<Vec<(&'static str, String)>> {
    let model = args.model.canonicalize().with_context(|| {
        format!("the embedding model {} is missing: run `make models`", args.model.display())
    })?;
    Ok(vec![
        ("COGRAFT__INFERENCE__EMBEDDING_MODEL", model.display().to_string()),
        ("COGRAFT__INFERENCE__WORKERS_MIN", "1".into()),
        ("COGRAFT__INFERENCE__WORKERS_MAX", "1".into()),
        ("COGRAFT__INFERENCE__THREADS_PER_WORKER", args.threads.to_string()),
    ])
}

/// Short sentences, all different (no cache anywhere can help).
fn texts(n: usize) -> Vec<String> {
    let subjects =
        ["the cat", "a leader", "my neighbour", "the old river", "this database", "a tired student"];
    let verbs = ["watches", "replicates", "forgets", "remembers", "follows", "questions"];
    let objects = ["the quorum", "a red ball", "every log entry", "the morning train", "its last snapshot"];
    (0..n)
        .map(|i| {
            format!(
                "{} {} {} on day {i}.",
                subjects[i % subjects.len()],
                verbs[(i / subjects.len()) % verbs.len()],
                objects[(i / 7) % objects.len()]
            )
        })
        .collect()
}

pub async fn run(args: EmbedArgs) -> anyhow::Result<()> {
    if args.texts == 0 || args.batch == 0 || args.rounds == 0 {
        bail!("--texts, --batch and --rounds must be positive");
    }
    let texts = texts(args.texts);
    let (dir, base_port) = (args.dir.clone(), args.base_port);
    super::on_fresh_node(&dir, base_port, |client| async move { measure(&args, &client, &texts).await }).await
}

async fn measure(args: &EmbedArgs, client: &Client, texts: &[String]) -> anyhow::Result<()> {
    let probe = client.call(Method::POST, "/v1/embed", Some(&json!({ "texts": ["warm up"] }))).await?;
    println!(
        "model {} ({} dimensions), {} texts per round, {} thread(s), {} rounds each",
        probe["model"],
        probe["dim"],
        texts.len(),
        args.threads,
        args.rounds
    );
    let mut direct = direct::Loop::start(&args.model, args.threads)?;
    for batch in [1, args.batch] {
        let (mut d, mut a) = (Vec::new(), Vec::new());
        for round in 0..args.rounds * 2 {
            // ABBA: direct, API, API, direct, ...
            if (round % 4 == 0) || (round % 4 == 3) {
                d.push(direct.rate(texts, batch).await?);
            } else {
                a.push(api_rate(client, texts, batch).await?);
            }
        }
        let (d, a) = (super::median(d), super::median(a));
        println!(
            "requests of {batch:>3} text(s): direct llama-cpp-2 {d:>7.0} texts/s, through /v1/embed {a:>7.0} texts/s, overhead {:+.1}%",
            (d / a - 1.0) * 100.0
        );
    }
    Ok(())
}

async fn api_rate(client: &Client, texts: &[String], batch: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    for chunk in texts.chunks(batch) {
        let reply = client.call(Method::POST, "/v1/embed", Some(&json!({ "texts": chunk }))).await?;
        if reply["embeddings"].as_array().map(Vec::len) != Some(chunk.len()) {
            bail!("/v1/embed answered {reply}");
        }
    }
    Ok(texts.len() as f64 / started.elapsed().as_secs_f64())
}

#[cfg(feature = "inference")]
mod direct {
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Instant;

    use anyhow::Context;
    use cograft_actors::inference::embedder::Embedder;
    use cograft_actors::inference::worker::{file_digest, WorkerArgs};
    use llama_cpp_2::llama_backend::LlamaBackend;
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::model::LlamaModel;

    type Job = (Vec<String>, usize, tokio::sync::oneshot::Sender<anyhow::Result<f64>>);

    /// A thread of its own holding the model and one context (contexts borrow the model).
    pub struct Loop {
        jobs: mpsc::Sender<Job>,
    }

    impl Loop {
        pub fn start(model: &Path, threads: usize) -> anyhow::Result<Loop> {
            let (jobs, rx) = mpsc::channel::<Job>();
            let (ready_tx, ready) = mpsc::channel();
            let args = WorkerArgs::embedding(model.to_path_buf(), threads);
            std::thread::spawn(move || {
                // llama.cpp's loader log would bury the figures.
                llama_cpp_2::send_logs_to_tracing(
                    llama_cpp_2::LogOptions::default().with_logs_enabled(false),
                );
                let setup = || -> anyhow::Result<(LlamaBackend, LlamaModel)> {
                    let backend = LlamaBackend::init().context("initialising llama.cpp")?;
                    let model =
                        LlamaModel::load_from_file(&backend, &args.model, &LlamaModelParams::default())
                            .context("loading the model")?;
                    Ok((backend, model))
                };
                let (backend, model) = match setup() {
                    Ok(v) => v,
                    Err(e) => return ready_tx.send(Err(e)).unwrap_or(()),
                };
                let digest = match file_digest(&args.model) {
                    Ok(d) => d,
                    Err(e) => return ready_tx.send(Err(e)).unwrap_or(()),
                };
                let mut embedder = match Embedder::new(&backend, &model, &args, digest) {
                    Ok(e) => e,
                    Err(e) => return ready_tx.send(Err(e)).unwrap_or(()),
                };
                let _ = ready_tx.send(Ok(()));
                for (texts, batch, reply) in rx {
                    let started = Instant::now();
                    let done = texts.chunks(batch).try_for_each(|chunk| embedder.embed(chunk).map(|_| ()));
                    let _ = reply.send(done.map(|()| texts.len() as f64 / started.elapsed().as_secs_f64()));
                }
            });
            ready.recv().context("the direct loop's thread died")??;
            Ok(Loop { jobs })
        }

        pub async fn rate(&mut self, texts: &[String], batch: usize) -> anyhow::Result<f64> {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.jobs.send((texts.to_vec(), batch, tx)).ok().context("the direct loop stopped")?;
            rx.await.context("the direct loop stopped")?
        }
    }
}

#[cfg(not(feature = "inference"))]
mod direct {
    pub struct Loop;

    impl Loop {
        pub fn start(_: &std::path::Path, _: usize) -> anyhow::Result<Loop> {
            anyhow::bail!("bench embed needs a build with --features inference (make bench builds with it)")
        }

        pub async fn rate(&mut self, _: &[String], _: usize) -> anyhow::Result<f64> {
            unreachable!("Loop::start fails without the inference feature")
        }
    }
}
