//! Bulk import and export on a live cluster, through the CLI: a generated file of 100k atoms
//! (links by reference and links of links, named values) imported, exported and imported into
//! another space gives the same content digest though every id differs (vectors included);
//! running an import
//! again with its import id adds nothing (not even `revision` evidence); malformed lines are
//! reported by number and nothing else is lost.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{bin, Cluster};

/// `nodes` ConceptNodes, a ListLink between each node and the next (by key), a SimilarityLink
/// of every tenth ListLink with a node named by (type, name), named values on every hundredth
/// node and a vector on every fiftieth: nodes + (nodes - 1) + (nodes - 1) / 10 atoms.
fn generated(nodes: usize) -> String {
    let mut out = String::new();
    for i in 0..nodes {
        let line = json!({ "key": format!("n{i}"), "type": "ConceptNode", "name": format!("concept {i}"),
                           "tv": { "strength": 0.5 + (i % 5) as f64 / 10.0, "confidence": 0.3 } });
        writeln!(out, "{line}").unwrap();
    }
    for i in 1..nodes {
        let line = json!({ "key": format!("l{i}"), "type": "ListLink",
                           "outgoing": [{ "key": format!("n{}", i - 1) }, { "key": format!("n{i}") }] });
        writeln!(out, "{line}").unwrap();
        if i % 10 == 0 {
            let line = json!({ "type": "SimilarityLink",
                               "outgoing": [{ "key": format!("l{i}") }, { "type": "ConceptNode", "name": "concept 0" }],
                               "tv": { "strength": 0.9, "confidence": 0.8 } });
            writeln!(out, "{line}").unwrap();
        }
    }
    for i in (0..nodes).step_by(100) {
        writeln!(
            out,
            "{}",
            json!({ "key": format!("n{i}"), "values": { "rank": i, "label": { "en": format!("c{i}") } } })
        )
        .unwrap();
    }
    for i in (0..nodes).step_by(50) {
        let vector: Vec<f32> = (0..3).map(|j| ((i * 3 + j) as f32 * 0.37).sin() + 1.5).collect();
        writeln!(out, "{}", json!({ "key": format!("n{i}"), "embeddings": { "toy": vector } })).unwrap();
    }
    out
}

fn cli(c: &Cluster, args: &[&str]) -> Value {
    let out = Command::new(bin()).args(args).args(["--addr", &c.addr(1)]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cograft {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("cograft {args:?} printed no JSON ({e}): {stdout}"))
}

fn import(c: &Cluster, file: &Path, space: &str, extra: &[&str]) -> Value {
    let mut args = vec!["import", file.to_str().unwrap(), "--space", space];
    args.extend_from_slice(extra);
    cli(c, &args)
}

fn content_digest(c: &Cluster, space: &str) -> Value {
    let reply = c.get(1, &format!("/admin/digest?content=true&space={space}"));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

#[test]
fn export_then_import_keeps_the_content_and_reruns_add_nothing() {
    let c = Cluster::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("graph.ndjson");
    let nodes = 47_620;
    std::fs::write(&file, generated(nodes)).unwrap();
    let atoms = nodes + (nodes - 1) + (nodes - 1) / 10;
    assert!(atoms >= 100_000, "{atoms}");

    let first = import(&c, &file, "a", &["--merge", "revision"]);
    assert_eq!(first["error_count"], 0, "{first}");
    // Every line's atom (the SimilarityLinks' node references merge into "concept 0").
    assert_eq!(first["created"].as_u64().unwrap() as usize, atoms, "{first}");
    assert_eq!(first["values"].as_u64().unwrap() as usize, 2 * nodes.div_ceil(100), "{first}");
    assert_eq!(first["embeddings"].as_u64().unwrap() as usize, nodes.div_ceil(50), "{first}");
    let a = content_digest(&c, "a");
    assert_eq!(a["atoms"].as_u64().unwrap() as usize, atoms);
    assert_eq!(a["vectors"].as_u64().unwrap() as usize, nodes.div_ceil(50));

    // The same file again (its import id is the file's hash): every entry answers from the
    // idempotency table, so revision pools no evidence twice.
    let again = import(&c, &file, "a", &["--merge", "revision"]);
    assert_eq!(again["import_id"], first["import_id"]);
    assert_eq!(again["error_count"], 0, "{again}");
    assert_eq!(content_digest(&c, "a")["content_digest"], a["content_digest"], "a re-run added evidence");
    // Under another import id it would (on a small file): the check above can fail.
    let small = dir.path().join("small.ndjson");
    std::fs::write(&small, generated(500)).unwrap();
    import(&c, &small, "c", &["--merge", "revision"]);
    let once = content_digest(&c, "c");
    import(&c, &small, "c", &["--merge", "revision", "--import-id", "another-run"]);
    assert_ne!(content_digest(&c, "c")["content_digest"], once["content_digest"]);

    // Export space a, import the export into space b: other ids, other times, same content.
    let exported = dir.path().join("a.ndjson");
    let end = cli(&c, &["export", "--space", "a", "--out", exported.to_str().unwrap()]);
    assert_eq!(end["atoms"].as_u64().unwrap() as usize, atoms, "{end}");
    assert_eq!(end["embeddings"].as_u64().unwrap() as usize, nodes.div_ceil(50), "{end}");
    let b = import(&c, &exported, "b", &[]);
    assert_eq!(b["error_count"], 0, "{b}");
    let b = content_digest(&c, "b");
    assert_eq!(b["content_digest"], a["content_digest"], "export -> import changed the content");
    assert_eq!(b["values"], a["values"]);
    assert_eq!(b["vectors"], a["vectors"]);
    // One vector changed in a copy of b's export digests differently: vectors are content.
    let in_b = dir.path().join("b.ndjson");
    cli(&c, &["export", "--space", "b", "--out", in_b.to_str().unwrap()]);
    let text = std::fs::read_to_string(&in_b).unwrap();
    let line =
        text.lines().find(|l| l.contains("\"embeddings\":{")).expect("an embeddings line in the export");
    let mut changed: Value = serde_json::from_str(line).unwrap();
    changed["embeddings"]["toy"][0] = json!(9.0);
    let copy = dir.path().join("b-changed.ndjson");
    std::fs::write(&copy, text.replace(line, &changed.to_string())).unwrap();
    assert_eq!(import(&c, &copy, "d", &[])["error_count"], 0);
    let d = content_digest(&c, "d");
    assert_eq!(d["vectors"], a["vectors"]);
    assert_ne!(d["content_digest"], a["content_digest"], "a changed vector left the digest as it was");
    let first_of =
        |space: &str| c.get(1, &format!("/v1/atoms?type=ConceptNode&name=concept%201&space={space}"));
    // And a space with one truth value changed digests differently.
    let id = first_of("b").body["atoms"][0]["id"].as_u64().unwrap();
    let r = c.call(
        1,
        reqwest::Method::PUT,
        &format!("/v1/atoms/{id}/tv?space=b"),
        Some(json!({ "strength": 0.1, "confidence": 0.1 })),
        None,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_ne!(content_digest(&c, "b")["content_digest"], a["content_digest"]);
}

#[test]
fn malformed_lines_are_reported_by_number_and_nothing_else_is_lost() {
    let c = Cluster::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.ndjson");
    let lines = [
        json!({ "key": "cat", "type": "ConceptNode", "name": "cat" }).to_string(),
        "{ this is not json".to_string(),
        json!({ "key": "dog", "type": "ConceptNode", "name": "dog" }).to_string(),
        json!({ "type": "Not A Type", "name": "x" }).to_string(),
        json!({ "type": "ListLink", "outgoing": [{ "key": "cat" }, { "key": "unicorn" }] }).to_string(),
        json!({ "type": "ListLink", "outgoing": [{ "key": "cat" }, 999_999_999] }).to_string(),
        json!({ "key": "pets", "type": "ListLink", "outgoing": [{ "key": "cat" }, { "key": "dog" }] }).to_string(),
        json!({ "type": "ConceptNode", "name": "bad tv", "tv": { "strength": 2.0, "confidence": 0.5 } }).to_string(),
        json!({ "key": "pets", "values": { "size": 2 } }).to_string(),
        json!({ "name": "no type" }).to_string(),
        String::new(),
        json!({ "type": "InheritanceLink", "outgoing": [{ "key": "pets" }, { "type": "ConceptNode", "name": "animal" }] })
            .to_string(),
        json!({ "key": "dog", "embeddings": { "toy": [1.0, 0.0] } }).to_string(),
        // Another dimension than the model's first vector: refused by the state machine.
        json!({ "key": "cat", "embeddings": { "toy": [1.0, 0.0, 0.0] } }).to_string(),
        json!({ "key": "cat", "embeddings": { "toy": [] } }).to_string(),
        json!({ "embeddings": { "toy": [1.0, 1.0] } }).to_string(),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let answer = import(&c, &file, "default", &[]);
    let bad: Vec<u64> =
        answer["errors"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
    // Lines refused as they are read come first; then what the state machine refused.
    assert_eq!(bad, vec![2, 4, 5, 8, 10, 15, 16, 6, 14], "{answer}");
    let unknown = &answer["errors"][7]["error"];
    assert!(unknown.as_str().unwrap().contains("999999999"), "{answer}");
    let mismatch = answer["errors"][8]["error"].as_str().unwrap();
    assert!(mismatch.contains("dimension"), "{answer}");
    // cat, dog, pets, animal and the InheritanceLink; pets' value.
    assert_eq!(answer["created"], 5, "{answer}");
    assert_eq!(answer["values"], 1, "{answer}");
    assert_eq!(answer["embeddings"], 1, "{answer}");
    let digest = content_digest(&c, "default");
    assert_eq!((digest["atoms"].clone(), digest["vectors"].clone()), (json!(5), json!(1)), "{digest}");
}

#[test]
fn an_import_cut_short_by_a_crash_and_run_again_holds_every_atom_once() {
    let mut c = Cluster::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("graph.ndjson");
    let nodes = 20_000;
    // CRLF line ends, as a file from another system may have.
    std::fs::write(&file, generated(nodes).replace('\n', "\r\n")).unwrap();
    let atoms = nodes + (nodes - 1) + (nodes - 1) / 10;

    let mut first = Command::new(bin())
        .args(["import", file.to_str().unwrap(), "--space", "a", "--merge", "revision", "--addr", &c.addr(1)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Part way through, the node dies.
    crate::harness::wait_until("part of the import to apply", std::time::Duration::from_secs(60), || {
        let spaces = c.get(1, "/v1/spaces?consistency=stale").body;
        let held = spaces["spaces"].as_array()?.iter().find(|s| s["name"] == "a")?["nodes"].as_u64()?;
        (held > 2_000).then_some(())
    });
    c.kill9(1);
    assert!(!first.wait().unwrap().success(), "the import did not notice the crash");
    c.restart(1);
    crate::harness::wait_until("the node to lead again", std::time::Duration::from_secs(30), || {
        (c.status(1)["role"] == "leader").then_some(())
    });

    let again = import(&c, &file, "a", &["--merge", "revision"]);
    assert_eq!(again["error_count"], 0, "{again}");
    let resumed = content_digest(&c, "a");
    assert_eq!(resumed["atoms"].as_u64().unwrap() as usize, atoms);
    // Against the same file imported once, uninterrupted: no atom twice, no evidence twice.
    import(&c, &file, "b", &["--merge", "revision"]);
    assert_eq!(resumed["content_digest"], content_digest(&c, "b")["content_digest"]);
}

#[test]
fn atomese_goes_in_and_out_with_the_same_content() {
    let c = Cluster::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("animals.scm");
    std::fs::write(
        &file,
        r#"; A small taxonomy in Atomese.
(ConceptNode "animal")
(InheritanceLink (stv 0.95 0.9)
   (ConceptNode "cat" (stv 0.8 0.5))
   (ConceptNode "animal"))
(EvaluationLink (stv 0.7 0.6)
   (PredicateNode "eats")
   (ListLink (ConceptNode "cat") (ConceptNode "mouse")))
(ConceptNode 42)
(SimilarityLink (ConceptNode "cat") (ConceptNode "dog \"rex\""))
"#,
    )
    .unwrap();
    let answer = import(&c, &file, "x", &[]);
    assert_eq!(answer["format"], "atomese", "{answer}");
    let lines: Vec<u64> =
        answer["errors"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, vec![9], "{answer}");
    // animal, cat, InheritanceLink, eats, mouse, ListLink, EvaluationLink, dog, SimilarityLink.
    let x = content_digest(&c, "x");
    assert_eq!(x["atoms"], 9, "{x}");

    let out = dir.path().join("x.scm");
    let end = cli(&c, &["export", "--space", "x", "--out", out.to_str().unwrap()]);
    assert_eq!(end["atoms"], 9, "{end}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains(r#"(ConceptNode "cat" (stv 0.8 0.5))"#), "{text}");
    let back = import(&c, &out, "y", &[]);
    assert_eq!(back["error_count"], 0, "{back}");
    assert_eq!(content_digest(&c, "y")["content_digest"], x["content_digest"], "{text}");
}
