//! Cuttable peer links for cluster tests: one loopback TCP forwarder per directed link i -> j
//! (node i dials it through `[cluster.peer_addr_override]`). Cutting a link drops its open
//! connections and refuses new ones until it is healed, so a test can isolate a node.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One directed link.
struct Link {
    cut: Arc<AtomicBool>,
    /// Bumped on every cut, so connections opened before it stop forwarding.
    generation: Arc<AtomicU64>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

/// Every directed link of a cluster, by (from, to).
pub struct Links {
    links: BTreeMap<(u64, u64), (SocketAddr, Link)>,
}

impl Links {
    /// Forwarders for every ordered pair of `nodes` (id -> address).
    pub fn new(nodes: &BTreeMap<u64, String>) -> Links {
        let mut links = BTreeMap::new();
        for from in nodes.keys() {
            for (to, target) in nodes.iter().filter(|(to, _)| *to != from) {
                let target: SocketAddr = target.parse().expect("node address");
                links.insert((*from, *to), start(target));
            }
        }
        Links { links }
    }

    /// `COGRAFT__CLUSTER__PEER_ADDR_OVERRIDE__j` settings for node `from`.
    pub fn env_for(&self, from: u64) -> Vec<(String, String)> {
        self.links
            .iter()
            .filter(|((f, _), _)| *f == from)
            .map(|((_, to), (addr, _))| {
                (format!("COGRAFT__CLUSTER__PEER_ADDR_OVERRIDE__{to}"), addr.to_string())
            })
            .collect()
    }

    /// Cuts (or heals) both directions of every link between `node` and the others.
    pub fn isolate(&self, node: u64, cut: bool) {
        for ((from, to), (_, link)) in &self.links {
            if *from == node || *to == node {
                link.cut.store(cut, Ordering::SeqCst);
                if cut {
                    link.generation.fetch_add(1, Ordering::SeqCst);
                    for stream in link.open.lock().unwrap().drain(..) {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                }
            }
        }
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        for (addr, link) in self.links.values() {
            link.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect_timeout(addr, Duration::from_millis(100));
            for stream in link.open.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

fn start(target: SocketAddr) -> (SocketAddr, Link) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a link");
    let addr = listener.local_addr().unwrap();
    let link =
        Link { cut: Arc::default(), generation: Arc::default(), open: Arc::default(), stop: Arc::default() };
    let (cut, generation, open, stop) =
        (link.cut.clone(), link.generation.clone(), link.open.clone(), link.stop.clone());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let Ok(client) = client else { continue };
            if cut.load(Ordering::SeqCst) {
                drop(client);
                continue;
            }
            let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else { continue };
            let born = generation.load(Ordering::SeqCst);
            for (from, to) in [(&client, &server), (&server, &client)] {
                let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                let generation = generation.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0
                            || generation.load(Ordering::SeqCst) != born
                            || to.write_all(&buf[..n]).is_err()
                        {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                });
            }
            let mut open = open.lock().unwrap();
            open.push(client);
            open.push(server);
        }
    });
    (addr, link)
}
