//! `cograft bench generate` and `cograft bench extract`: the chat model through the API on a
//! fresh 1-node cluster (one generation worker with the same threads). `generate` measures
//! tokens/s through `/v1/generate` against a plain llama-cpp-2 loop in this process (the same
//! prompt, greedy, `llama_sampler_sample` on a greedy sampler: no grammar, no candidate copies),
//! rounds alternated so the machine's drift falls on both, and prints the API's overhead.
//! `extract` runs `/v1/extract` over the fixed sentences of `tests/data/extraction_sentences.json`
//! and prints texts/s and triples per text.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};

pub struct GenerateArgs {
    pub dir: PathBuf,
    pub base_port: u16,
    pub model: PathBuf,
    pub tokens: u32,
    pub threads: usize,
    pub rounds: usize,
}

/// The bench's prompt: raw text (no chat template), so both sides decode the same tokens.
const PROMPT: &str = "The history of the printing press begins in the fifteenth century, when";

/// The environment the bench's node needs (set before any thread starts).
pub fn node_env(model: &std::path::Path, threads: usize) -> anyhow::Result<Vec<(&'static str, String)>> {
    let model = model
        .canonicalize()
        .with_context(|| format!("the generation model {} is missing: run `make models`", model.display()))?;
    Ok(vec![
        ("COGRAFT__INFERENCE__GENERATION_MODEL", model.display().to_string()),
        ("COGRAFT__INFERENCE__WORKERS_MIN", "1".into()),
        ("COGRAFT__INFERENCE__WORKERS_MAX", "1".into()),
        ("COGRAFT__INFERENCE__THREADS_PER_WORKER", threads.to_string()),
    ])
}

pub async fn run_generate(args: GenerateArgs) -> anyhow::Result<()> {
    if args.tokens == 0 || args.rounds == 0 {
        bail!("--tokens and --rounds must be positive");
    }
    let dir = args.dir.clone();
    super::on_fresh_node(&dir, args.base_port, |client| async move {
        let body = json!({ "prompt": PROMPT, "chat": false, "max_tokens": args.tokens });
        let warm = client.call(Method::POST, "/v1/generate", Some(&body)).await?;
        let tokens = warm["tokens"].as_u64().unwrap_or(0);
        println!(
            "model {}, {tokens} tokens per generation (asked {}), {} thread(s), {} rounds each",
            warm["model"], args.tokens, args.threads, args.rounds
        );
        let mut direct = direct::Loop::start(&args.model, args.threads)?;
        let (mut d, mut a, mut decode) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..args.rounds * 2 {
            // ABBA: direct, API, API, direct, ...
            if round % 4 == 0 || round % 4 == 3 {
                let (n, rate) = direct.rate(PROMPT, args.tokens).await?;
                if n as u64 != tokens {
                    bail!("the direct loop generated {n} tokens, the API {tokens}: not the same work");
                }
                d.push(rate);
            } else {
                let started = Instant::now();
                let reply = client.call(Method::POST, "/v1/generate", Some(&body)).await?;
                let elapsed = started.elapsed().as_secs_f64();
                if reply["text"] != warm["text"] {
                    bail!("greedy generation answered another text: {reply}");
                }
                a.push(tokens as f64 / elapsed);
                decode.push(reply["tokens_per_second"].as_f64().unwrap_or(0.0));
            }
        }
        let (d, a, decode) = (super::median(d), super::median(a), super::median(decode));
        println!(
            "direct llama-cpp-2 {d:.1} tokens/s, through /v1/generate {a:.1} tokens/s (the worker's own \
             decoding rate {decode:.1}), overhead {:+.1}%",
            (d / a - 1.0) * 100.0
        );
        Ok(())
    })
    .await
}

pub struct ExtractArgs {
    pub dir: PathBuf,
    pub base_port: u16,
    pub sentences: PathBuf,
}

pub async fn run_extract(args: ExtractArgs) -> anyhow::Result<()> {
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(&args.sentences)
            .with_context(|| format!("reading {}", args.sentences.display()))?,
    )?;
    let sentences: Vec<String> = data["sentences"]
        .as_array()
        .context("the sentences file has no \"sentences\" list")?
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    if sentences.is_empty() {
        bail!("{} holds no sentences", args.sentences.display());
    }
    super::on_fresh_node(&args.dir, args.base_port, |client| async move {
        client.call(Method::POST, "/v1/extract", Some(&json!({ "text": "Warm up." }))).await?;
        for insert in [false, true] {
            let (mut triples, mut dropped, mut tokens) = (0u64, 0u64, 0u64);
            let started = Instant::now();
            for text in &sentences {
                let body = json!({ "text": text, "insert": insert });
                let reply = client.call(Method::POST, "/v1/extract?space=bench", Some(&body)).await?;
                triples += reply["triples"].as_array().map_or(0, Vec::len) as u64;
                dropped += reply["dropped"].as_u64().unwrap_or(0);
                tokens += reply["tokens"].as_u64().unwrap_or(0);
            }
            let seconds = started.elapsed().as_secs_f64();
            let n = sentences.len() as f64;
            println!(
                "{} sentences, insert {insert}: {:.2} texts/s, {:.2} triples per text ({dropped} dropped), \
                 {:.0} answer tokens per text",
                sentences.len(),
                n / seconds,
                triples as f64 / n,
                tokens as f64 / n
            );
        }
        Ok(())
    })
    .await
}

#[cfg(feature = "inference")]
mod direct {
    use std::num::NonZeroU32;
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Instant;

    use anyhow::Context;
    use llama_cpp_2::context::params::LlamaContextParams;
    use llama_cpp_2::llama_backend::LlamaBackend;
    use llama_cpp_2::llama_batch::LlamaBatch;
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::model::LlamaModel;
    use llama_cpp_2::sampling::LlamaSampler;

    type Job = (String, u32, tokio::sync::oneshot::Sender<anyhow::Result<(u32, f64)>>);

    /// A thread of its own holding the model and one context.
    pub struct Loop {
        jobs: mpsc::Sender<Job>,
    }

    impl Loop {
        pub fn start(model: &Path, threads: usize) -> anyhow::Result<Loop> {
            let (jobs, rx) = mpsc::channel::<Job>();
            let (ready_tx, ready) = mpsc::channel();
            let path = model.to_path_buf();
            std::thread::spawn(move || {
                llama_cpp_2::send_logs_to_tracing(
                    llama_cpp_2::LogOptions::default().with_logs_enabled(false),
                );
                let setup = || -> anyhow::Result<(LlamaBackend, LlamaModel)> {
                    let backend = LlamaBackend::init().context("initialising llama.cpp")?;
                    let model = LlamaModel::load_from_file(&backend, &path, &LlamaModelParams::default())
                        .context("loading the model")?;
                    Ok((backend, model))
                };
                let (backend, model) = match setup() {
                    Ok(v) => v,
                    Err(e) => return ready_tx.send(Err(e)).unwrap_or(()),
                };
                let params = LlamaContextParams::default()
                    .with_n_ctx(NonZeroU32::new(2048))
                    .with_n_threads(threads as i32)
                    .with_n_threads_batch(threads as i32);
                let mut context = match model.new_context(&backend, params) {
                    Ok(c) => c,
                    Err(e) => return ready_tx.send(Err(e.into())).unwrap_or(()),
                };
                let _ = ready_tx.send(Ok(()));
                for (prompt, max, reply) in rx {
                    let mut run = || -> anyhow::Result<(u32, f64)> {
                        let started = Instant::now();
                        context.clear_kv_cache();
                        let tokens = model.vocab().tokenize(prompt.as_bytes(), true, false);
                        let mut batch = LlamaBatch::new(tokens.len().max(1), 1);
                        batch.add_sequence(&tokens, 0, false)?;
                        context.decode(&mut batch)?;
                        let mut sampler = LlamaSampler::greedy();
                        let mut generated = 0u32;
                        while generated < max {
                            let token = sampler.sample(&context, -1);
                            if model.vocab().is_eog(token) {
                                break;
                            }
                            generated += 1;
                            let mut next = LlamaBatch::new(1, 1);
                            next.add(token, (tokens.len() + generated as usize - 1) as i32, &[0], true)?;
                            context.decode(&mut next)?;
                        }
                        Ok((generated, f64::from(generated) / started.elapsed().as_secs_f64()))
                    };
                    let _ = reply.send(run());
                }
            });
            ready.recv().context("the direct loop's thread died")??;
            Ok(Loop { jobs })
        }

        pub async fn rate(&mut self, prompt: &str, max: u32) -> anyhow::Result<(u32, f64)> {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.jobs.send((prompt.to_string(), max, tx)).ok().context("the direct loop stopped")?;
            rx.await.context("the direct loop stopped")?
        }
    }
}

#[cfg(not(feature = "inference"))]
mod direct {
    pub struct Loop;

    impl Loop {
        pub fn start(_: &std::path::Path, _: usize) -> anyhow::Result<Loop> {
            anyhow::bail!(
                "bench generate needs a build with --features inference (make bench builds with it)"
            )
        }

        pub async fn rate(&mut self, _: &str, _: u32) -> anyhow::Result<(u32, f64)> {
            unreachable!("Loop::start fails without the inference feature")
        }
    }
}
