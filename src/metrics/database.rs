//! What the store records: every database error, by kind (an outage the
//! store sorted, or a fault), never the database's own words.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone)]
pub struct DatabaseMetrics {
    errors: Family<KindLabels, Counter>,
}

impl DatabaseMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let errors = Family::default();
        registry.register(
            "database_errors",
            "Database operations that failed, by kind: unreachable, busy, read_only, full, failing (outages), file_replaced, fault",
            Family::clone(&errors),
        );
        DatabaseMetrics { errors }
    }

    /// One failed operation; `kind` is one of a fixed few the store names.
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabels { kind }).inc();
    }
}
