//! A query that is not one read-only statement, uses an undeclared parameter, names an
//! unknown role or does not compile against the database stops the start, naming its
//! file and line; and what gets past the text's check is refused by the database.

use serde_json::json;

use super::spawn;
use crate::common::{Backend, Spawn, backends, master, q};

/// The error the server refuses to start with when `queries/q.sql` is `text`.
async fn start_error(backend: &Backend, file: &str, text: &str) -> String {
    match Spawn::new(backend).query(file, text).try_start().await {
        Ok(_) => panic!(
            "{}: the server started with {file}:\n{text}",
            backend.name()
        ),
        Err(e) => e,
    }
}

#[tokio::test]
async fn bad_query_files_stop_the_start_naming_file_and_line() {
    let cases: [(&str, &str, usize, &str); 13] = [
        ("q.sql", "SELECT 1", 1, "no `-- roles:` line"),
        (
            "q.sql",
            "-- roles: Boss\nSELECT 1",
            1,
            "unknown role `Boss`",
        ),
        (
            "q.sql",
            "-- roles: User\n-- author: me\nSELECT 1",
            2,
            "unknown header `author`",
        ),
        (
            "q.sql",
            "-- roles: User\nSELECT 1;\nDELETE FROM \"users\"",
            3,
            "`DELETE` is not allowed",
        ),
        (
            "q.sql",
            "-- roles: User\nSELECT 1;\nSELECT 2",
            2,
            "more than one statement",
        ),
        (
            "q.sql",
            "-- roles: User\n\nUPDATE \"users\" SET \"role\" = 'Admin'",
            3,
            "not `UPDATE`",
        ),
        (
            "q.sql",
            "-- roles: User\nSELECT * FROM \"users\"\nWHERE \"role\" = {{role}}",
            3,
            "`{{role}}` is not declared",
        ),
        (
            "q.sql",
            "-- roles: User\n-- params: role, age\nSELECT {{role}}",
            2,
            "`age` is declared but",
        ),
        (
            "q.sql",
            "-- roles: User\n-- params: q\nSELECT * FROM \"users\" WHERE \"email\" LIKE '%{{q}}%'",
            3,
            "inside quotes",
        ),
        // The database's own check: a typo stops the start too.
        (
            "q.sql",
            "-- roles: User\nSELECT \"email\"\nFROM \"users\"\nWHERE nosuch = 1",
            0,
            "nosuch",
        ),
        (
            "q.sql",
            "-- roles: User\nSELECT \"email\" FROM \"nosuch_table\"",
            0,
            "nosuch_table",
        ),
        ("q.sql", "-- roles: User\nSELEC 1", 2, "not `SELEC`"),
        (
            "q.txt",
            "-- roles: User\nSELECT 1",
            0,
            "only <name>.sql files",
        ),
    ];
    for backend in &backends() {
        let b = backend.name();
        for (file, text, line, wanted) in cases {
            let error = start_error(backend, file, text).await;
            let named = if line == 0 {
                file.to_string()
            } else {
                format!("{file}:{line}: ")
            };
            assert!(
                error.contains(&format!("queries/{named}")) && error.contains(wanted),
                "{b} {text:?}: {error}"
            );
        }
        // The database points at the line of an unknown column: SQLite gives no
        // position, so there it is the first SQL line.
        let error = start_error(
            backend,
            "q.sql",
            "-- roles: User\nSELECT \"email\"\nFROM \"users\"\nWHERE nosuch = 1",
        )
        .await;
        let line = if matches!(backend, Backend::Sqlite) {
            2
        } else {
            4
        };
        assert!(error.contains(&format!("q.sql:{line}: ")), "{b}: {error}");
    }
}

#[tokio::test]
async fn a_missing_queries_directory_means_no_queries() {
    let backend = &backends()[0];
    let app = Spawn::new(backend).start().await;
    let (status, body) = app.get("/1/query/data/anything", &master()).await;
    assert_eq!(status, 404, "{body}");
}

/// The database refuses a write whatever the text check let through: the store runs a
/// query in a read-only transaction (SQLite: a read-only connection).
#[tokio::test]
async fn a_write_that_gets_past_the_check_is_refused_by_the_database() {
    use livebase::schema::value::SqlValue;
    use livebase::store::read_only::{ReadError, ReadLimits};
    for backend in &backends() {
        let app = spawn(backend).start().await;
        let b = backend.name();
        let store = &app.state.store;
        let limits = ReadLimits {
            max_rows: 10,
            timeout: std::time::Duration::from_secs(5),
        };
        let mut sql = store.sql();
        sql.push(r#"INSERT INTO "users" ("email", "role") VALUES ("#)
            .bind(SqlValue::Text("sneaky@q.test".into()))
            .push(", 'Admin')");
        match store.read_only(&sql, limits).await {
            Err(ReadError::Refused { message, .. }) => {
                assert!(message.contains("read"), "{b}: {message}")
            }
            other => panic!("{b}: a write ran: {other:?}"),
        }
        let all = app.all_rows("users").await;
        assert!(
            all.iter().all(|u| u["email"] != "sneaky@q.test"),
            "{b}: the row was written"
        );
    }
}

/// PostgreSQL: a function that writes passes the text check and compiles, and the
/// read-only transaction refuses it when it runs.
#[tokio::test]
async fn a_writing_function_is_refused_at_run_time_on_postgres() {
    for backend in &backends() {
        if matches!(backend, Backend::Sqlite) {
            continue;
        }
        let app = spawn(backend)
            .query(
                "next_id.sql",
                "-- roles: User\nSELECT nextval(pg_get_serial_sequence('\"users\"', 'id')) AS n",
            )
            .start()
            .await;
        let (status, body) = app
            .get(
                &format!("/1/query/data/next_id?parameters={}", q(&json!({}))),
                &master(),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .contains("read-only transaction"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn more_rows_than_the_cap_is_an_error_not_a_cut_answer() {
    for backend in &backends() {
        let b = backend.name();
        let app = spawn(backend)
            .query(
                "many.sql",
                "-- roles: User\nWITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6)\nSELECT i FROM n",
            )
            .config(|c| c.max_page_size = 5)
            .start()
            .await;
        let (status, body) = app.get("/1/query/data/many", &master()).await;
        assert_eq!(status, 400, "{b}: {body}");
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .contains("more than 5 rows"),
            "{b}: {body}"
        );
    }
}

/// A query that computes for longer than `--query-time-limit-ms` is stopped (on SQLite
/// by interrupting the statement, on PostgreSQL by `statement_timeout`) and the
/// connection serves the next query.
#[tokio::test]
async fn a_query_past_its_time_limit_is_stopped() {
    for backend in &backends() {
        let b = backend.name();
        let app = spawn(backend)
            .query(
                "spin.sql",
                "-- roles: User\nWITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)\nSELECT COUNT(*) AS c FROM n",
            )
            .config(|c| {
                c.query_time_limit_ms = 300;
                c.db_pool_size = 1;
            })
            .start()
            .await;
        let started = std::time::Instant::now();
        let (status, body) = app.get("/1/query/data/spin", &master()).await;
        assert_eq!(status, 503, "{b}: {body}");
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .contains("longer than 300 ms"),
            "{b}: {body}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "{b}");
        // The one query connection is usable again (its old deadline is not kept).
        let (status, body) = app
            .get(
                &format!("/1/query/data/echo?parameters={}", q(&json!({"t": "ok"}))),
                &master(),
            )
            .await;
        assert_eq!((status, body), (200, json!([{ "t": "ok" }])), "{b}");
    }
}
