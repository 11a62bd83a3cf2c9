//! Memory spaces over HTTP: the space comes from `?space=` or `X-Cograft-Space` (never both,
//! differently), uniqueness and reads stay inside a space, lists page with cursors, and a
//! deleted space disappears at once and is emptied by the leader's ticks on every replica.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{wait_until, Cluster, Reply};

fn in_space(c: &Cluster, node: u64, method: Method, path: &str, space: &str, body: Option<Value>) -> Reply {
    let sep = if path.contains('?') { '&' } else { '?' };
    c.call(node, method, &format!("{path}{sep}space={space}"), body, None)
}

#[test]
fn spaces_separate_memories_and_lists_page_with_cursors() {
    // A small housekeeping budget, so the deleted space below takes several ticks to empty and
    // the write sent meanwhile meets it still deleting (with the default one tick emptied it,
    // and the write could land after, in a new space of the same name).
    let c = Cluster::start(
        3,
        &[("COGRAFT__RAFT__TICK_INTERVAL_MS", "200"), ("COGRAFT__STORAGE__MAINTENANCE_BUDGET", "10")],
    );
    let cat = json!({ "type": "ConceptNode", "name": "cat" });
    let alice = in_space(&c, 1, Method::POST, "/v1/atoms", "alice", Some(cat.clone()));
    assert_eq!(alice.status, 201, "{alice:?}");
    assert_eq!(alice.body["space"], "alice");
    // The header names a space as well; the same (type, name) there is another atom.
    let bob = c
        .http
        .post(format!("http://{}/v1/atoms", c.addr(2)))
        .header("X-Cograft-Space", "bob")
        .json(&cat)
        .send()
        .unwrap();
    assert_eq!(bob.status().as_u16(), 201);
    let bob: Value = bob.json().unwrap();
    assert_ne!(bob["id"], alice.body["id"]);
    // Both, differently: 400, naming both.
    let both = c
        .http
        .post(format!("http://{}/v1/atoms?space=alice", c.addr(1)))
        .header("X-Cograft-Space", "bob")
        .json(&cat)
        .send()
        .unwrap();
    assert_eq!(both.status().as_u16(), 400);
    assert!(both.text().unwrap().contains("named twice"));
    assert_eq!(in_space(&c, 1, Method::GET, "/v1/atoms/1", "not a name", None).status, 400);

    // An atom of another space is not found; links stay inside a space.
    let alice_id = alice.body["id"].as_u64().unwrap();
    assert_eq!(in_space(&c, 3, Method::GET, &format!("/v1/atoms/{alice_id}"), "bob", None).status, 404);
    assert_eq!(c.get(3, &format!("/v1/atoms/{alice_id}?space=alice")).status, 200);
    let cross = in_space(
        &c,
        1,
        Method::POST,
        "/v1/links",
        "alice",
        Some(json!({ "type": "L", "outgoing": [alice_id, bob["id"]] })),
    );
    assert_eq!(cross.status, 404, "{cross:?}");

    // Lists page with an opaque cursor.
    let ops: Vec<Value> = (0..25)
        .map(|i| json!({ "op": "add_node", "type": "ConceptNode", "name": format!("p{i}") }))
        .collect();
    let mut hub_ops = ops.clone();
    hub_ops.extend(
        (0..24).map(
            |i| json!({ "op": "add_link", "type": "ListLink", "outgoing": ["$0", format!("${}", i + 1)] }),
        ),
    );
    assert_eq!(
        in_space(&c, 2, Method::POST, "/v1/batch", "pages", Some(json!({ "ops": hub_ops }))).status,
        200
    );
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let cursor = after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
        let r = in_space(
            &c,
            3,
            Method::GET,
            &format!("/v1/atoms?type=ConceptNode&limit=10{cursor}"),
            "pages",
            None,
        );
        assert_eq!(r.status, 200, "{r:?}");
        names.extend(
            r.body["atoms"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_string()),
        );
        pages += 1;
        match r.body["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!((pages, names.len()), (3, 25), "{names:?}");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 25, "a page repeated an atom");
    let hub =
        c.get(1, "/v1/atoms?type=ConceptNode&name=p0&space=pages").body["atoms"][0]["id"].as_u64().unwrap();
    let first = in_space(&c, 1, Method::GET, &format!("/v1/atoms/{hub}/incoming?limit=20"), "pages", None);
    assert_eq!(first.body["incoming"].as_array().unwrap().len(), 20);
    let rest = in_space(
        &c,
        1,
        Method::GET,
        &format!("/v1/atoms/{hub}/incoming?limit=20&after={}", first.body["next"].as_str().unwrap()),
        "pages",
        None,
    );
    assert_eq!(rest.body["incoming"].as_array().unwrap().len(), 4);
    assert!(rest.body["next"].is_null());
    let bad = in_space(&c, 1, Method::GET, "/v1/atoms?type=ConceptNode&after=zz!", "pages", None);
    assert_eq!(bad.status, 400, "{bad:?}");

    // Observations page newest first.
    for i in 0..5 {
        let o = json!({ "subject": "job", "success": i % 2 == 0, "duration_ms": 10 * i });
        assert_eq!(in_space(&c, 1, Method::POST, "/v1/observations", "alice", Some(o)).status, 201);
    }
    let newest = in_space(&c, 2, Method::GET, "/v1/observations?subject=job&limit=3", "alice", None);
    let durations: Vec<u64> = newest.body["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["duration_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(durations, vec![40, 30, 20]);
    let older = in_space(
        &c,
        2,
        Method::GET,
        &format!("/v1/observations?subject=job&limit=3&after={}", newest.body["next"].as_str().unwrap()),
        "alice",
        None,
    );
    assert_eq!(older.body["observations"].as_array().unwrap().len(), 2);
    let stats = in_space(&c, 3, Method::GET, "/v1/observations/stats?subject=job", "alice", None);
    assert_eq!((stats.body["count"].as_u64(), stats.body["successes"].as_u64()), (Some(5), Some(3)));

    // Every space with its counts.
    let spaces = c.get(2, "/v1/spaces").body;
    let listed: Vec<(String, u64)> = spaces["spaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["atoms"].as_u64().unwrap()))
        .collect();
    assert_eq!(listed, vec![("alice".into(), 1), ("bob".into(), 1), ("pages".into(), 49)]);

    // Deleting a space: gone from reads at once, writes refused, emptied by the ticks.
    let deleting = c.call(3, Method::DELETE, "/v1/spaces/pages", None, None);
    assert_eq!(deleting.status, 202, "{deleting:?}");
    assert_eq!(in_space(&c, 1, Method::GET, &format!("/v1/atoms/{hub}"), "pages", None).status, 404);
    let refused =
        in_space(&c, 1, Method::POST, "/v1/atoms", "pages", Some(json!({ "type": "T", "name": "late" })));
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (409, Some("space_deleting")),
        "{refused:?}"
    );
    // Nor has it content to digest or export: not found, as every read of it, instead of a 500
    // from walking a space whose atoms are going away a budget at a time.
    for path in ["/admin/digest?content=true", "/v1/export"] {
        let gone = in_space(&c, 2, Method::GET, path, "pages", None);
        assert_eq!((gone.status, gone.body["error"].as_str()), (404, Some("not_found")), "{path}: {gone:?}");
    }
    wait_until("the deleted space to be emptied", Duration::from_secs(30), || {
        let names: Vec<String> = c.get(1, "/v1/spaces").body["spaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect();
        (!names.contains(&"pages".to_string())).then_some(())
    });
    assert_eq!(c.call(3, Method::DELETE, "/v1/spaces/pages", None, None).status, 404, "deleting it again");
    c.converged(&[1, 2, 3]);
}
