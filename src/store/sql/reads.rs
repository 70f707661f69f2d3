//! Reads through the view ([`crate::store::view`]): the job from memory when
//! it is held, from the database (and then held) when it is not.

use std::collections::HashMap;
use std::sync::Arc;

use super::on_pool;
use super::queries::{JOB_COLUMNS, JobRow, Listing};
use crate::job::{Job, JobId};
use crate::store::view::pages::{Page, PageFill};
use crate::store::view::{CachedJob, JobFacts, ViewCounters};
use crate::store::{JobFilter, Result, Store, TelemetrySource};

impl Store {
    /// The job as the API reads it; `None` if there is no such job.
    pub async fn read_job(&self, id: JobId) -> Result<Option<Arc<CachedJob>>> {
        if let Some(cached) = self.view.get(id) {
            return Ok(Some(cached));
        }
        let fill = self.view.begin_fill(id);
        match self.get_job(id).await {
            Ok(Some(job)) => Ok(Some(self.view.finish_fill(fill, job))),
            other => {
                self.view.abandon_fill(fill);
                other.map(|_| None)
            }
        }
    }

    /// The jobs `ids` names, in that order, as the API reads them; one
    /// deleted meanwhile is left out. Those the view lacks are read in one
    /// query.
    pub async fn read_jobs(&self, ids: &[JobId]) -> Result<Vec<Arc<CachedJob>>> {
        let mut found: Vec<Option<Arc<CachedJob>>> =
            ids.iter().map(|id| self.view.get(*id)).collect();
        let missing: Vec<(usize, JobId)> = ids
            .iter()
            .zip(&found)
            .enumerate()
            .filter(|(_, (_, held))| held.is_none())
            .map(|(index, (id, _))| (index, *id))
            .collect();
        if missing.is_empty() {
            return Ok(found.into_iter().flatten().collect());
        }
        let fills: Vec<_> = missing
            .iter()
            .map(|(_, id)| self.view.begin_fill(*id))
            .collect();
        let wanted: Vec<JobId> = missing.iter().map(|(_, id)| *id).collect();
        let mut read = match self.jobs_by_id(&wanted).await {
            Ok(read) => read,
            Err(error) => {
                fills
                    .into_iter()
                    .for_each(|fill| self.view.abandon_fill(fill));
                return Err(error);
            }
        };
        for ((index, id), fill) in missing.into_iter().zip(fills) {
            match read.remove(&id) {
                Some(job) => found[index] = Some(self.view.finish_fill(fill, job)),
                None => self.view.abandon_fill(fill),
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// What the job's status and telemetry show beside it, read once per
    /// version of the job held.
    pub async fn read_facts(&self, cached: &CachedJob) -> Result<Arc<JobFacts>> {
        cached.facts(|| self.job_facts(&cached.job)).await
    }

    /// The ids of the jobs [`list_jobs`](Self::list_jobs) would return, in
    /// its order: all a listing asks of the database when the rows
    /// themselves come from the view.
    pub async fn list_job_ids(&self, filter: JobFilter) -> Result<Vec<JobId>> {
        let listing = Listing::of(&filter, "job_id");
        let rows: Vec<(String,)> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(&listing.sql);
            for value in &listing.values {
                query = query.bind(value.as_str());
            }
            query.bind(listing.limit).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(id,)| {
                id.parse().map_err(|_| crate::store::StoreError::Corrupt {
                    detail: "its id is not a UUID".into(),
                    id,
                })
            })
            .collect()
    }

    /// The list page for `filter` as kept ([`crate::store::view::pages`]),
    /// or as another reader is making it; else the fill to make it with
    /// ([`crate::store::view::ReadView::page_or_fill`]).
    pub async fn page_or_fill(&self, filter: &JobFilter) -> Result<Arc<Page>, Option<PageFill>> {
        self.view.page_or_fill(filter).await
    }

    /// Keeps the page read since `fill` began, unless a job changed since.
    pub fn keep_page(&self, fill: Option<PageFill>, page: Arc<Page>) {
        self.view.finish_page(fill, page);
    }

    /// How often reads were answered from memory.
    pub fn view_counters(&self) -> &ViewCounters {
        self.view.counters()
    }

    /// The jobs of `ids` that exist, by id; one query.
    async fn jobs_by_id(&self, ids: &[JobId]) -> Result<HashMap<JobId, Job>> {
        let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE job_id IN ({})",
            placeholders.join(", ")
        );
        let rows: Vec<JobRow> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(&sql);
            for id in ids {
                query = query.bind(id.to_string());
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|row| Job::try_from(row).map(|job| (job.id, job)))
            .collect()
    }

    async fn job_facts(&self, job: &Job) -> Result<JobFacts> {
        let (usage, egress_traffic, reported, measured) = tokio::try_join!(
            self.agent_usage(job.id, job.status.attempt),
            self.egress_traffic(job.id),
            self.latest_telemetry(job.id, TelemetrySource::Agent),
            self.latest_telemetry(job.id, TelemetrySource::Icarus),
        )?;
        let egress_allowances = if egress_traffic.is_empty() {
            Vec::new()
        } else {
            self.egress_allowances(job.id).await?
        };
        Ok(JobFacts {
            usage,
            egress_traffic,
            egress_allowances,
            reported,
            measured,
        })
    }
}
