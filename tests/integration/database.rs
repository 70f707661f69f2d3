//! What clients see when the database goes away: 503s with a clear message,
//! never a 500 or a crash, and service again once it is back.

use crate::support::{TestServer, postgres_admin_url};

/// Refuses new connections first, then ends the open ones.
async fn terminate_connections(database: &str) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .unwrap();
    let refuse = format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false");
    sqlx::query(&refuse).execute(&mut admin).await.unwrap();
    let terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()";
    sqlx::query(terminate)
        .bind(database)
        .execute(&mut admin)
        .await
        .unwrap();
}

async fn allow_connections(database: &str) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .unwrap();
    sqlx::query(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dead_database_gives_503_not_500_and_service_resumes_when_it_returns() {
    let server = TestServer::postgres().await;
    let id = server.spawn("t").await;
    let database = server
        .config
        .database
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();

    terminate_connections(&database).await;
    let (code, body) = server.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["detail"], "database unreachable");
    let (code, body) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        !body["detail"].as_str().unwrap().contains("pg_"),
        "no database internals leak: {body}"
    );
    let (code, _) = server
        .post("/jobs/spawn", serde_json::json!({"task": "lost?"}))
        .await;
    assert_eq!(code, 503);
    let (code, _) = server.get("/healthz").await;
    assert_eq!(code, 200, "liveness does not depend on the database");

    allow_connections(&database).await;
    let (code, _) = server.get("/readyz").await;
    assert_eq!(code, 200);
    // The controller retried through the outage and carries on.
    server.wait_for_builder(id).await;
}
