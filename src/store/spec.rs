//! The one way to change a job's desired state: read, decide, compare-and-swap,
//! and after a lost race read and decide again.
//!
//! Every spec writer (the REST routes, the IcarusJob sync) goes through
//! [`Store::update_spec`], so none can write a decision over a state that
//! changed under it, and all give up the same way.

use std::future::{Future, ready};

use super::{Store, StoreError};
use crate::job::{Job, JobId, JobSpec};

/// How many writes of one spec change may lose their compare-and-swap before
/// [`Store::update_spec`] gives up with [`StoreError::KeptChanging`]. Only
/// another writer of the same job makes one lose (the controller recording a
/// status, a second request), so a few losses are normal; this many mean the
/// job is being written in a tight loop.
pub const SPEC_WRITE_ATTEMPTS: u32 = 8;

/// What a spec change decided, seeing the job as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum SpecUpdate {
    /// Nothing to write: the job already is as wanted, or the change does
    /// not apply to it now.
    Unchanged,
    /// Write this spec over the one read (boxed: a spec is large, and
    /// `Unchanged` is the usual answer).
    Write(Box<JobSpec>),
}

impl SpecUpdate {
    /// Write `spec` over the one read.
    pub fn write(spec: JobSpec) -> SpecUpdate {
        SpecUpdate::Write(Box::new(spec))
    }
}

/// A change to a job's spec, decided on the job as stored each time the
/// store tries to write it. A plain `FnMut(&Job) -> Result<SpecUpdate, E>`
/// is one; a change with something to do before its write (Kubernetes mode
/// writes the IcarusJob first) implements `decide` as an `async fn`.
///
/// A trait rather than an async closure: the future must be `Send` for the
/// API's handlers, which an async closure's cannot promise yet.
pub trait SpecChange<E> {
    /// What to write over `job`'s spec, or the caller's reason to refuse.
    fn decide(&mut self, job: &Job) -> impl Future<Output = Result<SpecUpdate, E>> + Send;
}

impl<F, E> SpecChange<E> for F
where
    F: FnMut(&Job) -> Result<SpecUpdate, E>,
    E: Send,
{
    fn decide(&mut self, job: &Job) -> impl Future<Output = Result<SpecUpdate, E>> + Send {
        ready(self(job))
    }
}

/// What [`Store::update_spec`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecWrite {
    /// The job as stored now: the version written, or the one read when
    /// nothing was.
    pub job: Job,
    /// Whether a new version was written.
    pub written: bool,
}

impl Store {
    /// Changes job `id`'s spec as `change` decides, seeing the job as stored.
    ///
    /// The write is a compare-and-swap on the version read. One that lost a
    /// race reads the job again and asks `change` again, so a change is
    /// always decided on the state it is written over: the winner may have
    /// made it unneeded, or forbidden. `change` may refuse with the caller's
    /// own error, which is returned as it is. An unknown job is
    /// [`StoreError::NotFound`]; [`SPEC_WRITE_ATTEMPTS`] lost races are
    /// [`StoreError::KeptChanging`].
    pub async fn update_spec<E>(
        &self,
        id: JobId,
        mut change: impl SpecChange<E>,
    ) -> Result<SpecWrite, E>
    where
        E: From<StoreError>,
    {
        for _ in 0..SPEC_WRITE_ATTEMPTS {
            let mut job = self.get_job(id).await?.ok_or(StoreError::NotFound(id))?;
            let SpecUpdate::Write(spec) = change.decide(&job).await? else {
                return Ok(SpecWrite {
                    job,
                    written: false,
                });
            };
            // Decisions are only ever added: those past the ones read are new.
            let new_decisions = job.spec.approvals.len();
            job.spec = *spec;
            match self.update_job_spec(&job, new_decisions).await {
                Ok(job) => return Ok(SpecWrite { job, written: true }),
                Err(StoreError::Conflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(StoreError::KeptChanging {
            id,
            attempts: SPEC_WRITE_ATTEMPTS,
        }
        .into())
    }
}
