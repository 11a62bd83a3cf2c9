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

/// Work for a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Sentence embeddings of each text, L2-normalised, in order.
    Embed { texts: Vec<String> },
}

/// What a worker answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The model loaded; the worker takes requests from now on.
    Ready(ModelInfo),
    Embeddings(Embeddings),
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
