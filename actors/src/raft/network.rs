//! The peer client: one pooled `reqwest` client per peer, used only from the Raft Arbiter's
//! runtime (a pool shared across runtimes breaks). It carries openraft's RPCs and cograft's
//! own follower -> leader calls (forwarded writes, read index), msgpack both ways, with the
//! cluster secret header. `peer_addr_override` redirects a peer's address (e.g. to a proxy).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{NetworkError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::path;
use crate::typ::*;
use crate::TypeConfig;

/// Header carrying the cluster secret on every `/raft` request.
pub const SECRET_HEADER: &str = "x-cograft-cluster-secret";
/// Header carrying the sender's data format on every `/raft` request: nodes of different
/// formats refuse each other instead of replicating entries one of them cannot read.
pub const FORMAT_HEADER: &str = "x-cograft-format";
/// Header carrying how long the caller waits for the answer, in milliseconds: the peer stops
/// waiting for the answer of a call nobody waits for any more and lets go of its connection.
pub const DEADLINE_HEADER: &str = "x-cograft-deadline-ms";

/// Why a peer call failed before the peer could answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("network: {0}")]
    Network(String),
    /// The peer answered with an HTTP error: it read the request and did not act on it.
    #[error("refused: HTTP {status}: {detail}")]
    Refused { status: u16, detail: String },
}

impl PeerError {
    /// Whether the peer may have acted on the request (it reached the peer and no answer
    /// says otherwise).
    pub fn may_have_arrived(&self) -> bool {
        match self {
            PeerError::Unreachable(_) => false,
            PeerError::Network(_) => true,
            PeerError::Refused { status, .. } => *status >= 500,
        }
    }
}

/// Clients to every peer, shared by openraft's replication tasks and the Raft actor.
#[derive(Clone)]
pub struct PeerNetwork {
    secret: Arc<str>,
    overrides: Arc<BTreeMap<NodeId, String>>,
    connect_timeout: Duration,
    clients: Arc<Mutex<HashMap<NodeId, reqwest::Client>>>,
}

impl PeerNetwork {
    pub fn new(secret: String, overrides: BTreeMap<NodeId, String>, connect_timeout: Duration) -> Self {
        PeerNetwork {
            secret: secret.into(),
            overrides: Arc::new(overrides),
            connect_timeout,
            clients: Arc::default(),
        }
    }

    fn client(&self, target: NodeId) -> Result<reqwest::Client, PeerError> {
        let mut clients = self.clients.lock().expect("peer client map lock");
        if let Some(c) = clients.get(&target) {
            return Ok(c.clone());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .pool_max_idle_per_host(8)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| PeerError::Network(e.to_string()))?;
        clients.insert(target, client.clone());
        Ok(client)
    }

    /// The address to dial for `target`: its override, else its advertised address.
    pub fn address(&self, target: NodeId, node: &Node) -> String {
        self.overrides.get(&target).cloned().unwrap_or_else(|| node.addr.clone())
    }

    /// POSTs `body` as msgpack to `path` on the peer and decodes its msgpack answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: NodeId,
        node: &Node,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let url = format!("http://{}{}", self.address(target, node), path);
        let bytes = rmp_serde::to_vec_named(body).map_err(|e| PeerError::Network(e.to_string()))?;
        let response = self
            .client(target)?
            .post(&url)
            .header(SECRET_HEADER, &*self.secret)
            .header(FORMAT_HEADER, crate::storage::manifest::FORMAT.to_string())
            .header(DEADLINE_HEADER, timeout.as_millis().to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/msgpack")
            .timeout(timeout)
            .body(bytes)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    PeerError::Unreachable(format!("{url}: {}", with_causes(&e)))
                } else {
                    PeerError::Network(format!("{url}: {}", with_causes(&e)))
                }
            })?;
        let status = response.status();
        let body =
            response.bytes().await.map_err(|e| PeerError::Network(format!("{url}: {}", with_causes(&e))))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            return Err(PeerError::Refused { status: status.as_u16(), detail: format!("{url}: {text}") });
        }
        rmp_serde::from_slice(&body).map_err(|e| PeerError::Network(format!("{url}: bad answer: {e}")))
    }
}

/// reqwest's message and every cause under it ("error sending request" alone does not say
/// whether the peer closed the connection, timed out or refused it).
fn with_causes(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConnection {
        PeerConnection { network: self.clone(), target, node: node.clone() }
    }
}

/// openraft's handle on one peer.
pub struct PeerConnection {
    network: PeerNetwork,
    target: NodeId,
    node: Node,
}

impl PeerConnection {
    async fn rpc<Req: Serialize, Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>> {
        let answer: Result<Resp, RaftError<E>> = self
            .network
            .call(self.target, &self.node, path, request, option.hard_ttl())
            .await
            .map_err(|e| match e {
                PeerError::Unreachable(_) => RpcError::Unreachable(Unreachable::new(&e)),
                PeerError::Network(_) | PeerError::Refused { .. } => RpcError::Network(NetworkError::new(&e)),
            })?;
        answer
            .map_err(|e| RpcError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RpcError> {
        self.rpc(path::APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RpcError<InstallSnapshotError>> {
        self.rpc(path::SNAPSHOT, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest, option: RPCOption) -> Result<VoteResponse, RpcError> {
        self.rpc(path::VOTE, &rpc, &option).await
    }
}
