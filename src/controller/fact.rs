//! What an action found out that the planner must see: a checkout's base,
//! a snapshot, a pushed commit, a start that can never work. Apart from the
//! reconcile that reads them and the actions that report them, so neither
//! depends on the other.

use crate::job::workload::{Observed, PublishedChange, SnapshotTaken, StartFailure};

/// Something an action found out that the planner must see.
pub(super) enum Fact {
    BaseCommit(String),
    Snapshot(SnapshotTaken),
    Published(PublishedChange),
    SourceFailed(String),
    StartFailed(StartFailure),
    AheadDeclined,
}

impl Fact {
    pub(super) fn teach(self, observed: &mut Observed) {
        match self {
            Fact::BaseCommit(base) => observed.source.base_commit = Some(base),
            Fact::Snapshot(taken) => observed.source.snapshot = Some(taken),
            Fact::Published(change) => observed.source.published = Some(change),
            Fact::SourceFailed(message) => observed.source.failure = Some(message),
            Fact::StartFailed(failure) => observed.start_failure = Some(failure),
            Fact::AheadDeclined => observed.ahead_declined = true,
        }
    }
}
