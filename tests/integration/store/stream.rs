//! Each job's stream in the store: one sequence of positions for its
//! transitions and its agents' lines, read back after any position, and
//! where a follower resumes; run on a SQLite file and on PostgreSQL. Across
//! replicas (PostgreSQL): another store's appends reach this store's
//! subscribers.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use icarus::job::plan::Transition;
use icarus::job::{Phase, Reason, Role, timestamp_now};
use icarus::logs::LogStream;
use icarus::store::{LogLine, Store, StreamBody, StreamQuery};
use tokio_util::sync::CancellationToken;

use crate::support::{new_job, postgres_database_url};

on_both_databases!(
    transitions_and_lines_share_one_sequence_of_positions,
    a_follower_resumes_after_the_lines_at_the_last_timestamp,
);

fn line(message: &str, at: DateTime<Utc>, note: bool) -> LogLine {
    LogLine {
        role: Role::Builder,
        attempt: 1,
        stream: LogStream::Stdout,
        message: message.to_owned(),
        at,
        note,
    }
}

fn everything_after(after: i64) -> StreamQuery {
    StreamQuery {
        after,
        until: None,
        limit: 100,
    }
}

async fn transitions_and_lines_share_one_sequence_of_positions(store: Store) {
    let mut job = store.create_job(&new_job("t")).await.unwrap();
    let now = timestamp_now();
    let lines = [line("one", now, false), line("two", now, false)];
    let appended = store.append_log(job.id, &lines).await.unwrap();
    assert_eq!(appended.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    job.status.phase = Phase::Building;
    let transition = Transition {
        from: Phase::Pending,
        to: Phase::Building,
        reason: Reason::Admitted,
        message: None,
    };
    store.update_job(&job, Some(&transition)).await.unwrap();

    let entries = store
        .stream_entries(job.id, everything_after(0))
        .await
        .unwrap();
    let kinds: Vec<String> = entries
        .iter()
        .map(|entry| match &entry.body {
            StreamBody::Log(line) => format!("{}:{}", entry.seq, line.message),
            StreamBody::Status { status, .. } => format!("{}:{}", entry.seq, status.phase),
            StreamBody::Egress(traffic) => format!("{}:{}", entry.seq, traffic.host),
        })
        .collect();
    assert_eq!(kinds, ["1:pending", "2:one", "3:two", "4:building"]);
    assert_eq!(store.stream_position(job.id).await.unwrap(), Some(4));
    let later = store
        .stream_entries(job.id, everything_after(2))
        .await
        .unwrap();
    assert_eq!(later.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
}

async fn a_follower_resumes_after_the_lines_at_the_last_timestamp(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    // To the microsecond, as followers store them.
    let first = timestamp_now().trunc_subsecs(6);
    let last = first + TimeDelta::milliseconds(5);
    let lines = [
        line("12345", first, false),
        line("abc", last, false),
        line("de", last, false),
        line("[icarus] 3 lines dropped", last, true),
    ];
    store.append_log(job.id, &lines).await.unwrap();
    let resume = store.log_resume(job.id, Role::Builder, 1).await.unwrap();
    assert_eq!(resume.last_at, Some(last));
    assert_eq!(
        resume.lines_at_last, 2,
        "the note is Icarus's, not the agent's"
    );
    assert_eq!(resume.kept, 10);
    let other = store.log_resume(job.id, Role::Checker, 1).await.unwrap();
    assert_eq!(other.last_at, None);
}

#[tokio::test]
async fn postgres_another_replicas_lines_reach_this_replicas_subscribers() {
    let url = postgres_database_url().await;
    let writer = Store::connect(&url).await.unwrap();
    writer.migrate().await.unwrap();
    let reader = Store::connect(&url).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(reader.relay_changes(stop.clone()).unwrap());
    let mut events = reader.subscribe_streams();
    let job = writer.create_job(&new_job("t")).await.unwrap();
    // The relay listens once it is connected; appends before that are
    // read from the database by any subscriber.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let lines = [line("from the leader", timestamp_now(), false)];
    writer.append_log(job.id, &lines).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.recv().await.unwrap();
            if event
                .entries
                .iter()
                .any(|e| matches!(e.body, StreamBody::Log(_)))
            {
                return event;
            }
        }
    })
    .await
    .expect("the append was relayed");
    assert_eq!(event.job, job.id);
    assert_eq!(event.entries.len(), 1);
    assert_eq!(event.entries[0].seq, 2);
    stop.cancel();
}
