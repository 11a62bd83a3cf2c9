//! `cograft bench import`: bulk import at WordNet size on a fresh 3-node cluster. WordNet 3.0
//! is written as import NDJSON (~1.2M atoms), streamed through `cograft import` into the
//! leader, and timed until the import's answer (every entry committed on a quorum, fsync on);
//! then the space is exported and every node's content digest compared.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::Method;

use super::wordnet::WordNet;
use crate::cluster;

pub struct ImportArgs {
    pub dir: PathBuf,
    pub base_port: u16,
    pub wordnet: PathBuf,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let wn = WordNet::load(&args.wordnet)?;
    std::fs::create_dir_all("target").ok();
    let file = PathBuf::from("target/wordnet.ndjson");
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(&file).context("creating target/wordnet.ndjson")?);
    let lines = wn.write_ndjson(&mut out)?;
    drop(out);
    let bytes = std::fs::metadata(&file)?.len();
    println!("WordNet as NDJSON: {lines} lines, {:.1} MB, {} atoms", bytes as f64 / 1e6, wn.atom_count());

    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).with_context(|| format!("clearing {}", args.dir.display()))?;
    }
    let (cluster, leader, _) = cluster::up(3, args.base_port, &args.dir).await?;
    let addrs = cluster.addrs();
    let leader_addr = addrs[(leader - 1) as usize].clone();
    let term_before = cluster::max_term(&addrs).await?;
    let started = Instant::now();
    let job = crate::transfer::ImportJob {
        addr: &leader_addr,
        space: None,
        file: &file,
        import_id: None,
        merge: None,
    };
    let answer = crate::transfer::import(&job).await;
    let took = started.elapsed();
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            cluster.stop(Duration::from_secs(30))?;
            return Err(e);
        }
    };
    let atoms = answer["atoms"].as_u64().unwrap_or(0);
    let elections = cluster::max_term(&addrs).await? - term_before;
    println!(
        "import: {atoms} atoms ({} created) in {} entries, {:.1} s = {:.0} atoms/s; {} errors; {elections} elections",
        answer["created"],
        answer["entries"],
        took.as_secs_f64(),
        atoms as f64 / took.as_secs_f64(),
        answer["error_count"]
    );

    let export = PathBuf::from("target/wordnet-export.ndjson");
    let started = Instant::now();
    let end =
        crate::transfer::export(&leader_addr, None, Some(&export), crate::transfer::Format::Ndjson).await?;
    let took = started.elapsed();
    println!(
        "export: {} atoms in {:.1} s = {:.0} atoms/s",
        end["atoms"],
        took.as_secs_f64(),
        end["atoms"].as_f64().unwrap_or(0.0) / took.as_secs_f64()
    );
    let mut digests = Vec::new();
    for addr in &addrs {
        let client = crate::client::Client::new(vec![addr.clone()])?;
        // Followers answer once they applied what the import committed.
        let deadline = Instant::now() + Duration::from_secs(60);
        let digest = loop {
            let d = client.call(Method::GET, "/admin/digest?content=true", None).await?;
            if d["atoms"].as_u64() == end["atoms"].as_u64() || Instant::now() > deadline {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        digests.push(digest["content_digest"].as_str().unwrap_or("?").to_string());
    }
    println!("content digests: {}", digests.join(" | "));
    cluster.stop(Duration::from_secs(60))?;
    if digests.windows(2).any(|w| w[0] != w[1]) {
        bail!("the nodes' content digests differ");
    }
    Ok(())
}
