//! Where Icarus's reaction to a builder's exit goes: the controller's steps
//! (its spans: reading the job, observing the workloads, waiting for the
//! builder's last lines, reading the reports, the snapshot, the start), each
//! caught as it opens and closes, by job; and when Icarus heard of the exit
//! (the Docker runtime's `engine event` trace for the `die`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tracing::span::{Attributes, Id};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The steps a reaction is cut into, by span name, in the order they come;
/// "waiting" is the rest: no step under way (a worker not yet free, a
/// reconcile not yet begun, the reconcile's own planning).
pub const STEPS: [(&str, &str); 7] = [
    ("reconcile.load", "read the job"),
    ("reconcile.observe", "list the job's containers"),
    ("reconcile.logs", "wait for the builder's last lines"),
    ("reconcile.reports", "read the agents' reports"),
    ("git", "snapshot of the builder's work"),
    ("runtime.start", "start: holder check, up to the start call"),
    ("reconcile.record", "record the status"),
];

/// One step, closed: which job, which span, from when to when.
struct Mark {
    job: String,
    name: &'static str,
    began: DateTime<Utc>,
    ended: DateTime<Utc>,
}

/// An open span's job (its own `job` field, else its parent's) and start.
struct Open {
    job: Option<String>,
    began: DateTime<Utc>,
}

#[derive(Clone, Default)]
pub struct Timeline {
    marks: Arc<Mutex<Vec<Mark>>>,
    /// When Icarus heard of each job's first `die`.
    heard: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
}

#[derive(Default)]
struct Fields {
    message: String,
    job: Option<String>,
    action: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "job" => self.job = Some(format!("{value:?}")),
            "action" => self.action = format!("{value:?}").trim_matches('"').to_owned(),
            _ => {}
        }
    }
}

impl<S> Layer<S> for Timeline
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let job = fields.job.or_else(|| {
            let parent = span.parent()?;
            let extensions = parent.extensions();
            extensions.get::<Open>()?.job.clone()
        });
        span.extensions_mut().insert(Open {
            job,
            began: Utc::now(),
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let ended = Utc::now();
        let Some(span) = ctx.span(&id) else { return };
        let name = span.name();
        if !STEPS.iter().any(|(step, _)| *step == name) {
            return;
        }
        let extensions = span.extensions();
        let Some(Open {
            job: Some(job),
            began,
        }) = extensions.get::<Open>()
        else {
            return;
        };
        self.marks.lock().unwrap().push(Mark {
            job: job.clone(),
            name,
            began: *began,
            ended,
        });
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let at = Utc::now();
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message == "engine event"
            && fields.action == "die"
            && let Some(job) = fields.job
        {
            self.heard.lock().unwrap().entry(job).or_insert(at);
        }
    }
}

/// One reaction cut into its parts, in milliseconds: the engine telling
/// Icarus, each step of [`STEPS`] (its time inside the reaction), and the
/// rest.
pub struct Breakdown {
    pub heard: f64,
    pub steps: [f64; STEPS.len()],
    pub waiting: f64,
}

impl Timeline {
    /// The reaction of `job` from the builder's `die` (the engine's time)
    /// to the checker's start call, cut into its parts.
    pub fn breakdown(
        &self,
        job: &str,
        died: DateTime<Utc>,
        start_call: DateTime<Utc>,
    ) -> Breakdown {
        let heard = self.heard.lock().unwrap().get(job).copied().unwrap_or(died);
        let from = heard.max(died);
        let mut steps = [0.0; STEPS.len()];
        for mark in self.marks.lock().unwrap().iter().filter(|m| m.job == job) {
            let (began, ended) = (mark.began.max(from), mark.ended.min(start_call));
            if ended > began {
                let index = STEPS.iter().position(|(n, _)| *n == mark.name).unwrap();
                steps[index] += super::millis_between(began, ended);
            }
        }
        let whole = super::millis_between(died, start_call);
        let heard = super::millis_between(died, from);
        Breakdown {
            heard,
            steps,
            waiting: whole - heard - steps.iter().sum::<f64>(),
        }
    }
}
