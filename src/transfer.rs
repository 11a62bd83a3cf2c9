//! `cograft import FILE` and `cograft export`: NDJSON through `POST /v1/import` and
//! `GET /v1/export`, both streamed (an NDJSON file is never read whole, an export never held
//! in memory), or Atomese (`crate::atomese`), converted on the way: an Atomese file is read
//! whole and imported as NDJSON, an export is written as Atomese line by line (remembering each
//! atom's expression for the links that name it). An import's id defaults to the BLAKE3 hash
//! of the file, so running the same file again resumes it: entries already applied answer
//! from the idempotency table. Both show their progress on a terminal (`crate::progress`).

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes read from the file per chunk of the request body.
const CHUNK: usize = 256 * 1024;

fn http() -> anyhow::Result<reqwest::Client> {
    // No overall timeout: an import or export of a large graph takes minutes.
    Ok(reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5)).build()?)
}

fn space_query(space: Option<&str>) -> String {
    space.map(|s| format!("space={s}")).unwrap_or_default()
}

/// The file's BLAKE3 hash, as an import id.
fn file_id(path: &Path) -> anyhow::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().to_hex()[..32].to_string())
}

/// What `cograft import` was asked to do.
pub struct ImportJob<'a> {
    pub addr: &'a str,
    pub space: Option<&'a str>,
    pub file: &'a Path,
    /// Default: the file's hash.
    pub import_id: Option<String>,
    pub merge: Option<String>,
}

impl ImportJob<'_> {
    fn id(&self) -> anyhow::Result<String> {
        match &self.import_id {
            Some(id) => Ok(id.clone()),
            None => file_id(self.file).with_context(|| format!("reading {}", self.file.display())),
        }
    }
}

/// Streams the job's NDJSON file into its space; answers the server's report.
pub async fn import(job: &ImportJob<'_>) -> anyhow::Result<Value> {
    let (addr, file) = (job.addr, job.file);
    let import_id = job.id()?;
    let mut query = vec![space_query(job.space), format!("import_id={import_id}")];
    if let Some(merge) = &job.merge {
        query.push(format!("merge={merge}"));
    }
    let source = tokio::fs::File::open(file).await.with_context(|| format!("opening {}", file.display()))?;
    let progress = crate::progress::bytes(source.metadata().await?.len(), "importing");
    let sent = progress.clone();
    let body = futures_util::stream::unfold(source, move |mut source| {
        let sent = sent.clone();
        async move {
            let mut buf = vec![0; CHUNK];
            match source.read(&mut buf).await {
                Ok(0) => {
                    sent.set_message("sent; the node commits the last entries");
                    None
                }
                Ok(n) => {
                    buf.truncate(n);
                    sent.inc(n as u64);
                    Some((Ok::<_, std::io::Error>(buf), source))
                }
                Err(e) => Some((Err(e), source)),
            }
        }
    });
    let url = format!("http://{addr}/v1/import?{}", query.join("&"));
    let response = http()?
        .post(url)
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .with_context(|| format!("sending {} to {addr}", file.display()));
    progress.finish_and_clear();
    let response = response?;
    let status = response.status();
    let text = response.text().await.context("reading the import's answer")?;
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        bail!(
            "the import stopped ({status}): {answer}. Run the same command again to resume it \
             (import id {import_id})"
        );
    }
    Ok(answer)
}

/// How a file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Atomese,
}

impl Format {
    /// `given` (ndjson or atomese), else by the file's extension (`.scm` and `.atomese` are
    /// Atomese), else NDJSON.
    pub fn of(given: Option<&str>, path: Option<&Path>) -> anyhow::Result<Format> {
        match given {
            Some("ndjson") => Ok(Format::Ndjson),
            Some("atomese") => Ok(Format::Atomese),
            Some(other) => bail!("--format {other:?}: use ndjson or atomese"),
            None => Ok(match path.and_then(|p| p.extension()).and_then(|e| e.to_str()) {
                Some("scm" | "atomese") => Format::Atomese,
                _ => Format::Ndjson,
            }),
        }
    }
}

/// Imports the job's Atomese file: converted to NDJSON (in the temp directory), imported
/// under the Atomese file's id, and every error named by its Atomese line.
pub async fn import_atomese(job: &ImportJob<'_>) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(job.file).with_context(|| format!("reading {}", job.file.display()))?;
    let import_id = job.id()?;
    let converted = crate::atomese::to_ndjson(&text);
    let ndjson = std::env::temp_dir().join(format!("cograft-{}-{import_id}.ndjson", std::process::id()));
    std::fs::write(&ndjson, converted.lines.join("\n") + "\n")
        .with_context(|| format!("writing {}", ndjson.display()))?;
    let converted_job =
        ImportJob { file: &ndjson, import_id: Some(import_id), merge: job.merge.clone(), ..*job };
    let answer = import(&converted_job).await;
    let _ = std::fs::remove_file(&ndjson);
    let mut answer = answer?;
    let mut errors: Vec<Value> =
        converted.errors.iter().map(|(line, e)| serde_json::json!({ "line": line, "error": e })).collect();
    for e in answer["errors"].as_array().into_iter().flatten() {
        let ndjson_line = e["line"].as_u64().unwrap_or(0) as usize;
        let line = converted.source_lines.get(ndjson_line.wrapping_sub(1)).copied().unwrap_or(0);
        errors.push(serde_json::json!({ "line": line, "error": e["error"] }));
    }
    let count = answer["error_count"].as_u64().unwrap_or(0) + converted.errors.len() as u64;
    answer["errors"] = Value::Array(errors);
    answer["error_count"] = count.into();
    answer["format"] = "atomese".into();
    answer["lines"] = text.lines().count().into();
    Ok(answer)
}

/// Streams `space` into `out` (stdout when `None`) in `format`; answers the export's end line.
pub async fn export(
    addr: &str,
    space: Option<&str>,
    out: Option<&Path>,
    format: Format,
) -> anyhow::Result<Value> {
    let url = format!("http://{addr}/v1/export?{}", space_query(space));
    let mut response =
        http()?.get(url).send().await.with_context(|| format!("asking {addr} for an export"))?;
    if !response.status().is_success() {
        let status = response.status();
        bail!("the export was refused ({status}): {}", response.text().await.unwrap_or_default());
    }
    let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin> = match out {
        Some(path) => Box::new(
            tokio::fs::File::create(path).await.with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    // The last line says whether the export is whole.
    let mut last_line: Vec<u8> = Vec::new();
    let (mut atomese, mut partial) = (crate::atomese::Writer::default(), Vec::new());
    let progress = crate::progress::lines("exporting");
    while let Some(chunk) = response.chunk().await.context("reading the export")? {
        progress.inc(chunk.iter().filter(|b| **b == b'\n').count() as u64);
        keep_last_line(&mut last_line, &chunk);
        if format == Format::Ndjson {
            sink.write_all(&chunk).await?;
            continue;
        }
        partial.extend_from_slice(&chunk);
        let complete = partial.iter().rposition(|b| *b == b'\n').map(|at| at + 1).unwrap_or(0);
        let mut text = String::new();
        for line in partial[..complete].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let line: Value =
                serde_json::from_slice(line).context("the export sent a line that is not JSON")?;
            if let Some(expr) = atomese.line(&line).map_err(anyhow::Error::msg)? {
                text.push_str(&expr);
                text.push('\n');
            }
        }
        partial.drain(..complete);
        sink.write_all(text.as_bytes()).await?;
    }
    sink.flush().await?;
    progress.finish_and_clear();
    let last: Value = serde_json::from_slice(&last_line).unwrap_or(Value::Null);
    match (&last["end"], &last["error"]) {
        (Value::Object(_), _) => Ok(last["end"].clone()),
        (_, Value::String(e)) => bail!("the export failed midway: {e}"),
        _ => bail!("the export ended without its end line: it was cut short"),
    }
}

/// Appends `chunk` to `tail` and keeps only its last line (with its newline, if it has one).
fn keep_last_line(tail: &mut Vec<u8>, chunk: &[u8]) {
    tail.extend_from_slice(chunk);
    let body = tail.strip_suffix(b"\n").unwrap_or(tail);
    if let Some(at) = body.iter().rposition(|b| *b == b'\n') {
        tail.drain(..=at);
    }
}

#[cfg(test)]
mod tests {
    use super::keep_last_line;

    #[test]
    fn the_last_line_is_found_however_the_stream_is_cut() {
        let stream = b"{\"key\":\"a1\"}\n{\"key\":\"a2\"}\n{\"end\":{}}\n";
        for cut in 0..stream.len() {
            for second in cut..stream.len() {
                let mut tail = Vec::new();
                for chunk in [&stream[..cut], &stream[cut..second], &stream[second..]] {
                    keep_last_line(&mut tail, chunk);
                }
                assert_eq!(tail, b"{\"end\":{}}\n", "cut at {cut} and {second}");
            }
        }
    }
}
