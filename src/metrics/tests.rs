use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::job::plan::Transition;
use crate::job::{Reason, Role};

/// One sample line: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses a text exposition strictly enough to catch a malformed line: every
/// line is a `# HELP`, `# TYPE` (`# UNIT`, `# EOF` in OpenMetrics) or a
/// sample `name{label="value",...} number`, names are valid metric names,
/// and every sample belongs to a family whose TYPE came before it.
fn parse(text: &str) -> Vec<Sample> {
    let name_ok = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut typed: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let keyword = words.next().unwrap();
            if keyword == "EOF" {
                continue;
            }
            let name = words.next().unwrap_or_default();
            assert!(name_ok(name), "bad name in {line:?}");
            match keyword {
                "HELP" | "UNIT" => {}
                "TYPE" => {
                    let kind = words.next().unwrap_or_default();
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "untyped",
                            "unknown"
                        ]
                        .contains(&kind),
                        "bad type in {line:?}"
                    );
                    typed.push(name.to_owned());
                }
                other => panic!("unknown comment {other:?} in {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            number => number
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels close");
                let labels = body
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once("=\"").expect("label=\"value\"");
                        assert!(name_ok(key), "bad label name in {line:?}");
                        (key.to_owned(), value.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        assert!(name_ok(name), "bad name in {line:?}");
        assert!(
            typed.iter().any(|family| name.starts_with(family.as_str())),
            "{name} has no TYPE before it"
        );
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

fn recorded() -> Metrics {
    let metrics = Metrics::new();
    metrics.controller.transition(&Transition {
        from: Phase::Building,
        to: Phase::Checking,
        reason: Reason::Succeeded(Role::Builder),
        message: None,
    });
    metrics.controller.handed_over(Duration::from_millis(85));
    metrics
        .controller
        .agent_started(Role::Checker, Duration::from_millis(300));
    metrics.controller.reconciled(
        Duration::from_millis(3),
        ReconcileOutcome::Error,
        Some("database"),
    );
    metrics
        .callbacks
        .report(ReportKind::Audit, CallbackOutcome::Accepted);
    metrics
        .notifications
        .message(NotificationTarget::Webhook, NotificationOutcome::Delivered);
    metrics.database.error("unreachable");
    metrics.queue.added(1);
    metrics.set_jobs_by_phase(Some(&[(Phase::Checking, 1), (Phase::Completed, 4)]));
    metrics.set_leading(true);
    metrics
}

#[test]
fn the_prometheus_exposition_parses_and_names_families_by_convention() {
    let samples = parse(&recorded().encode(Format::Prometheus));
    let transitions = [
        ("from", "building"),
        ("to", "checking"),
        ("reason", "BuilderSucceeded"),
    ];
    assert_eq!(
        value(&samples, "icarus_job_transitions_total", &transitions),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "icarus_jobs", &[("phase", "completed")]),
        Some(4.0)
    );
    assert_eq!(
        value(&samples, "icarus_jobs", &[("phase", "pending")]),
        Some(0.0),
        "every phase has a series, zero or not"
    );
    assert_eq!(value(&samples, "icarus_leader", &[]), Some(1.0));
    assert_eq!(
        value(&samples, "icarus_job_handover_seconds_count", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "icarus_job_handover_seconds_bucket",
            &[("le", "0.16")]
        ),
        Some(1.0),
        "85 ms falls in the 160 ms bucket"
    );
    assert_eq!(
        value(
            &samples,
            "icarus_job_handover_seconds_bucket",
            &[("le", "0.08")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &samples,
            "icarus_callback_reports_total",
            &[("kind", "audit"), ("outcome", "accepted")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "icarus_reconcile_errors_total",
            &[("kind", "database")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "icarus_database_errors_total",
            &[("kind", "unreachable")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "icarus_notifications_total",
            &[("target", "webhook"), ("outcome", "delivered")]
        ),
        Some(1.0)
    );
    assert!(value(&samples, "process_cpu_seconds_total", &[]).is_some());
    assert!(value(&samples, "process_resident_memory_bytes", &[]).is_some_and(|bytes| bytes > 0.0));
    assert!(value(&samples, "process_start_time_seconds", &[]).is_some());
    for (name, _, _) in &samples {
        assert!(
            name.starts_with("icarus_") || name.starts_with("process_"),
            "{name} is not named after Icarus or the process"
        );
    }
}

#[test]
fn the_openmetrics_exposition_parses_and_ends_with_eof() {
    let text = recorded().encode(Format::OpenMetrics);
    assert!(text.ends_with("# EOF\n"), "{text}");
    let samples = parse(&text);
    assert_eq!(
        value(
            &samples,
            "icarus_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "icarus_workqueue_adds_total", &[]),
        Some(1.0)
    );
}

#[test]
fn jobs_that_could_not_be_counted_are_left_out_not_shown_stale() {
    let metrics = recorded();
    metrics.set_jobs_by_phase(None);
    let samples = parse(&metrics.encode(Format::Prometheus));
    assert_eq!(
        value(&samples, "icarus_jobs", &[("phase", "completed")]),
        None
    );
    metrics.set_jobs_by_phase(Some(&[]));
    let samples = parse(&metrics.encode(Format::Prometheus));
    assert_eq!(
        value(&samples, "icarus_jobs", &[("phase", "completed")]),
        Some(0.0)
    );
}

#[test]
fn a_scraper_gets_openmetrics_only_when_it_asks_for_it() {
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
    assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
    assert_eq!(Format::negotiate(None), Format::Prometheus);
}
