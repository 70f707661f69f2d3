//! Configuration: one typed struct, layered embedded default → file → environment.
//!
//! The top-level `config.yaml` is compiled into the binary and is the first
//! layer, so `icarus serve` runs with no file at all. Every struct denies unknown
//! keys, and [`Config::validate`] checks values, so a typo or a bad value stops
//! start-up with a message that names the key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::TimeDelta;
use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use serde::{Deserialize, Serialize};

use crate::job::TEST_CODE_CEILING_BYTES;
use crate::job::plan::{ApprovalDeadline, Deadlines, Retries, TimeoutOutcome};
use icarus_core::egress::{AllowList, Destination};

mod queue;
pub mod replica;
pub use queue::{PriorityCaps, QueueConfig, RetentionConfig};

/// How long after a checker's exit its audit report may still arrive.
/// Agents report before they exit, so this only covers a report whose
/// answer the agent gave up waiting for while it was being stored.
const REPORT_GRACE_SECONDS: i64 = 5;

/// The default configuration, the repository's `config.yaml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub orchestrator: OrchestratorConfig,
    pub auth: AuthConfig,
    pub sentinel: SentinelConfig,
    pub agents: AgentsConfig,
    pub workspace: WorkspaceConfig,
    pub publish: PublishConfig,
    pub notifications: NotificationsConfig,
    pub kubernetes: KubernetesConfig,
    pub logging: LoggingConfig,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub tracing: TracingConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub approval: ApprovalConfig,
}

/// How many people must approve a job, and how long they have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// Distinct approvals a job needs unless it asks for more.
    #[serde(default = "default_required_approvals")]
    pub required: u32,
    /// The most approvals a job may ask for (`required_approvals`).
    #[serde(default = "default_max_required_approvals")]
    pub max_required: u32,
    /// How long a job may await approval; 0: for ever.
    #[serde(default)]
    pub timeout_seconds: u64,
    /// How a job ends when nobody settled it within `timeout_seconds`.
    #[serde(default)]
    pub on_timeout: OnApprovalTimeout,
    /// The share of `timeout_seconds` after which a reminder notification
    /// goes out (once); 0: none.
    #[serde(default = "default_reminder_fraction")]
    pub reminder_fraction: f64,
}

/// `approval.on_timeout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnApprovalTimeout {
    Rejected,
    #[default]
    Expired,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            required: default_required_approvals(),
            max_required: default_max_required_approvals(),
            timeout_seconds: 0,
            on_timeout: OnApprovalTimeout::default(),
            reminder_fraction: default_reminder_fraction(),
        }
    }
}

fn default_reminder_fraction() -> f64 {
    0.5
}

fn default_required_approvals() -> u32 {
    1
}

fn default_max_required_approvals() -> u32 {
    5
}

/// The longest approval deadline: ten years (dates past it cannot be reckoned with).
pub const MAX_APPROVAL_TIMEOUT_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// The most approvals any configuration may ask a job for.
pub const MAX_REQUIRED_APPROVALS: u32 = 100;

impl ApprovalConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=MAX_REQUIRED_APPROVALS).contains(&self.required) {
            problems.push(format!(
                "approval.required must be between 1 and {MAX_REQUIRED_APPROVALS}, not {}",
                self.required
            ));
        }
        if self.max_required < self.required || self.max_required > MAX_REQUIRED_APPROVALS {
            problems.push(format!(
                "approval.max_required must be between approval.required ({}) and {MAX_REQUIRED_APPROVALS}, not {}",
                self.required, self.max_required
            ));
        }
        if !(0.0..1.0).contains(&self.reminder_fraction) {
            problems.push(format!(
                "approval.reminder_fraction must be at least 0 and below 1, not {}",
                self.reminder_fraction
            ));
        }
        if self.timeout_seconds > MAX_APPROVAL_TIMEOUT_SECONDS {
            problems.push(format!(
                "approval.timeout_seconds must be at most {MAX_APPROVAL_TIMEOUT_SECONDS} (ten years; 0 waits for ever), not {}",
                self.timeout_seconds
            ));
        }
        problems
    }

    /// The planner's approval deadline; none while `timeout_seconds` is 0.
    pub fn deadline(&self) -> Option<ApprovalDeadline> {
        if self.timeout_seconds == 0 {
            return None;
        }
        let timeout = seconds(self.timeout_seconds);
        // Whole milliseconds of the timeout's share, so the config's
        // fraction never needs floating point in the planner.
        let reminder_after = (self.reminder_fraction > 0.0).then(|| {
            let millis = timeout.num_milliseconds() as f64 * self.reminder_fraction;
            TimeDelta::milliseconds(millis as i64)
        });
        Some(ApprovalDeadline {
            timeout,
            outcome: match self.on_timeout {
                OnApprovalTimeout::Rejected => TimeoutOutcome::Rejected,
                OnApprovalTimeout::Expired => TimeoutOutcome::Expired,
            },
            reminder_after,
        })
    }

    /// The approvals a job needs when it asks for `asked` (none: the
    /// default): at least the default, at most `max_required`.
    pub fn required_for(&self, asked: Option<u32>) -> Result<u32, String> {
        let Some(asked) = asked else {
            return Ok(self.required);
        };
        if asked < self.required || asked > self.max_required {
            return Err(format!(
                "required_approvals must be between {} (approval.required) and {} (approval.max_required), not {asked}",
                self.required, self.max_required
            ));
        }
        Ok(asked)
    }

    /// As [`required_for`](Self::required_for), for a request that cannot
    /// be refused (a resource already applied): what it asks for, raised
    /// to `required` and lowered to `max_required`.
    pub fn required_within(&self, asked: Option<u32>) -> u32 {
        asked
            .unwrap_or(self.required)
            .clamp(self.required, self.max_required.max(self.required))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorConfig {
    pub host: String,
    pub port: u16,
    pub max_concurrent_jobs: u32,
    pub job_timeout_seconds: u64,
    pub resync_interval_seconds: u64,
    pub max_request_bytes: usize,
    /// Browser origins allowed to call the API (CORS); empty: none.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
    /// Host names the API answers to with authentication off, besides
    /// loopback ones and the host of `agents.callback_base_url`; empty: none.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// A connection that has not sent a request's head within this long is
    /// closed (slow clients cannot hold connections open).
    #[serde(default = "default_header_read_timeout_seconds")]
    pub header_read_timeout_seconds: u64,
    /// Connections open at once, per listener; more are closed on arrival.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// WebSocket streams open at once, in total and per caller; more get 429.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
    #[serde(default = "default_max_streams_per_caller")]
    pub max_streams_per_caller: usize,
    /// Replicas: a leader that has not renewed its lease for this long is
    /// replaced (a standby takes over within it after the leader dies).
    #[serde(default = "default_lease_duration_seconds")]
    pub lease_duration_seconds: u64,
    /// Replicas: how often the leader renews its lease, and standbys try it.
    #[serde(default = "default_lease_renew_seconds")]
    pub lease_renew_seconds: u64,
    /// Bind the API's and the agents' listeners with `SO_REUSEPORT`, so
    /// replicas on one host share one port (the kernel spreads connections
    /// among them; when one dies the others get them all).
    #[serde(default)]
    pub reuse_port: bool,
    /// This orchestrator's name among replicas, which its drain is kept
    /// under (see [`Config::replica_name`]); empty: the host name.
    #[serde(default)]
    pub replica_name: String,
}

fn default_lease_duration_seconds() -> u64 {
    8
}

fn default_lease_renew_seconds() -> u64 {
    2
}

fn default_max_streams() -> usize {
    512
}

fn default_max_streams_per_caller() -> usize {
    64
}

fn default_header_read_timeout_seconds() -> u64 {
    10
}

fn default_max_connections() -> usize {
    1024
}

/// Who may call the API, and as what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Off: every caller is an anonymous admin (only allowed on loopback
    /// unless `icarus serve --insecure`).
    pub enabled: bool,
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
    /// A YAML file with more `tokens` entries (a mounted secret, say); empty: none.
    #[serde(default)]
    pub tokens_file: PathBuf,
    /// Jobs one token may submit per minute; more get 429.
    pub spawns_per_minute: u32,
    /// Refuse a decision (approval or rejection) by the job's own
    /// submitter, with 403.
    #[serde(default)]
    pub separation_of_duties: bool,
}

/// One API token, known only by its SHA-256 (`echo -n TOKEN | sha256sum`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it; recorded as the submitter or approver of jobs.
    pub name: String,
    pub role: AccessRole,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
}

/// What an API caller may do. Each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessRole {
    /// Read jobs and their results.
    Viewer,
    /// Also submit jobs and cancel their own.
    Submitter,
    /// Also approve, reject and republish any job.
    Approver,
    /// Also cancel anyone's jobs.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    pub enabled: bool,
    pub yellow_threshold: f64,
    pub red_threshold: f64,
    pub poll_interval_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// Base URL agents call back on; empty means "work it out" (see `server`).
    #[serde(default)]
    pub callback_base_url: String,
    /// Progress reports stored per agent per second; more are refused with 429.
    pub progress_reports_per_second: u32,
    /// The most a job's `test_code` may hold, in bytes of UTF-8: the builder
    /// gets it as one environment variable, which Linux holds to 128 KiB
    /// (at most [`TEST_CODE_CEILING_BYTES`]).
    pub max_test_code_bytes: usize,
    /// The key that signs agents' callback tokens (created on first start);
    /// empty: `.icarus-agent.key` in `workspace.base_path`.
    #[serde(default)]
    pub callback_key_file: PathBuf,
    /// Images a job may name besides the two configured ones; a trailing
    /// `*` matches any rest (`registry.example.com/agents/*`).
    #[serde(default)]
    pub allowed_images: Vec<String>,
    /// `uid:gid` agents run as; empty: the image's own user.
    pub user: String,
    /// Most processes one agent may run.
    pub pids_limit: u32,
    /// Attempts a job's agents get when the infrastructure cuts one short.
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles after, up to a minute.
    pub retry_backoff_seconds: f64,
    /// How often the leader measures each running agent's CPU and memory
    /// through the runtime; 0: never.
    pub usage_interval_seconds: u64,
    /// Local mode: where this host shows the engine's cgroup tree, to read
    /// agents' usage from their cgroup files instead of asking the engine;
    /// empty, or an agent not found there: the engine's stats API.
    #[serde(default)]
    pub usage_cgroup_root: PathBuf,
    /// Where agents may connect to, and how that is enforced.
    #[serde(default)]
    pub egress: EgressConfig,
    /// How agents' output is followed and kept.
    #[serde(default)]
    pub logs: AgentLogsConfig,
    pub builder: AgentConfig,
    pub checker: AgentConfig,
}

/// How far agents reach beyond their network (see the README's egress model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EgressMode {
    /// Agents reach whatever their network does (the behaviour before
    /// egress control; stated, never implied).
    Open,
    /// Agents' network has no route out; the egress proxy lets them reach
    /// the names on their role's `allowed_domains` only.
    AllowList,
    /// Agents' network has no route out and there is no proxy: they reach
    /// the orchestrator's callback and nothing else.
    #[serde(rename = "none")]
    Sealed,
}

impl EgressMode {
    /// Whether agents' network must have no route out.
    pub fn seals_the_network(self) -> bool {
        self != EgressMode::Open
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    pub mode: EgressMode,
    /// Names the proxy resolves to these addresses instead of asking DNS,
    /// like `/etc/hosts` (a package mirror on a private network): the
    /// operator's word, so the addresses are not checked.
    #[serde(default)]
    pub hosts: BTreeMap<String, IpAddr>,
    /// Bytes, both ways together, one job's agents (every role and
    /// attempt) may move through the proxy. (`max_bytes_per_agent` was its
    /// name before it counted per job, and is still read.)
    #[serde(alias = "max_bytes_per_agent")]
    pub max_bytes_per_job: u64,
    /// Connections one job's agents may hold open through the proxy at once.
    #[serde(alias = "max_connections_per_agent")]
    pub max_connections_per_job: u32,
    /// The proxy's port on the agents' gateway; 0: any free one. Fix it,
    /// with `orchestrator.reuse_port`, when replicas share the work, so
    /// that adopted agents keep reaching a proxy after a takeover.
    #[serde(default)]
    pub proxy_port: u16,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            mode: EgressMode::Open,
            hosts: BTreeMap::new(),
            max_bytes_per_job: 1024 * 1024 * 1024,
            max_connections_per_job: 32,
            proxy_port: 0,
        }
    }
}

/// `agents.logs`: the limits on what one agent's output may cost. Each line
/// is cut at `max_line_bytes`; an agent keeps at most `lines_per_second`
/// lines per second and `max_bytes` in all; what is dropped is summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentLogsConfig {
    /// Follow agents' output while they run (stream it, keep it line by
    /// line); off: it is read once when the agent is removed, as before.
    pub follow: bool,
    pub max_line_bytes: usize,
    /// 0: no rate limit.
    pub lines_per_second: u32,
    pub max_bytes: u64,
    /// WebSocket and `/logs?follow` messages one subscriber may have
    /// waiting; a subscriber that lets more pile up is closed (it resumes
    /// with `since`).
    pub subscriber_buffer: usize,
}

impl Default for AgentLogsConfig {
    fn default() -> Self {
        AgentLogsConfig {
            follow: true,
            max_line_bytes: 4096,
            lines_per_second: 200,
            max_bytes: 8 * 1024 * 1024,
            subscriber_buffer: 1024,
        }
    }
}

impl AgentLogsConfig {
    pub fn limits(&self) -> crate::logs::LogLimits {
        crate::logs::LogLimits {
            max_line_bytes: self.max_line_bytes.max(1),
            lines_per_second: self.lines_per_second,
            max_bytes: self.max_bytes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub image_name: String,
    pub cpu_limit: f64,
    pub memory_limit: u64,
    /// What a Pod requests of a node (Kubernetes mode), at most the limit;
    /// absent: the limit. Lower lets a node run more jobs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<u64>,
    pub timeout_seconds: u64,
    pub network_mode: String,
    /// What this role's agents may reach through the egress proxy:
    /// `name`, `*.name` (any name below it), each with an optional `:port`
    /// (else 80 and 443). Used in `agents.egress.mode: allow-list`.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Volume,
    Bind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    pub base_path: PathBuf,
    pub mount_type: MountType,
    /// Where a job's `project_path` may point (inside the agent's view).
    pub allowed_project_roots: Vec<String>,
    /// Host directories local Git sources may come from; URLs are not limited by it.
    #[serde(default)]
    pub allowed_source_roots: Vec<PathBuf>,
    /// Where each job's Git metadata lives, outside every workspace and
    /// never mounted into an agent; empty: `<base_path>/.icarus-repositories`.
    #[serde(default)]
    pub repositories_path: PathBuf,
    /// A workspace larger than this is not snapshotted: the job fails.
    #[serde(default = "default_snapshot_max_bytes")]
    pub snapshot_max_bytes: u64,
    /// A workspace with more files (and links) than this is not snapshotted.
    #[serde(default = "default_snapshot_max_files")]
    pub snapshot_max_files: u64,
}

fn default_snapshot_max_bytes() -> u64 {
    1024 * 1024 * 1024
}

fn default_snapshot_max_files() -> u64 {
    100_000
}

impl WorkspaceConfig {
    /// The parent of the per-job Git metadata directories.
    pub fn repositories_path(&self) -> PathBuf {
        if self.repositories_path.as_os_str().is_empty() {
            self.base_path.join(".icarus-repositories")
        } else {
            self.repositories_path.clone()
        }
    }
}

/// How an approved change is committed and pushed.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    pub author_name: String,
    pub author_email: String,
    /// The job's branch is this followed by the job id.
    pub branch_prefix: String,
    /// The commit message's first line; `{job_id}` and `{task}` are filled in.
    pub message_template: String,
    /// A token for HTTPS remotes; empty: `GITHUB_TOKEN` from the environment, if set.
    #[serde(default, serialize_with = "redacted")]
    pub token: String,
    /// The hosts the token is sent to, over HTTPS only (`host` or
    /// `host:port`); empty: the forge's host, from `pull_request.api_url`.
    #[serde(default)]
    pub token_hosts: Vec<String>,
    /// Opening a pull request for each published branch.
    #[serde(default)]
    pub pull_request: PullRequestConfig,
}

/// Pull requests on a forge with GitHub's API; off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequestConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The forge's API (GitHub Enterprise: `https://HOST/api/v3`).
    #[serde(default = "default_forge_api_url")]
    pub api_url: String,
    /// `owner/name` on the forge; empty: read from the source's URL.
    #[serde(default)]
    pub repository: String,
    /// The branch to merge into; empty: the source's ref, else `main`.
    #[serde(default)]
    pub base: String,
    /// The repositories pull requests may be opened on: `owner/name` or
    /// `owner/*`. None by default: a submitter's URL never decides alone
    /// where the token opens one.
    #[serde(default)]
    pub allowed_repositories: Vec<String>,
}

impl Default for PullRequestConfig {
    fn default() -> Self {
        PullRequestConfig {
            enabled: false,
            api_url: default_forge_api_url(),
            repository: String::new(),
            base: String::new(),
            allowed_repositories: Vec::new(),
        }
    }
}

fn default_forge_api_url() -> String {
    "https://api.github.com".to_owned()
}

/// `icarus config` shows whether a secret is set, never the secret.
fn redacted<S: serde::Serializer>(secret: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if secret.is_empty() { "" } else { "(set)" })
}

impl PublishConfig {
    /// The configured token, else `GITHUB_TOKEN`.
    pub fn token(&self) -> Option<String> {
        Some(self.token.clone())
            .filter(|t| !t.is_empty())
            .or_else(|| std::env::var("GITHUB_TOKEN").ok())
            .filter(|t| !t.is_empty())
    }

    /// Where the token may go: the configured hosts, else the forge's.
    pub fn token_hosts(&self) -> Vec<String> {
        if !self.token_hosts.is_empty() {
            return self.token_hosts.clone();
        }
        forge_host(&self.pull_request.api_url).into_iter().collect()
    }
}

/// The Git host of a forge API: `api.github.com` serves `github.com`; a
/// GitHub Enterprise API (`https://HOST/api/v3`) serves `HOST`.
fn forge_host(api_url: &str) -> Option<String> {
    let rest = api_url.strip_prefix("https://")?;
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    Some(
        authority
            .strip_prefix("api.")
            .unwrap_or(authority)
            .to_owned(),
    )
}

/// Never prints the token.
impl std::fmt::Debug for PublishConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishConfig")
            .field("author_name", &self.author_name)
            .field("author_email", &self.author_email)
            .field("branch_prefix", &self.branch_prefix)
            .field("message_template", &self.message_template)
            .field("token", &if self.token.is_empty() { "" } else { "(set)" })
            .field("token_hosts", &self.token_hosts)
            .finish()
    }
}

/// Kubernetes mode: agents as Pods, jobs also as IcarusJob resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Off: agents run on the local Docker engine.
    pub enabled: bool,
    /// Where IcarusJobs are watched and Pods and claims created.
    pub namespace: String,
    /// Size requested for each job's workspace claim.
    pub workspace_size: String,
    /// The claims' storage class; empty: the cluster's default.
    #[serde(default)]
    pub storage_class: String,
    /// Labels a node must carry to run agents (dedicated agent nodes); empty: any node.
    #[serde(default)]
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// The image of the short-lived Pods that check out, diff and publish a
    /// job's workspace: the orchestrator's own (it has `git` and `icarus`).
    #[serde(default = "default_git_image")]
    pub git_image: String,
    /// How long one of those Pods may run.
    #[serde(default = "default_git_timeout_seconds")]
    pub git_timeout_seconds: u64,
    /// A Secret whose `token` key those Pods get as `GITHUB_TOKEN`, for
    /// HTTPS remotes; empty: none.
    #[serde(default)]
    pub git_credentials_secret: String,
    /// How long a cancelled or deleted job's Pods get between SIGTERM and
    /// SIGKILL. Short: an agent is disposable, and one running as PID 1
    /// ignores SIGTERM, so Kubernetes' 30 s default only keeps it running.
    #[serde(default = "default_termination_grace_seconds")]
    pub termination_grace_seconds: u64,
}

fn default_termination_grace_seconds() -> u64 {
    5
}

fn default_git_image() -> String {
    "icarus:latest".to_owned()
}

fn default_git_timeout_seconds() -> u64 {
    600
}

/// Who hears about jobs that need a human or are done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// URLs that receive a generic JSON body.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// A Discord webhook; empty: `DISCORD_WEBHOOK_URL` from the environment, if set.
    #[serde(default, serialize_with = "redacted")]
    pub discord_webhook_url: String,
    /// Tries per message, the waits between them doubling from `retry_delay_ms`.
    pub max_attempts: u32,
    pub retry_delay_ms: u64,
}

impl NotificationsConfig {
    /// The configured Discord webhook, else `DISCORD_WEBHOOK_URL`.
    pub fn discord_webhook_url(&self) -> Option<String> {
        Some(self.discord_webhook_url.clone())
            .filter(|u| !u.is_empty())
            .or_else(|| std::env::var("DISCORD_WEBHOOK_URL").ok())
            .filter(|u| !u.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    pub level: String,
    /// `text` for people (colour only on a terminal), `json` lines for machines.
    #[serde(default)]
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
}

/// Where the Prometheus metrics are served besides the API's `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `address:port` of a listener serving `/metrics` alone, without
    /// authentication (a scraper needs no token); empty: none.
    #[serde(default)]
    pub listen: String,
}

/// Where traces go (OpenTelemetry over OTLP/HTTP); off by default.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base URL (`http://host:4318`): spans are
    /// posted to `<base>/v1/traces`. Empty: no traces are exported.
    #[serde(default)]
    pub otlp_endpoint: String,
    /// `service.name` of every span.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of traces kept (0 to 1), unless a caller's `traceparent`
    /// already decided.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Headers sent with every export (a vendor's API key, say); shown as
    /// `(set)` by `icarus config`.
    #[serde(default, serialize_with = "redacted_values")]
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: String::new(),
            service_name: default_service_name(),
            sample_ratio: default_sample_ratio(),
            headers: std::collections::BTreeMap::new(),
        }
    }
}

/// Header values can be credentials: their `Debug` hides them as `icarus config` does.
impl std::fmt::Debug for TracingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingConfig")
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn default_service_name() -> String {
    "icarus".to_owned()
}

fn default_sample_ratio() -> f64 {
    1.0
}

fn redacted_values<S: serde::Serializer>(
    map: &std::collections::BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.keys().map(|name| (name, "(set)")))
}

impl TracingConfig {
    /// Whether spans are exported at all.
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.is_empty()
    }

    /// Where spans are posted: `otlp_endpoint` followed by `/v1/traces`.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.otlp_endpoint.trim_end_matches('/'))
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.enabled() && !is_collector_base_url(&self.otlp_endpoint) {
            problems.push(format!(
                "tracing.otlp_endpoint: '{}' is not an http(s) base URL such as http://localhost:4318 (no credentials, query or fragment: credentials go in tracing.headers)",
                self.otlp_endpoint
            ));
        }
        if self.service_name.trim().is_empty() {
            problems.push("tracing.service_name must not be empty".to_owned());
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            problems.push(format!(
                "tracing.sample_ratio must be between 0 and 1, not {}",
                self.sample_ratio
            ));
        }
        for (name, value) in &self.headers {
            let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && reqwest::header::HeaderValue::from_str(value).is_ok();
            if !valid {
                problems.push(format!(
                    "tracing.headers: '{name}' is not a valid header name, or its value not a valid header value"
                ));
            }
        }
        problems
    }
}

/// An `http(s)://host[:port][/path]` URL with nothing after the path.
fn is_collector_base_url(text: &str) -> bool {
    reqwest::Url::parse(text).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some_and(|host| !host.is_empty())
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
    })
}

/// Environment variables the original service read, and the key each overrides.
const SEED_ENVIRONMENT: [(&str, &str); 3] = [
    ("ORCHESTRATOR_HOST", "orchestrator.host"),
    ("ORCHESTRATOR_PORT", "orchestrator.port"),
    ("DATABASE_URL", "database.url"),
];

impl AgentsConfig {
    /// Whether a job may run `image`: a configured image, or one the allow-list matches.
    pub fn allows_image(&self, image: &str) -> bool {
        image == self.builder.image_name
            || image == self.checker.image_name
            || self
                .allowed_images
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => image.starts_with(prefix),
                    None => image == pattern,
                })
    }
}

impl Config {
    /// Whether the API listens only on this machine.
    pub fn listens_on_loopback_only(&self) -> bool {
        let host = &self.orchestrator.host;
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The tokens of `auth.tokens` and of `auth.tokens_file`.
    pub fn api_tokens(&self) -> Result<Vec<ApiToken>, ConfigError> {
        let mut tokens = self.auth.tokens.clone();
        let file = &self.auth.tokens_file;
        if !file.as_os_str().is_empty() {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct TokensFile {
                tokens: Vec<ApiToken>,
            }
            let text = std::fs::read_to_string(file)
                .map_err(|_| ConfigError::MissingFile(file.clone()))?;
            let parsed: TokensFile = serde_yaml::from_str(&text).map_err(|e| {
                ConfigError::Parse(format!("auth.tokens_file {}: {e}", file.display()))
            })?;
            tokens.extend(parsed.tokens);
        }
        Ok(tokens)
    }

    /// Where the agent callback key lives (see `agents.callback_key_file`).
    pub fn callback_key_file(&self) -> PathBuf {
        if self.agents.callback_key_file.as_os_str().is_empty() {
            self.workspace.base_path.join(".icarus-agent.key")
        } else {
            self.agents.callback_key_file.clone()
        }
    }

    /// Loads the embedded default, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Yaml::string(EMBEDDED_DEFAULT));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Yaml::file(path));
        }
        Self::from_figment(figment.merge(environment()))
    }

    /// The embedded default alone, ignoring the environment (for tests).
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Yaml::string(EMBEDDED_DEFAULT)))
    }

    /// Parses YAML text laid over the embedded default, ignoring the environment.
    pub fn from_yaml_over_default(yaml: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Yaml::string(EMBEDDED_DEFAULT)).merge(Yaml::string(yaml)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|errors| {
            let messages: Vec<String> = errors.into_iter().map(|e| e.to_string()).collect();
            ConfigError::Parse(messages.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value a type cannot; each problem names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, message: String| {
            if !ok {
                problems.push(message);
            }
        };
        let o = &self.orchestrator;
        check(
            o.host.parse::<IpAddr>().is_ok() || o.host == "localhost",
            format!("orchestrator.host: '{}' is not an IP address", o.host),
        );
        check(
            o.max_concurrent_jobs >= 1,
            "orchestrator.max_concurrent_jobs must be at least 1".into(),
        );
        check(
            o.job_timeout_seconds >= 1,
            "orchestrator.job_timeout_seconds must be at least 1".into(),
        );
        check(
            o.resync_interval_seconds >= 1,
            "orchestrator.resync_interval_seconds must be at least 1".into(),
        );
        check(
            o.max_request_bytes >= 1024,
            "orchestrator.max_request_bytes must be at least 1024".into(),
        );
        check(
            o.lease_renew_seconds >= 1
                && o.lease_duration_seconds >= 2 * o.lease_renew_seconds
                && i32::try_from(o.lease_duration_seconds).is_ok(),
            "orchestrator.lease_renew_seconds must be at least 1, and orchestrator.lease_duration_seconds at least twice it".into(),
        );
        if let Some(problem) = (!o.replica_name.is_empty())
            .then(|| replica::replica_name_problem(&o.replica_name))
            .flatten()
        {
            check(false, format!("orchestrator.replica_name: {problem}"));
        }
        for host in &o.allowed_hosts {
            check(
                is_host_name(host),
                format!(
                    "orchestrator.allowed_hosts: '{host}' is not a host name or IP address (no scheme, port or path)"
                ),
            );
        }
        for token in &self.auth.tokens {
            check(
                token.sha256.len() == 64 && token.sha256.chars().all(|c| c.is_ascii_hexdigit()),
                format!(
                    "auth.tokens: the sha256 of '{}' is not 64 hex digits",
                    token.name
                ),
            );
        }
        check(
            self.auth.spawns_per_minute >= 1,
            "auth.spawns_per_minute must be at least 1".into(),
        );
        for problem in self.approval.problems() {
            check(false, problem);
        }
        let s = &self.sentinel;
        for (key, value) in [
            ("yellow_threshold", s.yellow_threshold),
            ("red_threshold", s.red_threshold),
        ] {
            check(
                (0.0..=100.0).contains(&value),
                format!("sentinel.{key} must be a percentage between 0 and 100, not {value}"),
            );
        }
        check(
            s.yellow_threshold <= s.red_threshold,
            "sentinel.yellow_threshold must not exceed sentinel.red_threshold".into(),
        );
        check(
            s.poll_interval_seconds >= 1,
            "sentinel.poll_interval_seconds must be at least 1".into(),
        );
        let listen = &self.metrics.listen;
        check(
            listen.is_empty() || listen.parse::<std::net::SocketAddr>().is_ok(),
            format!(
                "metrics.listen: '{listen}' is not an address:port (e.g. 0.0.0.0:9090), nor empty"
            ),
        );
        for url in &self.notifications.webhooks {
            check(
                url.starts_with("http://") || url.starts_with("https://"),
                format!("notifications.webhooks: '{url}' is not an http(s) URL"),
            );
        }
        check(
            self.notifications.max_attempts >= 1,
            "notifications.max_attempts must be at least 1".into(),
        );
        check(
            !self.kubernetes.enabled || !self.agents.callback_base_url.is_empty(),
            "kubernetes.enabled needs agents.callback_base_url (the Service's DNS name)".into(),
        );
        check(
            self.agents.pids_limit >= 8,
            "agents.pids_limit must be at least 8".into(),
        );
        check(
            self.agents.max_attempts >= 1,
            "agents.max_attempts must be at least 1".into(),
        );
        let backoff = self.agents.retry_backoff_seconds;
        check(
            backoff.is_finite() && (0.0..=3600.0).contains(&backoff),
            format!("agents.retry_backoff_seconds must be between 0 and 3600, not {backoff}"),
        );
        check(
            self.agents.progress_reports_per_second >= 1,
            "agents.progress_reports_per_second must be at least 1".into(),
        );
        check(
            self.agents.max_test_code_bytes <= TEST_CODE_CEILING_BYTES,
            format!(
                "agents.max_test_code_bytes must be at most {TEST_CODE_CEILING_BYTES} (one \
                 environment variable holds at most 128 KiB), not {}",
                self.agents.max_test_code_bytes
            ),
        );
        for (role, agent) in [
            ("builder", &self.agents.builder),
            ("checker", &self.agents.checker),
        ] {
            for problem in agent.problems() {
                check(false, format!("agents.{role}.{problem}"));
            }
        }
        for problem in self.agents.egress_problems(self.kubernetes.enabled) {
            check(false, format!("agents.egress.{problem}"));
        }
        let callback = &self.agents.callback_base_url;
        check(
            callback.is_empty()
                || callback.starts_with("http://")
                || callback.starts_with("https://"),
            format!("agents.callback_base_url: '{callback}' is not an http(s) URL"),
        );
        check(
            !self.workspace.base_path.as_os_str().is_empty(),
            "workspace.base_path must not be empty".into(),
        );
        for host in &self.publish.token_hosts {
            check(
                !host.is_empty() && !host.contains(['/', '@', ' ']),
                format!("publish.token_hosts: '{host}' is not a host or host:port"),
            );
        }
        for pattern in &self.publish.pull_request.allowed_repositories {
            check(
                crate::source::forge::is_repository_pattern(pattern),
                format!(
                    "publish.pull_request.allowed_repositories: '{pattern}' is not owner/name or owner/*"
                ),
            );
        }
        check(
            self.logging
                .level
                .parse::<tracing_subscriber::EnvFilter>()
                .is_ok(),
            format!(
                "logging.level: '{}' is not a log level or filter",
                self.logging.level
            ),
        );
        for problem in self.tracing.problems() {
            check(false, problem);
        }
        for problem in self
            .queue
            .problems()
            .into_iter()
            .chain(self.retention.problems())
        {
            check(false, problem);
        }
        let url = &self.database.url;
        check(
            ["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|p| url.starts_with(p)),
            "database.url must start with sqlite:, postgres:// or postgresql://".into(),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// This orchestrator's name among replicas, which its drain is kept
    /// under: `orchestrator.replica_name`, else the host name (in a Pod,
    /// the Pod's name). A name out of shape, or no host name to read, is
    /// a configuration error that says to set the key.
    pub fn replica_name(&self) -> Result<String, ConfigError> {
        let configured = &self.orchestrator.replica_name;
        let (name, from) = if configured.is_empty() {
            let host = replica::host_name().ok_or_else(|| {
                ConfigError::Invalid(vec![
                    "orchestrator.replica_name is empty and the host name cannot be read \
                     (/proc/sys/kernel/hostname, /etc/hostname); set orchestrator.replica_name"
                        .to_owned(),
                ])
            })?;
            (host, "orchestrator.replica_name is empty and the host name")
        } else {
            (configured.clone(), "orchestrator.replica_name")
        };
        match replica::replica_name_problem(&name) {
            None => Ok(name),
            Some(problem) => Err(ConfigError::Invalid(vec![format!(
                "{from}: {problem}; set orchestrator.replica_name to a name of letters, digits, '.', '_' and '-'"
            )])),
        }
    }

    /// How agents the infrastructure cut short are tried again.
    pub fn retries(&self) -> Retries {
        let first = TimeDelta::milliseconds((self.agents.retry_backoff_seconds * 1000.0) as i64);
        Retries {
            max_attempts: self.agents.max_attempts,
            first_backoff: first,
            max_backoff: first.max(TimeDelta::seconds(60)),
            report_grace: TimeDelta::seconds(REPORT_GRACE_SECONDS),
        }
    }

    pub fn deadlines(&self) -> Deadlines {
        Deadlines {
            builder: seconds(self.agents.builder.timeout_seconds),
            checker: seconds(self.agents.checker.timeout_seconds),
            job: seconds(self.orchestrator.job_timeout_seconds),
            approval: self.approval.deadline(),
        }
    }
}

impl AgentsConfig {
    fn egress_problems(&self, kubernetes: bool) -> Vec<String> {
        let egress = &self.egress;
        let mut problems = Vec::new();
        for name in egress.hosts.keys() {
            if Destination::parse(name).is_err() {
                problems.push(format!("hosts: '{name}' is not a DNS name"));
            }
        }
        if egress.max_bytes_per_job == 0 || egress.max_connections_per_job == 0 {
            problems.push(
                "max_bytes_per_job and max_connections_per_job must be at least 1".to_owned(),
            );
        }
        if egress.mode == EgressMode::AllowList && kubernetes && egress.proxy_port == 0 {
            problems.push(
                "proxy_port: Kubernetes mode needs the egress proxy on a fixed port, which the \
                 orchestrator's Service carries to agents (deploy/: 3128)"
                    .to_owned(),
            );
        }
        if egress.mode.seals_the_network() && !kubernetes {
            for (role, agent) in [("builder", &self.builder), ("checker", &self.checker)] {
                if has_a_route_out(&agent.network_mode) {
                    problems.push(format!(
                        "mode: {} needs agents on a network with no route out, and \
                         agents.{role}.network_mode '{}' has one: name a network for Icarus to \
                         make (the default, icarus-agents-{{instance}}), an internal one of yours, or none",
                        serde_json::to_string(&egress.mode).unwrap_or_default(),
                        agent.network_mode
                    ));
                }
            }
        }
        problems
    }
}

/// Docker's network modes that route out of the host whatever Icarus does.
fn has_a_route_out(network_mode: &str) -> bool {
    matches!(network_mode, "bridge" | "host" | "default") || network_mode.starts_with("container:")
}

impl AgentConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.image_name.trim().is_empty() {
            problems.push("image_name must not be empty".to_owned());
        }
        if !(self.cpu_limit > 0.0 && self.cpu_limit.is_finite()) {
            problems.push(format!(
                "cpu_limit must be a positive number of CPUs, not {}",
                self.cpu_limit
            ));
        }
        // Docker refuses memory limits under 6 MiB.
        if self.memory_limit < 6 * 1024 * 1024 {
            problems.push(format!(
                "memory_limit must be at least 6291456 bytes, not {}",
                self.memory_limit
            ));
        }
        if self.timeout_seconds == 0 {
            problems.push("timeout_seconds must be at least 1".to_owned());
        }
        if self.network_mode.trim().is_empty() {
            problems.push("network_mode must not be empty".to_owned());
        }
        if let Err(error) = AllowList::parse(&self.allowed_domains) {
            problems.push(format!("allowed_domains: {error}"));
        }
        problems
    }
}

/// A DNS name (`icarus.internal`), an IP address, or a bracketed IPv6 one (`[fd00::1]`).
fn is_host_name(text: &str) -> bool {
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'));
    if let Some(inner) = unbracketed {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    text.parse::<IpAddr>().is_ok()
        || (!text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
}

fn seconds(value: u64) -> TimeDelta {
    TimeDelta::seconds(
        i64::try_from(value)
            .unwrap_or(i64::MAX / 1000)
            .min(i64::MAX / 1000),
    )
}

/// The seed's environment variables, plus `ICARUS_CONFIG__<SECTION>__<KEY>` for any key.
fn environment() -> Figment {
    let seed = Env::raw().filter_map(|key| {
        SEED_ENVIRONMENT
            .iter()
            .find(|(name, _)| key.as_str().eq_ignore_ascii_case(name))
            .map(|(_, path)| (*path).into())
    });
    Figment::from(seed).merge(Env::prefixed("ICARUS_CONFIG__").split("__"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_valid_and_matches_the_seed_keys() {
        let config = Config::embedded_default().unwrap();
        assert_eq!(config.orchestrator.port, 8000);
        assert_eq!(config.orchestrator.max_concurrent_jobs, 2);
        assert_eq!(config.orchestrator.job_timeout_seconds, 1800);
        assert_eq!(config.agents.builder.image_name, "icarus-builder:latest");
        assert_eq!(config.agents.checker.memory_limit, 536_870_912);
        assert!(config.database.url.starts_with("sqlite:"));
        assert!(config.orchestrator.allowed_hosts.is_empty());
    }

    #[test]
    fn a_file_overrides_only_the_keys_it_sets() {
        let config = Config::from_yaml_over_default("orchestrator:\n  port: 9001\n").unwrap();
        assert_eq!(config.orchestrator.port, 9001);
        assert_eq!(config.orchestrator.max_concurrent_jobs, 2);
    }

    #[test]
    fn an_unknown_key_is_named_in_the_error() {
        let err = Config::from_yaml_over_default("orchestrator:\n  prot: 9001\n").unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_in_the_error() {
        let err = Config::from_yaml_over_default("orchestrator:\n  port: eighty\n").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn a_bad_value_is_named_in_the_error() {
        let yaml = "agents:\n  checker:\n    cpu_limit: 0\nsentinel:\n  red_threshold: 150\n";
        let err = Config::from_yaml_over_default(yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains("agents.checker.cpu_limit"), "{err}");
        assert!(err.contains("sentinel.red_threshold"), "{err}");
    }

    #[test]
    fn allowed_hosts_take_names_and_addresses_but_not_urls() {
        let good = "orchestrator:\n  allowed_hosts: [icarus.internal, 10.0.0.5, '[fd00::1]']\n";
        let config = Config::from_yaml_over_default(good).unwrap();
        assert_eq!(config.orchestrator.allowed_hosts.len(), 3);
        for bad in [
            "http://icarus.internal",
            "icarus.internal:8000",
            "a/b",
            "''",
        ] {
            let yaml = format!("orchestrator:\n  allowed_hosts: [{bad}]\n");
            let err = Config::from_yaml_over_default(&yaml).unwrap_err();
            assert!(
                err.to_string().contains("orchestrator.allowed_hosts"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn traces_are_off_by_default() {
        let config = Config::embedded_default().unwrap();
        assert!(!config.tracing.enabled());
        assert_eq!(config.tracing.service_name, "icarus");
    }

    #[test]
    fn traces_go_to_the_v1_traces_path_under_the_collector_base_url() {
        for endpoint in ["http://collector:4318", "http://collector:4318/"] {
            let yaml = format!("tracing:\n  otlp_endpoint: '{endpoint}'\n");
            let config = Config::from_yaml_over_default(&yaml).unwrap();
            assert_eq!(
                config.tracing.traces_url(),
                "http://collector:4318/v1/traces"
            );
        }
    }

    #[test]
    fn a_bad_collector_url_sample_ratio_or_header_is_named_at_start() {
        for (yaml, key) in [
            ("otlp_endpoint: 'collector:4318'", "tracing.otlp_endpoint"),
            ("otlp_endpoint: 'ftp://collector'", "tracing.otlp_endpoint"),
            (
                "otlp_endpoint: 'http://u:p@collector'",
                "tracing.otlp_endpoint",
            ),
            (
                "otlp_endpoint: 'http://collector?x=1'",
                "tracing.otlp_endpoint",
            ),
            ("sample_ratio: 1.5", "tracing.sample_ratio"),
            ("service_name: ' '", "tracing.service_name"),
            ("headers: {'bad name': x}", "tracing.headers"),
            ("headers: {x-key: \"line\\nbreak\"}", "tracing.headers"),
        ] {
            let err = Config::from_yaml_over_default(&format!("tracing:\n  {yaml}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn approval_settings_out_of_range_are_refused_naming_the_key() {
        for (yaml, key) in [
            ("required: 0", "approval.required"),
            ("{required: 3, max_required: 2}", "approval.max_required"),
            ("max_required: 101", "approval.max_required"),
            ("reminder_fraction: 1", "approval.reminder_fraction"),
            ("timeout_seconds: 999999999999", "approval.timeout_seconds"),
            ("on_timeout: ignored", "on_timeout"),
        ] {
            let text = match yaml.strip_prefix('{') {
                Some(_) => format!("approval: {yaml}\n"),
                None => format!("approval:\n  {yaml}\n"),
            };
            let err = Config::from_yaml_over_default(&text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn an_approval_timeout_gives_the_planner_its_deadline_and_reminder() {
        let yaml = "approval:\n  timeout_seconds: 600\n  on_timeout: rejected\n  reminder_fraction: 0.25\n";
        let deadline = Config::from_yaml_over_default(yaml)
            .unwrap()
            .deadlines()
            .approval
            .unwrap();
        assert_eq!(deadline.timeout, TimeDelta::seconds(600));
        assert_eq!(deadline.outcome, TimeoutOutcome::Rejected);
        assert_eq!(deadline.reminder_after, Some(TimeDelta::seconds(150)));
        let off = Config::embedded_default().unwrap().deadlines();
        assert_eq!(off.approval, None, "off by default");
    }

    #[test]
    fn trace_export_headers_are_never_printed() {
        let yaml = "tracing:\n  headers: {x-api-key: secret-value}\n";
        let config = Config::from_yaml_over_default(yaml).unwrap();
        let printed = serde_yaml::to_string(&config).unwrap();
        assert!(printed.contains("x-api-key: (set)"), "{printed}");
        assert!(!printed.contains("secret-value"), "{printed}");
        assert!(!format!("{config:?}").contains("secret-value"));
    }

    #[test]
    fn a_replica_name_out_of_shape_is_refused_naming_the_key() {
        for name in ["\"two words\"", "\"-dash\"", "\"a/b\""] {
            let yaml = format!("orchestrator:\n  replica_name: {name}\n");
            let err = Config::from_yaml_over_default(&yaml)
                .unwrap_err()
                .to_string();
            assert!(err.contains("orchestrator.replica_name"), "{name}: {err}");
        }
        let mut config = Config::embedded_default().unwrap();
        config.orchestrator.replica_name = "x".repeat(254);
        let err = config.replica_name().unwrap_err().to_string();
        assert!(err.contains("the limit is 253"), "{err}");
        assert!(err.contains("set orchestrator.replica_name"), "{err}");
    }

    #[test]
    fn the_replica_name_is_the_configured_one_else_the_host_name() {
        let yaml = "orchestrator:\n  replica_name: icarus-0\n";
        let config = Config::from_yaml_over_default(yaml).unwrap();
        assert_eq!(config.replica_name().unwrap(), "icarus-0");
        let default = Config::embedded_default().unwrap();
        assert_eq!(default.orchestrator.replica_name, "");
        let host = replica::host_name().expect("this host has a name");
        assert_eq!(default.replica_name().unwrap(), host);
    }

    #[test]
    fn an_unknown_mount_type_is_refused() {
        let err = Config::from_yaml_over_default("workspace:\n  mount_type: nfs\n").unwrap_err();
        assert!(err.to_string().contains("nfs"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail dictates the closure's type
    fn the_seed_environment_variables_override_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ORCHESTRATOR_PORT", "8123");
            jail.set_env("DATABASE_URL", "postgres://u:p@localhost/icarus");
            jail.set_env("ICARUS_CONFIG__AGENTS__BUILDER__IMAGE_NAME", "mine:dev");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.orchestrator.port, 8123);
            assert_eq!(config.database.url, "postgres://u:p@localhost/icarus");
            assert_eq!(config.agents.builder.image_name, "mine:dev");
            Ok(())
        });
    }
}
