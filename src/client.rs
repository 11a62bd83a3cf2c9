//! The Rust client the CLI uses: JSON over HTTP to any node, retrying with exponential backoff
//! and jitter while the cluster elects a leader or a node restarts. A write carries one
//! Idempotency-Key across all its retries, so a retry never applies twice.

use std::time::Duration;

use anyhow::{anyhow, bail};
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Clone)]
pub struct Client {
    addrs: Vec<String>,
    http: reqwest::Client,
    /// The memory space every request names (`X-Cograft-Space`); `None` = the default space.
    space: Option<String>,
    /// Total time a request may spend retrying.
    pub patience: Duration,
}

/// An answer the server gave (status and JSON body).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Client {
    /// A client for these node addresses (HOST:PORT), tried in order.
    pub fn new(addrs: Vec<String>) -> anyhow::Result<Client> {
        if addrs.is_empty() {
            bail!("no node address given: pass --addr HOST:PORT");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Client { addrs, http, space: None, patience: Duration::from_secs(15) })
    }

    /// The same client, working in `space`.
    pub fn in_space(mut self, space: Option<String>) -> Client {
        self.space = space;
        self
    }

    /// Sends one request and returns whatever the server answered (no retries).
    pub async fn send_once(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let mut request = self.http.request(method, format!("http://{addr}{path}"));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(space) = &self.space {
            request = request.header("X-Cograft-Space", space);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }

    /// Sends a request, retrying on connection errors and 503/504 across the known nodes until
    /// `patience` runs out. A 421 from an admin call is followed to the leader it names.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Answer> {
        let key = (method != Method::GET).then(|| format!("{:032x}", rand::thread_rng().gen::<u128>()));
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut attempt = 0u32;
        let mut target = self.addrs[0].clone();
        loop {
            let result = self.send_once(&target, method.clone(), path, body, key.as_deref()).await;
            let retry = match &result {
                Ok(a) if a.status == StatusCode::MISDIRECTED_REQUEST => {
                    if let Some(leader) = a.body.get("leader_addr").and_then(Value::as_str) {
                        target = leader.to_string();
                    }
                    true
                }
                Ok(a) => matches!(a.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT),
                Err(_) => {
                    target = self.addrs[(attempt as usize + 1) % self.addrs.len()].clone();
                    true
                }
            };
            attempt += 1;
            let pause = backoff(attempt);
            if !retry || tokio::time::Instant::now() + pause > deadline {
                return result.map_err(|e| anyhow!("{target}: {e}"));
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Like `request`, but turns an error status into an error naming it.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let answer = self.request(method, path, body).await?;
        if !answer.status.is_success() {
            bail!("HTTP {}: {}", answer.status, answer.body);
        }
        Ok(answer.body)
    }
}

/// Exponential backoff from 50 ms to 1.6 s with full jitter.
fn backoff(attempt: u32) -> Duration {
    let cap = 50u64 << attempt.min(5);
    Duration::from_millis(rand::thread_rng().gen_range(cap / 2..=cap))
}
