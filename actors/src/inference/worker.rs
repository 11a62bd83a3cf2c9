//! The llama.cpp side of an inference worker (`cograft inference-worker`): loads one GGUF model,
//! says [`Reply::Ready`], then answers frames from stdin on stdout until stdin closes. It is a
//! process of its own because llama.cpp aborts on some inputs, and an abort cannot be caught: a
//! crash here costs the node one request, never the node. Nothing but frames goes to stdout;
//! llama.cpp's log goes to tracing, on stderr.

use std::io::{self, BufReader, BufWriter};
use std::path::PathBuf;

use anyhow::Context;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

use super::embedder::Embedder;
use super::generator::Generator;
pub use super::protocol::WorkerKind;
use super::protocol::{read_frame, write_frame, Reply, Request};

/// What the node passes on the worker's command line.
#[derive(Clone, Debug)]
pub struct WorkerArgs {
    pub model: PathBuf,
    pub kind: WorkerKind,
    pub threads: usize,
    /// Tokens one llama.cpp batch holds.
    pub batch_tokens: usize,
    /// A generation worker's context: prompt and generated tokens together.
    pub context_tokens: usize,
}

impl WorkerArgs {
    /// An embedding worker's arguments with the default batch, as the benchmarks load one.
    pub fn embedding(model: PathBuf, threads: usize) -> WorkerArgs {
        WorkerArgs { model, kind: WorkerKind::Embedding, threads, batch_tokens: 2048, context_tokens: 0 }
    }
}

/// A loaded model, ready for requests.
enum Served<'m> {
    Embedding(Embedder<'m>),
    Generation(Generator<'m>),
}

impl Served<'_> {
    fn answer(&mut self, request: Request) -> Reply {
        match (self, request) {
            (Served::Embedding(e), Request::Embed { texts }) => match e.embed(&texts) {
                Ok(embeddings) => Reply::Embeddings(embeddings),
                Err(e) => Reply::Failed { detail: format!("{e:#}") },
            },
            (Served::Generation(g), Request::Generate(request)) => g.generate(&request),
            (Served::Generation(g), Request::Score { prompt, continuations }) => {
                g.score(&prompt, &continuations)
            }
            (Served::Embedding(_), _) => Reply::Rejected { detail: "an embedding worker only embeds".into() },
            (Served::Generation(_), _) => Reply::Rejected {
                detail: "a generation worker does not embed: use the embedding model".into(),
            },
        }
    }
}

/// Runs the worker until stdin closes. An error before `Ready` is reported as
/// [`Reply::Failed`] first, so the node can say why the model did not load.
pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    // The node's death closes our stdin, but a long job would only notice at its end.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    let mut input = BufReader::new(io::stdin().lock());
    let mut output = BufWriter::new(io::stdout().lock());
    let backend = LlamaBackend::init().context("initialising llama.cpp")?;
    // The digest of the file this worker loads (not of the one the node saw at start): the id
    // its answers carry.
    let loaded = file_digest(&args.model).and_then(|digest| {
        LlamaModel::load_from_file(&backend, &args.model, &LlamaModelParams::default())
            .with_context(|| format!("loading {}", args.model.display()))
            .map(|model| (model, digest))
    });
    let served = loaded.and_then(|(model, digest)| {
        // The model lives as long as the process; contexts borrow it.
        let model: &'static LlamaModel = Box::leak(Box::new(model));
        Ok(match args.kind {
            WorkerKind::Embedding => Served::Embedding(Embedder::new(&backend, model, &args, digest)?),
            WorkerKind::Generation => Served::Generation(Generator::new(&backend, model, &args, digest)?),
        })
    });
    let mut served = match served {
        Ok(served) => served,
        Err(e) => {
            write_frame(&mut output, &Reply::Failed { detail: format!("{e:#}") })?;
            return Err(e);
        }
    };
    let info = match &served {
        Served::Embedding(e) => e.info.clone(),
        Served::Generation(g) => g.info.clone(),
    };
    write_frame(&mut output, &Reply::Ready(info))?;
    while let Some(request) = read_frame::<Request>(&mut input)? {
        let reply = served.answer(request);
        write_frame(&mut output, &reply)?;
    }
    Ok(())
}

/// The first 16 hex digits of the file's BLAKE3 digest.
pub fn file_digest(path: &std::path::Path) -> anyhow::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    hasher.update_reader(file).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finalize().to_hex()[..16].to_string())
}
