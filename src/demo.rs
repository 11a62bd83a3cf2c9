//! `cograft demo`: a local 3-node cluster, a sample knowledge graph (an animal taxonomy with
//! inheritance and evaluation links), queries against different nodes, a spread, attention
//! diffusing from a stimulated atom, the cluster's status and digests, and a clean stop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};

use crate::cluster;

/// child -> (parent, strength of "child is a parent").
const TAXONOMY: &str = "\
animal:living_thing:1.0 plant:living_thing:1.0 fungus:living_thing:1.0 \
vertebrate:animal:1.0 invertebrate:animal:1.0 mammal:vertebrate:1.0 bird:vertebrate:1.0 \
reptile:vertebrate:1.0 amphibian:vertebrate:1.0 fish:vertebrate:1.0 insect:invertebrate:1.0 \
arachnid:invertebrate:1.0 mollusc:invertebrate:1.0 crustacean:invertebrate:1.0 \
cat:mammal:1.0 dog:mammal:1.0 horse:mammal:1.0 cow:mammal:1.0 whale:mammal:0.98 \
dolphin:mammal:0.98 bat:mammal:0.97 human:mammal:1.0 mouse:mammal:1.0 elephant:mammal:1.0 \
platypus:mammal:0.9 kangaroo:mammal:1.0 lion:cat:0.8 tiger:cat:0.8 wolf:dog:0.7 fox:dog:0.6 \
sparrow:bird:1.0 eagle:bird:1.0 penguin:bird:0.95 ostrich:bird:0.95 owl:bird:1.0 \
parrot:bird:1.0 chicken:bird:1.0 duck:bird:1.0 snake:reptile:1.0 lizard:reptile:1.0 \
turtle:reptile:1.0 crocodile:reptile:1.0 frog:amphibian:1.0 salamander:amphibian:1.0 \
salmon:fish:1.0 shark:fish:1.0 tuna:fish:1.0 goldfish:fish:1.0 bee:insect:1.0 ant:insect:1.0 \
butterfly:insect:1.0 mosquito:insect:1.0 spider:arachnid:1.0 scorpion:arachnid:1.0 \
snail:mollusc:1.0 octopus:mollusc:1.0 crab:crustacean:1.0 lobster:crustacean:1.0 \
oak:tree:1.0 pine:tree:1.0 tree:plant:1.0 rose:flower:1.0 tulip:flower:1.0 flower:plant:1.0 \
grass:plant:1.0 moss:plant:1.0 mushroom:fungus:1.0 yeast:fungus:1.0 mould:fungus:1.0 \
pet:animal:0.6 cat:pet:0.8 dog:pet:0.9 goldfish:pet:0.7 parrot:pet:0.6 mouse:pet:0.3 \
livestock:animal:0.6 cow:livestock:0.95 chicken:livestock:0.9 horse:livestock:0.6";

/// predicate -> concepts it holds for, with strength.
const PROPERTIES: &str = "\
has_fur:cat:0.98,dog:0.97,horse:0.9,mouse:0.99,lion:0.98,tiger:0.98,wolf:0.99,fox:0.99,whale:0.01,human:0.3 \
can_fly:bird:0.9,penguin:0.0,ostrich:0.0,bat:0.95,bee:0.99,butterfly:0.99,mosquito:0.99,eagle:1.0,chicken:0.1 \
lays_eggs:bird:1.0,reptile:0.95,fish:0.9,platypus:1.0,insect:0.95,frog:1.0,mammal:0.01 \
lives_in_water:fish:1.0,whale:1.0,dolphin:1.0,octopus:1.0,crab:0.8,frog:0.6,duck:0.5,penguin:0.6 \
is_domestic:cat:0.95,dog:0.98,cow:0.99,horse:0.9,chicken:0.99,goldfish:0.9,wolf:0.02 \
is_venomous:snake:0.3,spider:0.5,scorpion:0.9,bee:0.8,octopus:0.1 \
photosynthesises:plant:1.0,tree:1.0,grass:1.0,moss:1.0,fungus:0.0 \
has_six_legs:insect:1.0,spider:0.0";

/// Builds the sample graph as batch operations (`"$N"` refers to an earlier op's atom).
pub fn sample_batches() -> Vec<Value> {
    let mut concepts: BTreeMap<String, usize> = BTreeMap::new();
    let mut ops: Vec<Value> = Vec::new();
    let mut concept = |ops: &mut Vec<Value>, name: &str| -> String {
        let n = *concepts.entry(name.to_string()).or_insert_with(|| {
            ops.push(json!({ "op": "add_node", "type": "ConceptNode", "name": name, "tv": { "strength": 1.0, "confidence": 0.9 } }));
            ops.len() - 1
        });
        format!("${n}")
    };
    for pair in TAXONOMY.split_whitespace() {
        let mut parts = pair.split(':');
        let (child, parent, s) =
            (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or("1"));
        let (c, p) = (concept(&mut ops, child), concept(&mut ops, parent));
        let strength: f64 = s.parse().unwrap_or(1.0);
        ops.push(json!({ "op": "add_link", "type": "InheritanceLink", "outgoing": [c, p], "tv": { "strength": strength, "confidence": 0.9 } }));
    }
    let mut lists: BTreeMap<String, String> = BTreeMap::new();
    for line in PROPERTIES.split_whitespace() {
        let (predicate, holders) = line.split_once(':').unwrap_or((line, ""));
        ops.push(json!({ "op": "add_node", "type": "PredicateNode", "name": predicate, "tv": { "strength": 1.0, "confidence": 0.9 } }));
        let pred = format!("${}", ops.len() - 1);
        for holder in holders.split(',') {
            let (name, s) = holder.split_once(':').unwrap_or((holder, "1"));
            let c = concept(&mut ops, name);
            let list = lists.entry(name.to_string()).or_insert_with(|| {
                ops.push(json!({ "op": "add_link", "type": "ListLink", "outgoing": [c] }));
                format!("${}", ops.len() - 1)
            });
            let strength: f64 = s.parse().unwrap_or(1.0);
            ops.push(json!({ "op": "add_link", "type": "EvaluationLink", "outgoing": [pred, list], "tv": { "strength": strength, "confidence": 0.8 } }));
        }
    }
    vec![json!({ "ops": ops })]
}

/// Recall by association on a follower: what spreading activation from `cat` ranks highest
/// (once the follower's index reflects the load).
async fn spread_from_cat(follower: &str, loaded_at: u64) -> anyhow::Result<()> {
    let node = crate::client::Client::new(vec![follower.to_string()])?;
    let body = json!({ "sources": [{ "type": "ConceptNode", "name": "cat" }], "top_k": 30 });
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let reply = node.call(Method::POST, "/v1/spread", Some(&body)).await?;
        if reply["applied_index"].as_u64().unwrap_or(0) >= loaded_at || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stats = &reply["stats"];
    println!(
        "== spreading activation from 'cat' on follower {follower} (index at {}): {} atoms touched in {} us",
        reply["applied_index"], stats["atoms_touched"], stats["elapsed_us"]
    );
    let nodes = reply["results"].as_array().into_iter().flatten().filter(|r| r["name"].is_string());
    for r in nodes.take(8) {
        println!(
            "     {:<12} {:<14} activation {:.4}  hops {}",
            r["name"].as_str().unwrap_or("?"),
            r["type"].as_str().unwrap_or("?"),
            r["activation"].as_f64().unwrap_or(0.0),
            r["hops"]
        );
    }
    Ok(())
}

/// Stimulates 'cat', lets the leader's attention steps diffuse it for a few seconds, and shows
/// the focus every node answers at its applied index.
async fn attention_on_cat(client: &crate::client::Client, addrs: &[String]) -> anyhow::Result<()> {
    let cat = client.call(Method::GET, "/v1/atoms?type=ConceptNode&name=cat", None).await?["atoms"][0]["id"]
        .clone();
    client.call(Method::POST, &format!("/v1/atoms/{cat}/stimulate"), Some(&json!({ "sti": 20.0 }))).await?;
    println!("== attention: 'cat' stimulated (STI 20); the leader's ECAN steps diffuse it once a second");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for (i, addr) in addrs.iter().enumerate() {
        let node = crate::client::Client::new(vec![addr.clone()])?;
        let focus = node.call(Method::GET, "/v1/attention/focus?top_k=5&consistency=stale", None).await?;
        let atoms: Vec<String> = focus["focus"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let name = a["name"].as_str().map(String::from).unwrap_or_else(|| format!("{}", a["type"]));
                format!("{name} {:.2}", a["av"]["sti"].as_f64().unwrap_or(0.0))
            })
            .collect();
        println!("   node {} focus at index {}: {}", i + 1, focus["applied_index"], atoms.join(", "));
    }
    Ok(())
}

/// Every node's digest, read until all report the same applied index (attention steps keep
/// the log moving), at most a few seconds.
async fn digests(addrs: &[String]) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut read = Vec::new();
        for addr in addrs {
            let d = crate::client::Client::new(vec![addr.clone()])?
                .call(Method::GET, "/admin/digest", None)
                .await?;
            read.push((d["node_id"].clone(), d["applied_index"].as_u64().unwrap_or(0), d["digest"].clone()));
        }
        if read.windows(2).all(|w| w[0].1 == w[1].1) || Instant::now() > deadline {
            return Ok(read
                .iter()
                .map(|(node, index, digest)| {
                    format!(
                        "node {node} index {index} {}",
                        digest.as_str().and_then(|d| d.get(..16)).unwrap_or("?")
                    )
                })
                .collect());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where `make models` writes the models, and the settings that name them.
const EMBEDDING_MODEL: &str = "models/all-minilm-l6-v2.gguf";
const EMBEDDING_ENV: &str = "COGRAFT__INFERENCE__EMBEDDING_MODEL";
const GENERATION_MODEL: &str = "models/smollm2-135m-instruct-q4_1.gguf";
const GENERATION_ENV: &str = "COGRAFT__INFERENCE__GENERATION_MODEL";

/// Points the demo's nodes at the models `make models` wrote, unless the environment names
/// them already or this binary cannot run them. Call before any thread starts.
pub fn use_models_if_built() {
    if !cfg!(feature = "inference") {
        return;
    }
    for (env, model) in [(EMBEDDING_ENV, EMBEDDING_MODEL), (GENERATION_ENV, GENERATION_MODEL)] {
        if std::env::var_os(env).is_some() {
            continue;
        }
        if let Ok(path) = std::path::Path::new(model).canonicalize() {
            std::env::set_var(env, path);
        }
    }
}

/// Knowledge from text: the facts the chat model finds in a sentence, inserted with their
/// provenance (skipped when the nodes run without the model).
async fn extraction_demo(node: &str) -> anyhow::Result<()> {
    if std::env::var_os(GENERATION_ENV).is_none() {
        println!(
            "== fact extraction: skipped (no model; `make models` and a build with --features inference)"
        );
        return Ok(());
    }
    let text = "Marie Curie discovered polonium and radium.";
    let client = crate::client::Client::new(vec![node.to_string()])?;
    let body = json!({ "text": text, "insert": true });
    let reply = client.call(Method::POST, "/v1/extract?space=facts", Some(&body)).await?;
    println!("== fact extraction on node {node} ({}, under a JSON grammar) from {text:?}", reply["model"]);
    let triples = reply["triples"].as_array().cloned().unwrap_or_default();
    for (t, inserted) in triples.iter().zip(reply["inserted"].as_array().cloned().unwrap_or_default()) {
        println!(
            "     ({}, {}, {}) confidence {} -> EvaluationLink {}",
            t["subject"], t["relation"], t["object"], t["confidence"], inserted["link"]
        );
    }
    if let Some(link) = reply["inserted"][0]["link"].as_u64() {
        let path = format!("/v1/atoms/{link}/values/provenance?space=facts");
        let provenance = client.call(Method::GET, &path, None).await?;
        println!("     provenance of link {link}: {}", provenance["value"]["sources"][0]);
    }
    Ok(())
}

/// Recall by meaning: how close a few texts are to "raft consensus", by the node's embedding
/// model (skipped when the nodes run without one).
async fn embeddings_demo(node: &str) -> anyhow::Result<()> {
    if std::env::var_os(EMBEDDING_ENV).is_none() {
        println!("== embeddings: skipped (no model; `make models` and a build with --features inference)");
        return Ok(());
    }
    let texts =
        ["raft consensus", "Raft is a consensus algorithm", "a rubber raft on the river", "a cat on a mat"];
    let body = json!({ "texts": texts });
    let reply = crate::client::Client::new(vec![node.to_string()])?
        .call(Method::POST, "/v1/embed", Some(&body))
        .await?;
    let vectors: Vec<Vec<f64>> = serde_json::from_value(reply["embeddings"].clone())?;
    println!(
        "== embeddings on node {node} ({}, {} dimensions): cosine to {:?}",
        reply["model"], reply["dim"], texts[0]
    );
    for (text, v) in texts.iter().zip(&vectors).skip(1) {
        let cosine: f64 = v.iter().zip(&vectors[0]).map(|(a, b)| a * b).sum();
        println!("     {cosine:.3}  {text:?}");
    }
    Ok(())
}

/// Runs the demo end to end.
pub async fn run(dir: PathBuf, base_port: u16) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("clearing the demo directory {}", dir.display()))?;
    }
    println!("== starting a 3-node cluster in {} (ports {base_port}..{})", dir.display(), base_port + 2);
    let (cluster, leader, took) = cluster::up(3, base_port, &dir).await?;
    println!("   node {leader} leads, {:.2} s after launch", took.as_secs_f64());
    let addrs = cluster.addrs();
    let client = cluster.client()?;
    let follower = addrs.iter().find(|a| **a != addrs[(leader - 1) as usize]).cloned().unwrap_or_default();

    println!("== loading the sample knowledge graph through follower {follower} (forwarded to the leader)");
    let started = Instant::now();
    let mut atoms = 0;
    let mut loaded_at = 0;
    for batch in sample_batches() {
        let answer = crate::client::Client::new(vec![follower.clone()])?
            .call(Method::POST, "/v1/batch", Some(&batch))
            .await?;
        atoms += answer["results"].as_array().map(Vec::len).unwrap_or(0);
        loaded_at = loaded_at.max(answer["index"].as_u64().unwrap_or(0));
        println!(
            "   batch of {} ops committed at log index {}",
            batch["ops"].as_array().map(Vec::len).unwrap_or(0),
            answer["index"]
        );
    }
    println!("   {atoms} atoms in {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);

    for (i, addr) in addrs.iter().enumerate() {
        let node = crate::client::Client::new(vec![addr.clone()])?;
        let found = node.call(Method::GET, "/v1/atoms?type=ConceptNode&name=cat", None).await?;
        let cat = &found["atoms"][0];
        let incoming = node.call(Method::GET, &format!("/v1/atoms/{}/incoming", cat["id"]), None).await?;
        let links = incoming["incoming"].as_array().cloned().unwrap_or_default();
        println!(
            "== node {} (linearizable read at applied index {}): cat is atom {} and appears in {} links",
            i + 1,
            incoming["applied_index"],
            cat["id"],
            links.len()
        );
        if i == 0 {
            let parents =
                links.iter().filter(|l| l["type"] == "InheritanceLink" && l["outgoing"][0] == cat["id"]);
            for link in parents {
                let parent =
                    node.call(Method::GET, &format!("/v1/atoms/{}", link["outgoing"][1]), None).await?;
                println!(
                    "     cat -> {} (strength {})",
                    parent["name"].as_str().unwrap_or("?"),
                    link["tv"]["strength"]
                );
            }
        }
    }

    spread_from_cat(&follower, loaded_at).await?;
    embeddings_demo(&follower).await?;
    extraction_demo(&follower).await?;
    attention_on_cat(&client, &addrs).await?;

    println!("== compare-and-set on a named value of 'cat'");
    let cat = client.call(Method::GET, "/v1/atoms?type=ConceptNode&name=cat", None).await?["atoms"][0]["id"]
        .clone();
    let path = format!("/v1/atoms/{cat}/values/lives");
    let first = client.request(Method::PUT, &path, Some(&json!({ "value": 9, "expect": null }))).await?;
    let second = client.request(Method::PUT, &path, Some(&json!({ "value": 8, "expect": null }))).await?;
    println!(
        "   set lives=9 if absent: HTTP {}; again with lives=8 if absent: HTTP {} {}",
        first.status, second.status, second.body["current"]
    );

    println!("== an agent session and an observation");
    let session = client
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&json!({ "ttl_ms": 60000, "metadata": { "agent": "demo" } })),
        )
        .await?;
    client
        .call(Method::POST, "/v1/observations", Some(&json!({ "subject": "demo.query", "success": true, "duration_ms": 12, "bytes": 512, "message": "taxonomy lookup" })))
        .await?;
    let stats = client.call(Method::GET, "/v1/observations/stats?subject=demo.query", None).await?;
    println!(
        "   session {} is {}; demo.query: {} observation(s), success rate {}",
        session["id"], session["status"], stats["count"], stats["success_rate"]
    );

    println!("== cluster status");
    cluster::print_status(&cluster).await?;
    println!("   state digests: {}", digests(&addrs).await?.join(" | "));
    println!("== stopping the nodes (SIGTERM)");
    cluster.stop(Duration::from_secs(30))?;
    println!("demo finished; data kept in {}", dir.display());
    Ok(())
}
