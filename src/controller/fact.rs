//! What an action found out that the planner must see: a checkout's base,
//! a snapshot, a pushed commit, a start that can never work; or that it is
//! still under way. Apart from the reconcile that reads them and the
//! actions that report them, so neither depends on the other.

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

/// What applying one action came to.
pub(super) enum Applied {
    /// Done; nothing the planner must hear.
    Done,
    /// Done; the planner must hear this.
    Learned(Fact),
    /// Under way elsewhere (a git Pod): nothing to learn yet. Its changes
    /// wake the job, and the planner, still without the fact, asks again.
    Running,
}

impl From<Option<Fact>> for Applied {
    fn from(fact: Option<Fact>) -> Self {
        fact.map_or(Applied::Done, Applied::Learned)
    }
}
