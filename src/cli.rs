//! The command line: clap definitions and what each command does.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::config::{Overrides, Settings};
use crate::{cluster, demo, node};

#[derive(Parser)]
#[command(name = "cograft", version, about = "A Raft-replicated cognitive graph database")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node in the foreground.
    Serve(ServeArgs),
    /// Run a local cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Start a local 3-node cluster, load a sample knowledge graph, query it, and stop.
    Demo {
        /// Working directory (wiped first: it belongs to the demo).
        #[arg(long, default_value = ".demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 7301)]
        base_port: u16,
    },
    /// Measure a fresh local cluster: time to leader, write latency, group commit, failover
    /// (or, with `bench scale`, the figures at WordNet size).
    Bench {
        #[command(subcommand)]
        what: Option<BenchWhat>,
        #[arg(long, default_value = "target/bench-cluster")]
        dir: PathBuf,
        #[arg(long, default_value_t = 7501)]
        base_port: u16,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Sequential single-client writes.
        #[arg(long, default_value_t = 1000)]
        writes: usize,
        /// Concurrent writers.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Writes spread over the concurrent writers.
        #[arg(long, default_value_t = 6400)]
        concurrent_writes: usize,
    },
    /// An inference worker: the node starts these itself (frames on stdin/stdout).
    #[command(hide = true)]
    InferenceWorker {
        #[arg(long)]
        model: PathBuf,
        /// embedding or generation.
        #[arg(long, default_value = "embedding")]
        kind: String,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 2048)]
        batch_tokens: usize,
        #[arg(long, default_value_t = 2048)]
        context_tokens: usize,
    },
    /// Cluster administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Add or read atoms.
    Atom {
        #[command(subcommand)]
        command: AtomCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Import NDJSON (one atom per line; see the README) into --space, streamed; running the
    /// same file again resumes it.
    Import {
        file: PathBuf,
        /// Entries already applied under this id are not applied again (default: the file's
        /// hash).
        #[arg(long)]
        import_id: Option<String>,
        /// How a repeated atom merges truth values: latest, highest_confidence or revision.
        #[arg(long)]
        merge: Option<String>,
        /// ndjson or atomese (default: by extension, .scm and .atomese are Atomese).
        #[arg(long)]
        format: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Export --space as NDJSON or Atomese (to --out, or stdout), from one consistent point.
    Export {
        #[arg(long)]
        out: Option<PathBuf>,
        /// ndjson or atomese (default: by --out's extension, .scm and .atomese are Atomese).
        #[arg(long)]
        format: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Recall by association: spread activation from sources and print what it reaches.
    Spread {
        #[command(flatten)]
        args: SpreadArgs,
        #[command(flatten)]
        target: Target,
    },
}

/// `cograft spread`: the common fields of `POST /v1/spread` (README, "Recall").
#[derive(Args)]
struct SpreadArgs {
    /// Source atom ids (comma-separated).
    #[arg(long = "id", value_delimiter = ',')]
    ids: Vec<u64>,
    /// A source node as TYPE:NAME, e.g. ConceptNode:cat (repeat for several).
    #[arg(long = "node")]
    nodes: Vec<String>,
    #[arg(long)]
    max_hops: Option<u32>,
    #[arg(long)]
    decay: Option<f64>,
    #[arg(long)]
    threshold: Option<f64>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// Only links of these types carry activation (comma-separated).
    #[arg(long, value_delimiter = ',')]
    link_types: Vec<String>,
    /// Also list what the threshold suppressed.
    #[arg(long)]
    explain: bool,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Spreading activation in-process over a seeded power-law hypergraph: index build and
    /// bytes per atom, spread p50/p99, cost against a plain BFS, index update rate.
    Spread {
        /// Graph size: 1m (1M atoms, ~10M memberships) or 10k.
        #[arg(long, default_value = "1m")]
        atoms: String,
        /// Spreads measured per source count.
        #[arg(long, default_value_t = 2000)]
        spreads: usize,
    },
    /// Load WordNet 3.0 (~1.2M atoms) into a fresh 3-node cluster: load rate, disk and memory
    /// per atom, and how long writes and reads wait during a snapshot build and install.
    Scale {
        #[arg(long, default_value = "target/bench-scale")]
        dir: PathBuf,
        #[arg(long, default_value_t = 7601)]
        base_port: u16,
        /// Where WordNet's data.* files are (Debian's wordnet-base).
        #[arg(long, default_value = "/usr/share/wordnet")]
        wordnet: PathBuf,
        /// Load and size a running cluster at these addresses instead (with --dir its nodes'
        /// directory, for the sizes); the snapshot phases are skipped.
        #[arg(long, value_delimiter = ',')]
        attach: Vec<String>,
        #[arg(long, default_value_t = 500)]
        batch_ops: usize,
    },
    /// Greedy generation through /v1/generate on a fresh node against a plain llama-cpp-2 loop
    /// in this process, same prompt, tokens and threads: tokens/s of both and the API's overhead.
    Generate {
        #[arg(long, default_value = "models/smollm2-135m-instruct-q4_1.gguf")]
        model: PathBuf,
        /// Tokens per generation.
        #[arg(long, default_value_t = 128)]
        tokens: u32,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Rounds of each side (alternated).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Fact extraction through /v1/extract on a fresh node over a fixed set of short factual
    /// sentences, without and with insert: texts/s and triples per text.
    Extract {
        #[arg(long, default_value = "models/smollm2-135m-instruct-q4_1.gguf")]
        model: PathBuf,
        #[arg(long, default_value = "tests/data/extraction_sentences.json")]
        sentences: PathBuf,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Sentence embeddings through /v1/embed on a fresh node against a direct llama-cpp-2 loop
    /// in this process, same texts and threads: texts/s of both and the API's overhead.
    Embed {
        #[arg(long, default_value = "models/all-minilm-l6-v2.gguf")]
        model: PathBuf,
        /// Texts per round.
        #[arg(long, default_value_t = 512)]
        texts: usize,
        /// Texts per request in the batched phase.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Rounds of each side per phase (alternated).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Exact top-k over stored vectors, in process: the node's search (ggml products) against a
    /// scalar Rust scan and FAISS's IndexFlatIP on the same vectors, batches of 1 and 64.
    Similar {
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        #[arg(long, default_value_t = 384)]
        dim: usize,
        /// Queries searched per batch size (in batches of that size).
        #[arg(long, default_value_t = 1024)]
        queries: usize,
        #[arg(long, default_value_t = 10)]
        top_k: usize,
        /// Threads of one search, and of FAISS's (the same for both).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// A python with faiss-cpu and numpy (`make faiss-deps` makes this venv).
        #[arg(long, default_value = "target/faiss-venv/bin/python")]
        faiss_python: PathBuf,
    },
    /// Bulk import at WordNet size on a fresh 3-node cluster: atoms/s through `cograft import`,
    /// then an export and every node's content digest.
    Import {
        #[arg(long, default_value = "/usr/share/wordnet")]
        wordnet: PathBuf,
    },
    /// The same closed-loop load against a fresh 3-member etcd 3.4 and a fresh 3-node cograft
    /// in one run: writes (1 and N clients, elections during the long run), linearizable reads
    /// on the leader and a follower, failover; both figures and the ratio.
    Compare {
        /// The etcd binary (Debian's etcd-server; `make bench-etcd` installs it).
        #[arg(long, default_value = "etcd")]
        etcd: PathBuf,
        /// Seconds of the 1-client write and of each read phase.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds of the N-client write phase (elections are counted over it).
        #[arg(long, default_value_t = 60)]
        load_seconds: u64,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Keys written before the read phases (each read asks for one at random).
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
        /// Leader kills of the failover figure (the median is reported).
        #[arg(long, default_value_t = 5)]
        kills: usize,
    },
    /// Recall quality: Spearman's rho between spreading activation over WordNet 3.0 and human
    /// relatedness judgements (MEN to tune on, RG-65 to check on).
    Recall {
        /// Where WordNet's data.* files are (Debian's wordnet-base).
        #[arg(long, default_value = "/usr/share/wordnet")]
        wordnet: PathBuf,
        /// The directory with men.txt and rg65.txt (`make similarity-deps` puts them here).
        #[arg(long, default_value = "target/similarity")]
        pairs: PathBuf,
        /// Spread parameters as a /v1/spread body without sources, e.g. '{"max_hops":4}'.
        #[arg(long, default_value = "{}")]
        parameters: String,
        /// A GGUF sentence-embedding model: also report embeddings alone and hybrid recall.
        #[arg(long)]
        embeddings: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Settings file (TOML). Without it, DATA_DIR/cograft.toml is used if present, else the
    /// embedded defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    node_id: Option<u64>,
    /// HOST:PORT to bind.
    #[arg(long)]
    listen: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Run N local nodes in the foreground until Ctrl-C/SIGTERM; rerun on the same DIR to
    /// restart the same cluster with its data.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long, default_value_t = 7101)]
        base_port: u16,
        #[arg(long, default_value = "cluster")]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct Target {
    /// Node to talk to (HOST:PORT); repeat to give several.
    #[arg(long, global = true, default_value = "127.0.0.1:7101")]
    addr: Vec<String>,
    /// Memory space to work in (default: `default`).
    #[arg(long, global = true)]
    space: Option<String>,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Initialise a new cluster; MEMBER is ID=HOST:PORT (default: this node alone).
    Init {
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// Add a node as a learner and wait until it has caught up.
    AddLearner {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        node_addr: String,
    },
    /// Replace the voter set (comma-separated ids).
    ChangeMembership {
        #[arg(long, value_delimiter = ',')]
        voters: Vec<u64>,
        /// Keep removed voters as learners.
        #[arg(long)]
        retain: bool,
    },
    /// Remove a node from the cluster.
    RemoveNode {
        #[arg(long)]
        id: u64,
    },
    /// Role, term, indexes, membership and replication lag.
    Status,
    /// Build a snapshot now.
    Snapshot,
    /// Hash of the state machine with the applied index it reflects.
    Digest,
    /// Every health check's last verdict (the components' too), from the health monitor.
    Health,
    /// List the atoms of --space forgetting could take (LTI below the floor, not vlti, in no
    /// link); with --apply, remove them through Raft.
    Forget {
        /// Remove what is listed (without it: a dry run).
        #[arg(long)]
        apply: bool,
        /// The LTI floor (default: the node's attention.forget_below).
        #[arg(long, allow_hyphen_values = true)]
        lti_below: Option<f64>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// The `next` of an earlier answer.
        #[arg(long)]
        after: Option<String>,
    },
}

#[derive(Subcommand)]
enum AtomCommand {
    /// Add a node atom (or merge into the existing one).
    Add {
        #[arg(long = "type")]
        atom_type: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        strength: Option<f64>,
        #[arg(long)]
        confidence: Option<f64>,
    },
    /// Add a link between atoms (comma-separated ids).
    Link {
        #[arg(long = "type")]
        atom_type: String,
        #[arg(long, value_delimiter = ',')]
        outgoing: Vec<u64>,
        #[arg(long)]
        strength: Option<f64>,
        #[arg(long)]
        confidence: Option<f64>,
    },
    /// Read an atom by id.
    Get { id: u64 },
    /// Find a node by type and name.
    Find {
        #[arg(long = "type")]
        atom_type: String,
        #[arg(long)]
        name: String,
    },
    /// Add to an atom's attention (STI, and LTI); negative values take it away.
    Stimulate {
        id: u64,
        #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
        sti: f64,
        #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
        lti: f64,
        /// Mark the atom keep-forever (true) or forgettable again (false).
        #[arg(long)]
        vlti: Option<bool>,
    },
    /// The attentional focus: the atoms with the most STI, at or above the focus boundary.
    Focus {
        #[arg(long, default_value_t = 10)]
        top_k: usize,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Cluster { command: ClusterCommand::Up { nodes, base_port, dir } } => {
            init_logging("info", "pretty");
            runtime()?.block_on(cluster_up(nodes, base_port, dir))
        }
        Command::Demo { dir, base_port } => {
            // Before any thread exists: the nodes the demo starts inherit the setting.
            demo::use_models_if_built();
            runtime()?.block_on(demo::run(dir, base_port))
        }
        Command::Bench {
            what: Some(BenchWhat::Scale { dir, base_port, wordnet, attach, batch_ops }),
            ..
        } => {
            let args = crate::bench::scale::ScaleArgs { dir, base_port, wordnet, attach, batch_ops };
            runtime()?.block_on(crate::bench::scale::run(args))
        }
        Command::Bench {
            what: Some(BenchWhat::Similar { rows, dim, queries, top_k, threads, faiss_python }),
            dir,
            ..
        } => crate::bench::similar::run(crate::bench::similar::SimilarArgs {
            rows,
            dim,
            queries,
            top_k,
            threads,
            faiss_python,
            work_dir: dir.join("similar"),
        }),
        Command::Bench {
            what: Some(BenchWhat::Embed { model, texts, batch, threads, rounds }),
            dir,
            base_port,
            ..
        } => {
            let args =
                crate::bench::embed::EmbedArgs { dir, base_port, model, texts, batch, threads, rounds };
            // Before any thread starts: the bench's node inherits these.
            for (key, value) in crate::bench::embed::node_env(&args)? {
                std::env::set_var(key, value);
            }
            runtime()?.block_on(crate::bench::embed::run(args))
        }
        Command::Bench {
            what: Some(BenchWhat::Generate { model, tokens, threads, rounds }),
            dir,
            base_port,
            ..
        } => {
            // Before any thread starts: the bench's node inherits these.
            for (key, value) in crate::bench::generate::node_env(&model, threads)? {
                std::env::set_var(key, value);
            }
            let args =
                crate::bench::generate::GenerateArgs { dir, base_port, model, tokens, threads, rounds };
            runtime()?.block_on(crate::bench::generate::run_generate(args))
        }
        Command::Bench {
            what: Some(BenchWhat::Extract { model, sentences, threads }),
            dir,
            base_port,
            ..
        } => {
            for (key, value) in crate::bench::generate::node_env(&model, threads)? {
                std::env::set_var(key, value);
            }
            let args = crate::bench::generate::ExtractArgs { dir, base_port, sentences };
            runtime()?.block_on(crate::bench::generate::run_extract(args))
        }
        Command::Bench { what: Some(BenchWhat::Import { wordnet }), dir, base_port, .. } => runtime()?
            .block_on(crate::bench::import::run(crate::bench::import::ImportArgs {
                dir,
                base_port,
                wordnet,
            })),
        Command::Bench {
            what: Some(BenchWhat::Compare { etcd, seconds, load_seconds, clients, keys, kills }),
            dir,
            base_port,
            ..
        } => {
            let args = crate::bench::compare::CompareArgs {
                dir,
                base_port,
                etcd,
                seconds,
                load_seconds,
                clients,
                keys,
                kills,
            };
            runtime()?.block_on(crate::bench::compare::run(args))
        }
        Command::Bench {
            what: Some(BenchWhat::Recall { wordnet, pairs, parameters, embeddings }), ..
        } => crate::bench::recall::run(crate::bench::recall::RecallArgs {
            wordnet,
            pairs,
            parameters,
            embeddings,
        }),
        Command::Bench { what: Some(BenchWhat::Spread { atoms, spreads }), .. } => {
            crate::bench::spread::run(crate::bench::spread::SpreadArgs { atoms, spreads })
        }
        Command::Bench { what: None, dir, base_port, nodes, writes, concurrency, concurrent_writes } => {
            let args =
                crate::bench::BenchArgs { dir, base_port, nodes, writes, concurrency, concurrent_writes };
            runtime()?.block_on(crate::bench::run(args))
        }
        Command::InferenceWorker { model, kind, threads, batch_tokens, context_tokens } => {
            inference_worker(model, &kind, threads, batch_tokens, context_tokens)
        }
        Command::Admin { command, target } => {
            runtime()?.block_on(admin(command, Client::new(target.addr)?.in_space(target.space)))
        }
        Command::Atom { command, target } => {
            runtime()?.block_on(atom(command, Client::new(target.addr)?.in_space(target.space)))
        }
        Command::Import { file, import_id, merge, format, target } => {
            let addr = target.addr.first().cloned().unwrap_or_default();
            let space = target.space.as_deref();
            let job = crate::transfer::ImportJob { addr: &addr, space, file: &file, import_id, merge };
            let answer = match crate::transfer::Format::of(format.as_deref(), Some(&file))? {
                crate::transfer::Format::Ndjson => runtime()?.block_on(crate::transfer::import(&job))?,
                crate::transfer::Format::Atomese => {
                    runtime()?.block_on(crate::transfer::import_atomese(&job))?
                }
            };
            print(&answer);
            Ok(())
        }
        Command::Export { out, format, target } => {
            let addr = target.addr.first().cloned().unwrap_or_default();
            let format = crate::transfer::Format::of(format.as_deref(), out.as_deref())?;
            let end = runtime()?.block_on(crate::transfer::export(
                &addr,
                target.space.as_deref(),
                out.as_deref(),
                format,
            ))?;
            if out.is_some() {
                print(&end);
            }
            Ok(())
        }
        Command::Spread { args, target } => {
            let body = spread_body(args)?;
            let client = Client::new(target.addr)?.in_space(target.space);
            print(&runtime()?.block_on(client.call(Method::POST, "/v1/spread", Some(&body)))?);
            Ok(())
        }
    }
}

fn spread_body(args: SpreadArgs) -> anyhow::Result<Value> {
    let mut sources: Vec<Value> = args.ids.iter().map(|id| json!(id)).collect();
    for node in &args.nodes {
        let (atom_type, name) = node
            .split_once(':')
            .with_context(|| format!("--node {node:?} must be TYPE:NAME, e.g. ConceptNode:cat"))?;
        sources.push(json!({ "type": atom_type, "name": name }));
    }
    if sources.is_empty() {
        anyhow::bail!("give at least one source: --id ID or --node TYPE:NAME");
    }
    let mut body = serde_json::Map::new();
    body.insert("sources".into(), Value::Array(sources));
    let optional = [
        ("max_hops", args.max_hops.map(|v| json!(v))),
        ("decay", args.decay.map(|v| json!(v))),
        ("threshold", args.threshold.map(|v| json!(v))),
        ("top_k", args.top_k.map(|v| json!(v))),
        ("deadline_ms", args.deadline_ms.map(|v| json!(v))),
        ("link_types", (!args.link_types.is_empty()).then(|| json!(args.link_types))),
        ("explain", args.explain.then_some(json!(true))),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            body.insert(key.into(), value);
        }
    }
    Ok(Value::Object(body))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn init_logging(filter: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(feature = "inference")]
fn inference_worker(
    model: PathBuf,
    kind: &str,
    threads: usize,
    batch_tokens: usize,
    context_tokens: usize,
) -> anyhow::Result<()> {
    // Its log shares the node's stderr; stdout carries nothing but frames. llama.cpp's own
    // warnings (e.g. about a context longer than the model's, which batching needs) stay out.
    init_logging("warn,llama-cpp-2=error", "pretty");
    let kind = kind.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    cograft_actors::inference::worker::run(cograft_actors::inference::worker::WorkerArgs {
        model,
        kind,
        threads,
        batch_tokens,
        context_tokens,
    })
}

#[cfg(not(feature = "inference"))]
fn inference_worker(_: PathBuf, _: &str, _: usize, _: usize, _: usize) -> anyhow::Result<()> {
    anyhow::bail!(
        "this binary was built without the `inference` feature; rebuild with `cargo build --features inference`"
    )
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    cluster::die_with_parent()?;
    let overrides = Overrides { id: args.node_id, listen: args.listen, data_dir: args.data_dir.clone() };
    let file =
        args.config.or_else(|| args.data_dir.map(|d| d.join(cluster::NODE_CONFIG)).filter(|p| p.exists()));
    let settings = Settings::load(file.as_deref(), &overrides)?;
    init_logging(&settings.log.filter, &settings.log.format);
    actix_web::rt::System::new().block_on(node::run(settings))
}

async fn cluster_up(nodes: u64, base_port: u16, dir: PathBuf) -> anyhow::Result<()> {
    // The handlers come first: a stop during start-up must stop the nodes already started, not
    // kill this process and leave them running on their ports.
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    let mut cluster = cluster::LocalCluster::default();
    let started = tokio::select! {
        started = cluster::start(&mut cluster, nodes, base_port, &dir) => Some(started),
        _ = term.recv() => None,
        _ = int.recv() => None,
    };
    let Some(started) = started else {
        println!("stopped during start-up; stopping the nodes already started");
        return cluster.stop(Duration::from_secs(30));
    };
    let (leader, took) = started?;
    println!("cluster of {nodes} up in {:.2} s; node {leader} leads", took.as_secs_f64());
    cluster::print_status(&cluster).await?;
    println!("Ctrl-C or SIGTERM stops every node.");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    println!("stopping the cluster");
    cluster.stop(Duration::from_secs(30))
}

fn print(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

async fn admin(command: AdminCommand, client: Client) -> anyhow::Result<()> {
    let answer = match command {
        AdminCommand::Init { members } => {
            let members = members
                .iter()
                .map(|m| {
                    let (id, addr) = m.split_once('=').context("--member must be ID=HOST:PORT")?;
                    let id = id.parse::<u64>().context("--member id must be a number")?;
                    Ok((id.to_string(), Value::String(addr.to_string())))
                })
                .collect::<anyhow::Result<serde_json::Map<String, Value>>>()?;
            client.call(Method::POST, "/admin/init", Some(&json!({ "members": members }))).await?
        }
        AdminCommand::AddLearner { id, node_addr } => {
            client
                .call(Method::POST, "/admin/add-learner", Some(&json!({ "id": id, "addr": node_addr })))
                .await?
        }
        AdminCommand::ChangeMembership { voters, retain } => {
            let body = json!({ "voters": voters, "retain": retain });
            client.call(Method::POST, "/admin/change-membership", Some(&body)).await?
        }
        AdminCommand::RemoveNode { id } => {
            client.call(Method::POST, "/admin/remove-node", Some(&json!({ "id": id }))).await?
        }
        AdminCommand::Status => client.call(Method::GET, "/admin/status", None).await?,
        AdminCommand::Snapshot => client.call(Method::POST, "/admin/snapshot", None).await?,
        AdminCommand::Digest => client.call(Method::GET, "/admin/digest", None).await?,
        AdminCommand::Health => client.call(Method::GET, "/admin/health", None).await?,
        AdminCommand::Forget { apply, lti_below, limit, after } => {
            let body = json!({ "dry_run": !apply, "lti_below": lti_below, "limit": limit, "after": after });
            client.call(Method::POST, "/admin/forget", Some(&body)).await?
        }
    };
    print(&answer);
    Ok(())
}

fn tv(strength: Option<f64>, confidence: Option<f64>) -> Value {
    match (strength, confidence) {
        (None, None) => Value::Null,
        (s, c) => json!({ "strength": s.unwrap_or(1.0), "confidence": c.unwrap_or(0.0) }),
    }
}

async fn atom(command: AtomCommand, client: Client) -> anyhow::Result<()> {
    let answer = match command {
        AtomCommand::Add { atom_type, name, strength, confidence } => {
            let body = json!({ "type": atom_type, "name": name, "tv": tv(strength, confidence) });
            client.call(Method::POST, "/v1/atoms", Some(&body)).await?
        }
        AtomCommand::Link { atom_type, outgoing, strength, confidence } => {
            let body = json!({ "type": atom_type, "outgoing": outgoing, "tv": tv(strength, confidence) });
            client.call(Method::POST, "/v1/links", Some(&body)).await?
        }
        AtomCommand::Get { id } => client.call(Method::GET, &format!("/v1/atoms/{id}"), None).await?,
        AtomCommand::Stimulate { id, sti, lti, vlti } => {
            let body = json!({ "sti": sti, "lti": lti, "vlti": vlti });
            client.call(Method::POST, &format!("/v1/atoms/{id}/stimulate"), Some(&body)).await?
        }
        AtomCommand::Focus { top_k } => {
            client.call(Method::GET, &format!("/v1/attention/focus?top_k={top_k}"), None).await?
        }
        AtomCommand::Find { atom_type, name } => {
            let url = reqwest::Url::parse_with_params(
                "http://node/v1/atoms",
                [("type", atom_type.as_str()), ("name", name.as_str())],
            )?;
            client.call(Method::GET, &format!("/v1/atoms?{}", url.query().unwrap_or_default()), None).await?
        }
    };
    print(&answer);
    Ok(())
}
