//! What agents did through the egress proxy, as the store keeps it: one row
//! per agent, destination and verdict that tallies add to, and a bound on
//! how many destinations an agent can make rows for; run on a SQLite file
//! and on PostgreSQL.

use chrono::{DateTime, TimeDelta, Utc};
use icarus::job::{JobId, Role, timestamp_now};
use icarus::store::{
    EgressTally, EgressTraffic, EgressVerdict, MAX_EGRESS_DESTINATIONS, Store, StreamBody,
    StreamQuery,
};

use crate::support::new_job;

on_both_databases!(
    tallies_of_one_destination_add_up_in_one_row,
    refusals_and_allowed_connections_of_one_destination_are_kept_apart,
    an_agents_destinations_beyond_the_bound_are_counted_together,
    the_first_connection_to_each_destination_goes_on_the_jobs_stream_the_rest_are_counted,
);

pub(super) fn tally(
    job: JobId,
    host: &str,
    verdict: EgressVerdict,
    at: DateTime<Utc>,
) -> EgressTally {
    let allowed = verdict == EgressVerdict::Allowed;
    EgressTally {
        job,
        traffic: EgressTraffic {
            role: Role::Builder,
            attempt: 1,
            host: host.to_owned(),
            port: 443,
            verdict,
            reason: (!allowed).then(|| format!("{host}:443 is not on this agent's allow-list")),
            connections: 2,
            bytes_sent: if allowed { 100 } else { 0 },
            bytes_received: if allowed { 1000 } else { 0 },
            cut_at_budget: 0,
            first_at: at,
            last_at: at,
        },
    }
}

async fn tallies_of_one_destination_add_up_in_one_row(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let first = timestamp_now();
    let later = first + TimeDelta::seconds(5);
    store
        .add_egress_traffic(&tally(job.id, "pypi.org", EgressVerdict::Allowed, first))
        .await
        .unwrap();
    store
        .add_egress_traffic(&tally(job.id, "pypi.org", EgressVerdict::Allowed, later))
        .await
        .unwrap();
    let rows = store.egress_traffic(job.id).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(
        (row.connections, row.bytes_sent, row.bytes_received),
        (4, 200, 2000)
    );
    assert_eq!((row.first_at, row.last_at), (first, later));
}

async fn refusals_and_allowed_connections_of_one_destination_are_kept_apart(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let now = timestamp_now();
    store
        .add_egress_traffic(&tally(job.id, "pypi.org", EgressVerdict::Allowed, now))
        .await
        .unwrap();
    store
        .add_egress_traffic(&tally(job.id, "pypi.org", EgressVerdict::Unlisted, now))
        .await
        .unwrap();
    let rows = store.egress_traffic(job.id).await.unwrap();
    let verdicts: Vec<(EgressVerdict, Option<&str>)> = rows
        .iter()
        .map(|r| (r.verdict, r.reason.as_deref()))
        .collect();
    let unlisted = Some("pypi.org:443 is not on this agent's allow-list");
    assert_eq!(
        verdicts,
        [
            (EgressVerdict::Unlisted, unlisted),
            (EgressVerdict::Allowed, None)
        ],
        "requests first"
    );
}

async fn an_agents_destinations_beyond_the_bound_are_counted_together(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let now = timestamp_now();
    let bound = usize::try_from(MAX_EGRESS_DESTINATIONS).unwrap();
    for n in 0..bound + 20 {
        let host = format!("name-{n}.example");
        store
            .add_egress_traffic(&tally(job.id, &host, EgressVerdict::Unlisted, now))
            .await
            .unwrap();
    }
    // A destination it already had still counts on its own row.
    store
        .add_egress_traffic(&tally(
            job.id,
            "name-0.example",
            EgressVerdict::Unlisted,
            now,
        ))
        .await
        .unwrap();
    let rows = store.egress_traffic(job.id).await.unwrap();
    assert_eq!(rows.len(), bound + 1, "the bound, and one row for the rest");
    let rest = rows
        .iter()
        .find(|r| r.host == "*")
        .expect("a row for the rest");
    assert_eq!((rest.port, rest.connections), (0, 40));
    let first = rows.iter().find(|r| r.host == "name-0.example").unwrap();
    assert_eq!(first.connections, 4);
}

async fn the_first_connection_to_each_destination_goes_on_the_jobs_stream_the_rest_are_counted(
    store: Store,
) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let now = timestamp_now();
    for (host, verdict) in [
        ("pypi.org", EgressVerdict::Allowed),
        ("pypi.org", EgressVerdict::Allowed),
        ("evil.example", EgressVerdict::Unlisted),
        ("pypi.org", EgressVerdict::Allowed),
    ] {
        store
            .add_egress_traffic(&tally(job.id, host, verdict, now))
            .await
            .unwrap();
    }
    let everything = StreamQuery {
        after: 0,
        until: None,
        limit: 100,
    };
    let entries = store.stream_entries(job.id, everything).await.unwrap();
    let egress: Vec<(String, EgressVerdict, u64)> = entries
        .iter()
        .filter_map(|entry| match &entry.body {
            StreamBody::Egress(t) => Some((t.host.clone(), t.verdict, t.connections)),
            _ => None,
        })
        .collect();
    assert_eq!(
        egress,
        [
            ("pypi.org".to_owned(), EgressVerdict::Allowed, 2),
            ("evil.example".to_owned(), EgressVerdict::Unlisted, 2)
        ]
    );
}
