//! Settings: embedded defaults (`configs/default.toml`) -> a TOML file -> `COGRAFT__SECTION__KEY`
//! environment variables -> command-line overrides, then `validate()` rejects anything invalid
//! with a message naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use cograft_actors::model::Merge;
use cograft_actors::raft::RaftSettings;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub const DEFAULT_TOML: &str = include_str!("../configs/default.toml");

/// The shortest attention interval accepted (each step is a log entry).
const MIN_ATTENTION_INTERVAL_MS: u64 = 50;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub node: NodeSettings,
    pub cluster: ClusterSettings,
    pub raft: RaftConfig,
    pub api: ApiSettings,
    pub storage: StorageSettings,
    pub spreading: SpreadingSettings,
    pub similarity: SimilaritySettings,
    pub attention: AttentionSettings,
    pub health: HealthSettings,
    pub inference: cograft_actors::inference::InferenceConfig,
    pub log: LogSettings,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    pub id: u64,
    pub listen: String,
    pub advertise: String,
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    pub name: String,
    pub secret: String,
    #[serde(default)]
    pub peer_addr_override: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftConfig {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_after_entries: u64,
    pub keep_entries_after_snapshot: u64,
    pub tick_interval_ms: u64,
    pub write_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub max_in_flight: usize,
    pub max_queued_writes: usize,
    pub install_snapshot_timeout_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub body_limit_bytes: usize,
    pub max_entry_bytes: usize,
    pub default_merge: Merge,
    pub workers: usize,
    pub ready_max_lag: u64,
    pub max_list: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub read_threads: usize,
    pub cache_capacity_bytes: u64,
    pub observations_per_subject: u64,
    pub observation_max_age_ms: u64,
    pub maintenance_budget: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadingSettings {
    pub workers: usize,
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
    pub breaker_half_open_calls: u32,
    pub breaker_successes: u32,
    pub probe_max_ms: u64,
    pub index_stall_ms: u64,
}

/// `[similarity]`: nearest-neighbour searches over stored vectors (`POST /v1/similar`), and
/// the leader's embedding backfill.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimilaritySettings {
    pub workers: usize,
    pub product_threads: usize,
    pub max_top_k: usize,
    pub max_queries: usize,
    pub backfill_batch: usize,
    pub backfill_interval_ms: u64,
    /// Memory one structural embedding build may hold (MiB); a bigger one is refused.
    pub structural_max_memory_mb: usize,
    /// Longest a clustering's rounds run (ms from the request's arrival), and its default.
    pub cluster_deadline_ms: u64,
}

/// `[attention]`: the ECAN step the leader proposes (its numbers travel inside the command).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionSettings {
    pub interval_ms: u64,
    pub budget: u64,
    pub diffusion: f64,
    pub sti_rent: f64,
    pub lti_rent: f64,
    pub lti_wage: f64,
    pub focus_boundary: f64,
    pub floor: f64,
    pub forget_below: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    pub interval_ms: u64,
    pub check_timeout_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: String,
    pub filter: String,
}

/// Command-line values that override the file and environment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Settings {
    /// Loads defaults -> `file` -> environment -> `overrides`, and validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Settings> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment
            .merge(Env::prefixed("COGRAFT__").split("__"))
            .merge(Serialized::default("node", overrides));
        let settings: Settings = figment.extract().map_err(|e| {
            let key = e.path.join(".");
            anyhow::anyhow!(
                "invalid configuration{}: {e}",
                if key.is_empty() { String::new() } else { format!(" at `{key}`") }
            )
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.node.id == 0 {
            bail!("node.id must be a positive integer");
        }
        self.node
            .listen
            .parse::<SocketAddr>()
            .with_context(|| format!("node.listen {:?} is not HOST:PORT", self.node.listen))?;
        if !self.node.advertise.is_empty() && !self.node.advertise.contains(':') {
            bail!("node.advertise {:?} must be HOST:PORT", self.node.advertise);
        }
        if self.node.data_dir.as_os_str().is_empty() {
            bail!("node.data_dir must not be empty");
        }
        self.peer_overrides()?;
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_ms {
            bail!(
                "raft.election_timeout_min_ms ({}) must exceed raft.heartbeat_ms ({}) and both be positive",
                r.election_timeout_min_ms,
                r.heartbeat_ms
            );
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            bail!(
                "raft.election_timeout_max_ms ({}) must exceed raft.election_timeout_min_ms ({})",
                r.election_timeout_max_ms,
                r.election_timeout_min_ms
            );
        }
        for (key, v) in [
            ("raft.snapshot_after_entries", r.snapshot_after_entries),
            ("raft.tick_interval_ms", r.tick_interval_ms),
            ("raft.write_timeout_ms", r.write_timeout_ms),
            ("raft.read_timeout_ms", r.read_timeout_ms),
            ("raft.connect_timeout_ms", r.connect_timeout_ms),
            ("raft.max_in_flight", r.max_in_flight as u64),
            ("raft.max_queued_writes", r.max_queued_writes as u64),
            ("raft.install_snapshot_timeout_ms", r.install_snapshot_timeout_ms),
        ] {
            if v == 0 {
                bail!("{key} must be positive");
            }
        }
        if self.api.max_entry_bytes < 4096 || self.api.max_entry_bytes > 100 * 1024 {
            bail!(
                "api.max_entry_bytes must be in 4096..=102400: sled writes larger values to blob files it \
                 never syncs, and smaller entries hold too little of an import"
            );
        }
        if self.api.body_limit_bytes == 0 || self.api.workers == 0 || self.api.max_list == 0 {
            bail!("api.body_limit_bytes, api.workers and api.max_list must be positive");
        }
        if self.storage.read_threads == 0 {
            bail!("storage.read_threads must be positive");
        }
        if self.storage.cache_capacity_bytes < 1 << 20 {
            bail!("storage.cache_capacity_bytes must be at least 1048576 (1 MiB)");
        }
        if self.storage.maintenance_budget == 0 {
            bail!("storage.maintenance_budget must be positive: deleted spaces and retention need it");
        }
        let sp = &self.spreading;
        for (key, v) in [
            ("spreading.workers", sp.workers as u64),
            ("spreading.breaker_failures", u64::from(sp.breaker_failures)),
            ("spreading.breaker_open_ms", sp.breaker_open_ms),
            ("spreading.breaker_half_open_calls", u64::from(sp.breaker_half_open_calls)),
            ("spreading.breaker_successes", u64::from(sp.breaker_successes)),
            ("spreading.probe_max_ms", sp.probe_max_ms),
            ("spreading.index_stall_ms", sp.index_stall_ms),
            ("similarity.workers", self.similarity.workers as u64),
            ("similarity.product_threads", self.similarity.product_threads as u64),
            ("similarity.max_top_k", self.similarity.max_top_k as u64),
            ("similarity.max_queries", self.similarity.max_queries as u64),
            ("similarity.backfill_batch", self.similarity.backfill_batch as u64),
            ("similarity.backfill_interval_ms", self.similarity.backfill_interval_ms),
            ("similarity.structural_max_memory_mb", self.similarity.structural_max_memory_mb as u64),
            ("similarity.cluster_deadline_ms", self.similarity.cluster_deadline_ms),
            ("health.interval_ms", self.health.interval_ms),
            ("health.check_timeout_ms", self.health.check_timeout_ms),
        ] {
            if v == 0 {
                bail!("{key} must be positive");
            }
        }
        self.attention_step().validate().map_err(|e| anyhow::anyhow!("attention.{e}"))?;
        if self.attention.interval_ms != 0 && self.attention.interval_ms < MIN_ATTENTION_INTERVAL_MS {
            bail!(
                "attention.interval_ms must be 0 (no steps) or at least {MIN_ATTENTION_INTERVAL_MS}: \
                 every step is a Raft entry"
            );
        }
        if !self.attention.forget_below.is_finite() {
            bail!("attention.forget_below must be a finite number");
        }
        self.inference.validate().map_err(|e| anyhow::anyhow!(e))?;
        if !matches!(self.log.format.as_str(), "pretty" | "json") {
            bail!("log.format must be \"pretty\" or \"json\", got {:?}", self.log.format);
        }
        Ok(())
    }

    /// The `[cluster.peer_addr_override]` table with parsed node ids.
    pub fn peer_overrides(&self) -> anyhow::Result<BTreeMap<u64, String>> {
        self.cluster
            .peer_addr_override
            .iter()
            .map(|(k, v)| {
                let id = k
                    .parse::<u64>()
                    .with_context(|| format!("cluster.peer_addr_override key {k:?} is not a node id"))?;
                if !v.contains(':') {
                    bail!("cluster.peer_addr_override.{k} = {v:?} must be HOST:PORT");
                }
                Ok((id, v.clone()))
            })
            .collect()
    }

    /// The address peers and clients dial.
    pub fn advertise(&self) -> String {
        if self.node.advertise.is_empty() {
            self.node.listen.clone()
        } else {
            self.node.advertise.clone()
        }
    }

    pub fn raft_settings(&self) -> RaftSettings {
        let r = &self.raft;
        RaftSettings {
            node_id: self.node.id,
            cluster_name: self.cluster.name.clone(),
            heartbeat_ms: r.heartbeat_ms,
            election_timeout_min_ms: r.election_timeout_min_ms,
            election_timeout_max_ms: r.election_timeout_max_ms,
            snapshot_after_entries: r.snapshot_after_entries,
            keep_entries_after_snapshot: r.keep_entries_after_snapshot,
            tick_interval: Duration::from_millis(r.tick_interval_ms),
            write_timeout: Duration::from_millis(r.write_timeout_ms),
            read_timeout: Duration::from_millis(r.read_timeout_ms),
            max_in_flight: r.max_in_flight,
            max_entry_bytes: self.api.max_entry_bytes,
            max_queued_writes: r.max_queued_writes,
            install_snapshot_timeout_ms: r.install_snapshot_timeout_ms,
            maintenance: cograft_actors::command::Maintenance {
                observations_per_subject: self.storage.observations_per_subject,
                observation_max_age_ms: self.storage.observation_max_age_ms,
                budget: self.storage.maintenance_budget,
            },
        }
    }

    pub fn spreading_breaker(&self) -> cograft_actors::resilience::BreakerConfig {
        let sp = &self.spreading;
        cograft_actors::resilience::BreakerConfig {
            failure_threshold: sp.breaker_failures,
            open_for: Duration::from_millis(sp.breaker_open_ms),
            half_open_calls: sp.breaker_half_open_calls,
            success_threshold: sp.breaker_successes,
        }
    }

    pub fn spreading_probe(&self) -> cograft_actors::spreading::probe::ProbeLimits {
        cograft_actors::spreading::probe::ProbeLimits {
            probe_max: Duration::from_millis(self.spreading.probe_max_ms),
            index_stall: Duration::from_millis(self.spreading.index_stall_ms),
        }
    }

    /// The ECAN step the leader proposes every `attention.interval_ms`.
    pub fn attention_step(&self) -> cograft_actors::command::AttentionStep {
        let a = &self.attention;
        cograft_actors::command::AttentionStep {
            budget: a.budget,
            diffusion: a.diffusion,
            sti_rent: a.sti_rent,
            lti_rent: a.lti_rent,
            lti_wage: a.lti_wage,
            focus_boundary: a.focus_boundary,
            floor: a.floor,
        }
    }

    pub fn storage_options(&self) -> cograft_actors::storage::StorageOptions {
        cograft_actors::storage::StorageOptions { cache_capacity_bytes: self.storage.cache_capacity_bytes }
    }

    /// The settings as TOML, with the cluster secret redacted unless `with_secret`.
    pub fn to_toml(&self, with_secret: bool) -> String {
        let mut copy = self.clone();
        if !with_secret && !copy.cluster.secret.is_empty() {
            copy.cluster.secret = "<redacted>".into();
        }
        toml::to_string_pretty(&copy).expect("settings serialise to TOML")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        let s = Settings::load(None, &Overrides::default()).unwrap();
        assert_eq!(s.raft.heartbeat_ms, 100);
        assert_eq!((s.raft.election_timeout_min_ms, s.raft.election_timeout_max_ms), (250, 500));
    }

    #[test]
    fn the_attention_defaults_are_the_steps_defaults() {
        // Focus reads use AttentionStep::default() until the first step has run.
        let s = Settings::load(None, &Overrides::default()).unwrap();
        assert_eq!(s.attention_step(), cograft_actors::command::AttentionStep::default());
    }

    #[test]
    fn invalid_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[raft]\nelection_timeout_max_ms = 100\n").unwrap();
        let err = Settings::load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("raft.election_timeout_max_ms"), "{err}");
        std::fs::write(&file, "[attention]\nsti_rent = 1.5\n").unwrap();
        let err = Settings::load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("attention.sti_rent"), "{err}");
        std::fs::write(&file, "[raft]\nheartbeat = 1\n").unwrap();
        let err = Settings::load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("heartbeat"), "{err}");
    }

    #[test]
    fn written_settings_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Settings::load(None, &Overrides::default()).unwrap();
        s.cluster.secret = "s3cret".into();
        s.cluster.peer_addr_override.insert("2".into(), "127.0.0.1:9".into());
        let file = dir.path().join("node.toml");
        std::fs::write(&file, s.to_toml(true)).unwrap();
        let back = Settings::load(Some(&file), &Overrides { id: Some(3), ..Default::default() }).unwrap();
        assert_eq!(back.cluster.secret, "s3cret");
        assert_eq!(back.node.id, 3);
        assert_eq!(back.peer_overrides().unwrap()[&2], "127.0.0.1:9");
    }
}
