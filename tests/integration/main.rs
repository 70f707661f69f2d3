//! End-to-end tests: one binary, one module per area. They run against real
//! SQLite files and a real PostgreSQL (`POSTGRES_TEST_URL`, which
//! `scripts/test` sets after starting one), over real HTTP and WebSocket.

mod support;

mod api;
mod approvals;
mod architecture;
mod auth;
mod bench;
mod browser;
mod cli;
mod client;
mod cluster;
mod dashboard;
mod database;
mod deploy;
mod docker;
mod document;
mod egress;
mod egress_agents;
mod egress_allowances;
mod git;
mod hostile;
mod http_limits;
mod kube_api;
mod kube_scenarios;
mod leadership;
mod lifecycle;
mod live_logs;
mod metrics;
mod notify;
mod openapi_contract;
mod original_clients;
mod process;
mod queue;
mod rbac;
mod retention;
mod soak;
mod sqlite_storage;
mod store;
mod stream;
mod ui;
mod untrusted_workspace;
mod usage;
