//! Sentence embeddings through the node's supervised llama.cpp workers, with the real
//! all-MiniLM-L6-v2 GGUF that `make models` converts: every text of the shipped table matches a
//! numpy forward pass over the original safetensors weights (cosine >= 0.999, same token counts,
//! same truncation); answers are deterministic; a worker killed mid-request costs that one
//! request (503 naming the crash) and is replaced, and so does one over its timeout (losses in a
//! row open the breaker); the pool grows to its maximum under load and shrinks back to its
//! minimum; bad input gets 4xx; a model path that is not a file stops the node at start.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::harness::{wait_until, Cluster};

pub fn model_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models").join(name);
    assert!(path.is_file(), "{} is missing: run `make models`", path.display());
    path.display().to_string()
}

fn with_model(extra: &[(&'static str, &'static str)]) -> Cluster {
    let model = model_file("all-minilm-l6-v2.gguf");
    let mut env: Vec<(&str, &str)> = vec![("COGRAFT__INFERENCE__EMBEDDING_MODEL", &model)];
    env.extend_from_slice(extra);
    Cluster::start(1, &env)
}

/// Waits until node 1's first `pool` worker is busy, SIGKILLs it, and answers its pid.
pub fn kill_busy_worker(c: &Cluster, pool: &str) -> i64 {
    let pid = wait_until("the worker to be busy", Duration::from_secs(20), || {
        let status = c.get(1, "/admin/inference").body;
        let worker = &status[pool]["workers"][0];
        (worker["state"] == "busy").then(|| worker["pid"].as_i64()).flatten()
    });
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    pid
}

pub fn vector(v: &Value) -> Vec<f64> {
    v.as_array().expect("a vector").iter().map(|x| x.as_f64().unwrap()).collect()
}

pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn embeddings_match_an_independent_forward_pass_and_repeat_exactly() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(model_file("all-minilm-l6-v2.reference.json")).unwrap(),
    )
    .unwrap();
    let rows = reference["rows"].as_array().unwrap();
    let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().unwrap()).collect();
    let c = with_model(&[]);
    let reply = c.post(1, "/v1/embed", json!({ "texts": texts }));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = &reply.body;
    assert_eq!(body["dim"], 384);
    assert!(body["model"].as_str().unwrap().starts_with("all-MiniLM-L6-v2@"), "{}", body["model"]);
    let mut worst = (f64::MAX, "");
    for (i, row) in rows.iter().enumerate() {
        let got = vector(&body["embeddings"][i]);
        assert_eq!(got.len(), 384);
        let sim = cosine(&got, &vector(&row["vector"]));
        if sim < worst.0 {
            worst = (sim, texts[i]);
        }
        assert!(sim >= 0.999, "text {i} {:?}: cosine {sim} with the reference", texts[i]);
        assert_eq!(body["tokens"][i], row["tokens"], "token count of text {i} {:?}", texts[i]);
        assert_eq!(body["truncated"][i], row["truncated"], "truncation of text {i}");
        let norm = got.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "text {i} is not unit length: {norm}");
    }
    eprintln!("lowest cosine with the reference: {:.6} ({:?})", worst.0, worst.1);
    assert!(rows.iter().any(|r| r["truncated"] == true), "the table must hold a text over 256 tokens");

    // The same request answers the same bits; one text alone answers what it did in the batch.
    let again = c.post(1, "/v1/embed", json!({ "texts": texts }));
    assert_eq!(again.body["embeddings"], body["embeddings"], "a repeated request differed");
    let alone = c.post(1, "/v1/embed", json!({ "texts": [texts[3]] }));
    let sim = cosine(&vector(&alone.body["embeddings"][0]), &vector(&body["embeddings"][3]));
    assert!(sim > 0.99999, "text 3 alone and in a batch: cosine {sim}");
}

#[test]
fn a_worker_killed_mid_request_costs_that_request_only() {
    let c = with_model(&[("COGRAFT__INFERENCE__WORKERS_MIN", "1"), ("COGRAFT__INFERENCE__WORKERS_MAX", "1")]);
    // 200 texts of ~250 tokens: time enough to kill the worker during it.
    let texts = long_texts(200);
    let addr = c.addr(1);
    let request = std::thread::spawn(move || {
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let r = http.post(format!("http://{addr}/v1/embed")).json(&json!({ "texts": texts })).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    });
    let pid = kill_busy_worker(&c, "embedding");
    let (status, body) = request.join().unwrap();
    assert_eq!(status, 503, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("pid {pid}")) && detail.contains("SIGKILL"), "{detail}");

    // The next request is served by a new worker, and the loss is on record.
    let next = c.post(1, "/v1/embed", json!({ "texts": ["after the crash"] }));
    assert_eq!(next.status, 200, "{:?}", next.body);
    let status = c.get(1, "/admin/inference").body;
    assert_eq!(status["embedding"]["workers_lost"], 1, "{status}");
    assert_ne!(status["embedding"]["workers"][0]["pid"].as_i64(), Some(pid));
    let metrics = c.get(1, "/metrics").body.as_str().unwrap().to_string();
    assert!(
        metrics.contains(r#"cograft_inference_worker_losses_total{pool="embedding",reason="crash"} 1"#),
        "{metrics}"
    );
    assert!(c.get(1, "/healthz").status == 200, "the node must live on");
}

#[test]
fn bad_embedding_requests_get_4xx_and_a_missing_model_refuses_the_start() {
    let c =
        with_model(&[("COGRAFT__INFERENCE__MAX_TEXTS", "4"), ("COGRAFT__INFERENCE__MAX_TEXT_BYTES", "64")]);
    for (body, status, needle) in [
        (json!({ "texts": [] }), 400, "at least one text"),
        (json!({ "texts": ["fine", "  "] }), 400, "texts[1] is empty"),
        (json!({ "texts": ["a", "b", "c", "d", "e"] }), 413, "inference.max_texts"),
        (json!({ "texts": ["x".repeat(65)] }), 413, "inference.max_text_bytes"),
        (json!({ "text": "one" }), 400, "unknown field"),
        (json!({ "texts": "one" }), 400, "malformed JSON"),
    ] {
        let reply = c.post(1, "/v1/embed", body.clone());
        assert_eq!(reply.status, status, "{body} -> {:?}", reply.body);
        assert!(reply.body["detail"].as_str().unwrap().contains(needle), "{body} -> {:?}", reply.body);
    }
    let ok = c.post(1, "/v1/embed", json!({ "texts": ["still serving"] }));
    assert_eq!(ok.status, 200, "{:?}", ok.body);

    // A model path that is not a file: the node refuses to start, naming the setting and the fix.
    let mut c = c;
    c.kill9(1);
    let missing = c.dir.path().join("no-such-model.gguf").display().to_string();
    let exit = c.start_expecting_exit_with(
        1,
        &[("COGRAFT__INFERENCE__EMBEDDING_MODEL", &missing)],
        Duration::from_secs(20),
    );
    assert!(!exit.success());
    let log = c.log_of(1);
    assert!(log.contains("inference.embedding_model") && log.contains("make models"), "{log}");
}

/// `n` sentences of ~12 tokens.
fn short_texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("sentence {i} says the cat sat on the mat near the door")).collect()
}

/// `n` texts of ~250 tokens each: enough work per request to watch workers busy.
fn long_texts(n: usize) -> Vec<String> {
    let long: String = (0..240).map(|i| format!("w{i} ")).collect();
    (0..n).map(|i| format!("{i} {long}")).collect()
}

#[test]
fn a_request_over_its_timeout_kills_its_worker_and_counts_against_the_breaker() {
    let c = with_model(&[
        ("COGRAFT__INFERENCE__WORKERS_MIN", "1"),
        ("COGRAFT__INFERENCE__WORKERS_MAX", "1"),
        ("COGRAFT__INFERENCE__REQUEST_TIMEOUT_MS", "150"),
        ("COGRAFT__INFERENCE__BREAKER_FAILURES", "2"),
    ]);
    let slow = json!({ "texts": long_texts(256) });
    let first = c.post(1, "/v1/embed", slow.clone());
    assert_eq!(first.status, 503, "{:?}", first.body);
    let detail = first.body["detail"].as_str().unwrap();
    assert!(detail.contains("was killed") && detail.contains("inference.request_timeout_ms"), "{detail}");
    // A second loss in a row opens the breaker: the next request is refused at once.
    assert_eq!(c.post(1, "/v1/embed", slow).status, 503);
    let refused = c.post(1, "/v1/embed", json!({ "texts": ["short"] }));
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert!(
        refused.body["detail"].as_str().unwrap().contains("circuit breaker is open"),
        "{:?}",
        refused.body
    );
    let status = c.get(1, "/admin/inference").body;
    assert_eq!(status["embedding"]["breaker"], "open", "{status}");
    let metrics = c.get(1, "/metrics").body.as_str().unwrap().to_string();
    assert!(
        metrics.contains(r#"cograft_inference_worker_losses_total{pool="embedding",reason="timeout"} 2"#),
        "{metrics}"
    );
}

#[test]
fn the_pool_grows_under_load_and_shrinks_back_to_its_minimum() {
    let c = with_model(&[
        ("COGRAFT__INFERENCE__WORKERS_MIN", "1"),
        ("COGRAFT__INFERENCE__WORKERS_MAX", "2"),
        ("COGRAFT__INFERENCE__IDLE_RETIRE_MS", "300"),
    ]);
    let addr = c.addr(1);
    let load: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let http =
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
                for _ in 0..3 {
                    let r = http
                        .post(format!("http://{addr}/v1/embed"))
                        .json(&json!({ "texts": short_texts(64) }));
                    let r = r.send().unwrap();
                    let status = r.status().as_u16();
                    assert_eq!(status, 200, "{}", r.text().unwrap_or_default());
                }
            })
        })
        .collect();
    let mut most = 0;
    for thread in load {
        while !thread.is_finished() {
            let workers = c.get(1, "/admin/inference").body["embedding"]["workers"].as_array().unwrap().len();
            most = most.max(workers);
            std::thread::sleep(Duration::from_millis(20));
        }
        thread.join().unwrap();
    }
    assert_eq!(most, 2, "the pool must grow to workers_max while requests wait");
    // Both workers go idle together; only one may retire.
    std::thread::sleep(Duration::from_millis(1500));
    let status = c.get(1, "/admin/inference").body;
    let workers = status["embedding"]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "back to workers_min: {status}");
    assert_eq!(workers[0]["state"], "idle", "{status}");
    assert_eq!(status["embedding"]["workers_lost"], 0, "{status}");
}
