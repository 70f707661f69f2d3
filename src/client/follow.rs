//! A job's phases as they change: from the WebSocket stream
//! (`WS /jobs/{id}/stream`, pushed by the server), or, when the stream
//! cannot be opened or breaks, by polling `GET /jobs/{id}/status`.
//!
//! The following runs as a task of its own that sends [`Update`]s, so the
//! view that reads them can redraw in between without cancelling a read.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::error::Error;
use super::http::{Client, detail_of};
use crate::api::models::JobStatusResponse;
use crate::job::{JobId, Phase};

/// How often the status is read when there is no stream.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long the stream may take to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How many reads in a row may fail for want of the server (a restart)
/// before following gives up.
const UNREACHABLE_POLLS: u32 = 30;

/// What the follower has to say.
#[derive(Debug)]
pub enum Update {
    /// The job reached another phase.
    Status(Box<JobStatusResponse>),
    /// There is no stream (why), so the status is polled from now on.
    Polling(String),
    /// Following failed: the job or the server is gone.
    Failed(Error),
}

/// A job being followed; dropping it stops the following.
pub struct Following {
    pub updates: mpsc::Receiver<Update>,
    task: JoinHandle<()>,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows job `id`, last seen in `phase`, until it reaches a terminal phase.
pub fn follow(client: Client, id: JobId, phase: Phase) -> Following {
    let (sender, updates) = mpsc::channel(16);
    let task = tokio::spawn(run(client, id, phase, sender));
    Following { updates, task }
}

async fn run(client: Client, id: JobId, mut phase: Phase, updates: mpsc::Sender<Update>) {
    let why = match stream(&client, id, &mut phase, &updates).await {
        Ended::Done => return,
        Ended::Broke(why) => why,
    };
    if updates.send(Update::Polling(why)).await.is_err() {
        return;
    }
    poll(&client, id, phase, &updates).await;
}

enum Ended {
    /// The job ended, or nobody listens any more.
    Done,
    /// The stream could not be had or broke, for this reason.
    Broke(String),
}

async fn stream(
    client: &Client,
    id: JobId,
    phase: &mut Phase,
    updates: &mpsc::Sender<Update>,
) -> Ended {
    let request = match client.stream_request(&format!("/jobs/{id}/stream")) {
        Ok(request) => request,
        Err(error) => return Ended::Broke(error.to_string()),
    };
    let connecting = tokio::time::timeout(OPEN_TIMEOUT, tokio_tungstenite::connect_async(request));
    let mut socket = match connecting.await {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(error)) => return Ended::Broke(refused(client, id, error)),
        Err(_) => return Ended::Broke("the live stream did not open in time".to_owned()),
    };
    while let Some(message) = socket.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(error) => return Ended::Broke(format!("the live stream broke: {error}")),
        };
        let Ok(status) = serde_json::from_str::<JobStatusResponse>(&text) else {
            continue;
        };
        if status.status != *phase {
            *phase = status.status;
            if updates
                .send(Update::Status(Box::new(status)))
                .await
                .is_err()
            {
                return Ended::Done;
            }
        }
        if phase.is_terminal() {
            return Ended::Done;
        }
    }
    Ended::Broke("the server closed the live stream".to_owned())
}

/// Why the stream was not opened, in the words of the server's answer if it sent one.
fn refused(client: &Client, id: JobId, error: WsError) -> String {
    match error {
        WsError::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let request = format!("GET /jobs/{id}/stream");
            let refusal = client.refusal(&request, response.status(), detail_of(&body));
            format!("the live stream was refused: {refusal}")
        }
        other => format!("the live stream could not be opened: {other}"),
    }
}

async fn poll(client: &Client, id: JobId, mut phase: Phase, updates: &mpsc::Sender<Update>) {
    let path = format!("/jobs/{id}/status");
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    let mut unreachable = 0;
    while !phase.is_terminal() {
        interval.tick().await;
        let status = match client.get_as::<JobStatusResponse>(&path).await {
            Ok(status) => status,
            Err(Error::Unreachable { .. } | Error::Unavailable { .. })
                if unreachable < UNREACHABLE_POLLS =>
            {
                unreachable += 1;
                continue;
            }
            Err(error) => {
                let _ = updates.send(Update::Failed(error)).await;
                return;
            }
        };
        unreachable = 0;
        if status.status != phase {
            phase = status.status;
            if updates
                .send(Update::Status(Box::new(status)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
