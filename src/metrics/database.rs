//! What the store records: every database error, by kind (an outage the
//! store sorted, or a fault), never the database's own words.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::store::view::ViewCounters;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabels {
    answered_from: &'static str,
}

#[derive(Debug, Clone)]
pub struct DatabaseMetrics {
    errors: Family<KindLabels, Counter>,
    view_reads: Family<AnswerLabels, Counter>,
}

impl DatabaseMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let errors = Family::default();
        registry.register(
            "database_errors",
            "Database operations that failed, by kind: unreachable, busy, read_only, full, failing (outages), file_replaced, fault",
            Family::clone(&errors),
        );
        let view_reads = Family::default();
        registry.register(
            "read_view_reads",
            "Jobs read for a status, telemetry or list row, by where they were answered from: memory (the read view) or database",
            Family::clone(&view_reads),
        );
        DatabaseMetrics { errors, view_reads }
    }

    /// The counters the store's read view counts its reads with.
    pub fn view_counters(&self) -> ViewCounters {
        let answered_from = |answered_from| {
            self.view_reads
                .get_or_create(&AnswerLabels { answered_from })
                .clone()
        };
        ViewCounters {
            hits: answered_from("memory"),
            misses: answered_from("database"),
        }
    }

    /// One failed operation; `kind` is one of a fixed few the store names.
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabels { kind }).inc();
    }
}
