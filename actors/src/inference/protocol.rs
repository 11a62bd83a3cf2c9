//! The frames between a node and its inference workers: a 4-byte big-endian length, then one
//! msgpack message. The node writes [`Request`]s to a worker's stdin; the worker answers each with
//! one [`Reply`] on stdout, in order. A worker's first frame says whether its model loaded
//! ([`Reply::Ready`]) or not ([`Reply::Failed`]). Both ends refuse frames over [`MAX_FRAME_BYTES`].

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame either end writes or reads (a reply of 256 vectors of 384 floats is ~0.5 MB).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Which kind of model a worker serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    /// Sentence embeddings (`Request::Embed`).
    Embedding,
    /// Text generation and scoring (`Request::Generate`, `Request::Score`).
    Generation,
}

impl WorkerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Embedding => "embedding",
            WorkerKind::Generation => "generation",
        }
    }
}

impl std::str::FromStr for WorkerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "embedding" => Ok(WorkerKind::Embedding),
            "generation" => Ok(WorkerKind::Generation),
            other => Err(format!("unknown worker kind {other:?}: embedding or generation")),
        }
    }
}

/// Work for a worker. An embedding worker answers `Embed`; a generation worker `Generate` and
/// `Score`; either refuses the others with [`Reply::Rejected`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Sentence embeddings of each text, L2-normalised, in order.
    Embed { texts: Vec<String> },
    /// Text continuing a prompt, optionally under a GBNF grammar.
    Generate(Generate),
    /// The log-probability of each continuation after the prompt (each ended by the model's
    /// end-of-turn token, so a label that is a prefix of another is not favoured).
    Score { prompt: Prompt, continuations: Vec<String> },
}

/// What a generation starts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    /// With `chat`, the model's own chat template wraps an optional system message and the
    /// user's text and opens the assistant's turn; without, `user` goes to the model as it is.
    pub chat: bool,
    pub system: Option<String>,
    pub user: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generate {
    pub prompt: Prompt,
    pub max_tokens: u32,
    /// 0 = greedy (the same prompt answers the same text); above, sampled with `seed`.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u32,
    /// Divides the logit of each token among the last 64 generated (1 = off): against the
    /// loops small models fall into.
    pub repeat_penalty: f32,
    /// Generation ends before the first of these strings (which the text does not include).
    pub stop: Vec<String>,
    /// A GBNF grammar with a `root` rule: every token sampled must keep the text inside it.
    pub grammar: Option<String>,
}

/// What a worker answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The model loaded; the worker takes requests from now on.
    Ready(ModelInfo),
    Embeddings(Embeddings),
    Generated(Generation),
    Scores(Scores),
    /// The request itself cannot work on this model (a grammar llama.cpp's parser refuses, a
    /// prompt longer than the context): the caller's error, a 400.
    Rejected {
        detail: String,
    },
    /// The request could not be done; the worker goes on with the next one.
    Failed {
        detail: String,
    },
}

/// What a worker's model is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The GGUF file's `general.name`.
    pub name: String,
    /// The first 16 hex digits of the BLAKE3 digest of the file the worker loaded.
    pub digest: String,
    /// Floats per embedding.
    pub dim: usize,
    /// Tokens one text may have (the model's training context); longer texts are truncated.
    pub max_tokens: usize,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// The model ended its turn (with a grammar: once the grammar was complete).
    EndOfText,
    /// One of the stop strings came.
    Stop,
    /// `max_tokens` were generated.
    Length,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub model: String,
    pub text: String,
    /// Tokens generated, and tokens of the prompt after the chat template.
    pub tokens: u32,
    pub prompt_tokens: u32,
    pub finish: Finish,
    /// From the request's arrival at the worker to its first generated token, and in all.
    pub first_token_ms: f64,
    pub elapsed_ms: f64,
}

impl Generation {
    /// Decoding speed: the tokens after the first over the time after the first (the first
    /// token's time is the prompt's); 0 with fewer than two tokens.
    pub fn tokens_per_second(&self) -> f64 {
        let after_first = (self.elapsed_ms - self.first_token_ms) / 1e3;
        if self.tokens < 2 || after_first <= 0.0 {
            return 0.0;
        }
        f64::from(self.tokens - 1) / after_first
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub model: String,
    /// Natural-log probability of each continuation (its tokens and the end of turn).
    pub logprobs: Vec<f64>,
    /// Tokens of each continuation, the end of turn included.
    pub tokens: Vec<u32>,
    pub prompt_tokens: u32,
}

/// One vector per text, with what the tokenizer did to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    /// `name@digest` of the model that computed them.
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of each text after truncation, the special tokens included.
    pub tokens: Vec<u32>,
    /// Whether each text was cut to the model's context.
    pub truncated: Vec<bool>,
}

fn encode(message: &impl Serialize) -> io::Result<Vec<u8>> {
    let body = rmp_serde::to_vec_named(message).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {} bytes exceeds the limit of {MAX_FRAME_BYTES}", body.len()),
        ));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

fn frame_len(header: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame announces {len} bytes, over the limit of {MAX_FRAME_BYTES}"),
        ));
    }
    Ok(len)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> io::Result<T> {
    rmp_serde::from_slice(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one frame and flushes it.
pub fn write_frame(w: &mut impl Write, message: &impl Serialize) -> io::Result<()> {
    w.write_all(&encode(message)?)?;
    w.flush()
}

/// Reads one frame; `None` when the stream ended cleanly before a frame began.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; frame_len(header)?];
    r.read_exact(&mut body)?;
    decode(&body).map(Some)
}

/// [`write_frame`] on an async stream.
pub async fn write_frame_async(
    w: &mut (impl AsyncWrite + Unpin),
    message: &impl Serialize,
) -> io::Result<()> {
    w.write_all(&encode(message)?).await?;
    w.flush().await
}

/// [`read_frame`] on an async stream.
pub async fn read_frame_async<T: DeserializeOwned>(
    r: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<T>> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; frame_len(header)?];
    r.read_exact(&mut body).await?;
    decode(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut buf = Vec::new();
        let request = Request::Embed { texts: vec!["a".into(), "b c".into()] };
        let reply = Reply::Embeddings(Embeddings {
            model: "m@0".into(),
            vectors: vec![vec![0.5, -0.25]],
            tokens: vec![3],
            truncated: vec![false],
        });
        write_frame(&mut buf, &request).unwrap();
        write_frame(&mut buf, &reply).unwrap();
        let mut r = buf.as_slice();
        assert_eq!(read_frame::<Request>(&mut r).unwrap(), Some(request));
        assert_eq!(read_frame::<Reply>(&mut r).unwrap(), Some(reply));
        assert_eq!(read_frame::<Reply>(&mut r).unwrap(), None);
    }

    #[test]
    fn a_cut_frame_and_an_oversized_header_are_errors() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::Embed { texts: vec!["hello".into()] }).unwrap();
        let cut = &buf[..buf.len() - 1];
        assert!(read_frame::<Request>(&mut &cut[..]).is_err());
        let huge = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        let err = read_frame::<Request>(&mut &huge[..]).unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[tokio::test]
    async fn async_and_blocking_ends_speak_the_same_frames() {
        let mut buf = Vec::new();
        write_frame_async(&mut buf, &Reply::Failed { detail: "x".into() }).await.unwrap();
        assert_eq!(
            read_frame::<Reply>(&mut buf.as_slice()).unwrap(),
            Some(Reply::Failed { detail: "x".into() })
        );
        let mut blocking = Vec::new();
        write_frame(&mut blocking, &Request::Embed { texts: vec![] }).unwrap();
        let got: Option<Request> = read_frame_async(&mut blocking.as_slice()).await.unwrap();
        assert_eq!(got, Some(Request::Embed { texts: vec![] }));
    }
}
