//! The command line and start-up, as a user meets them: what the real binary prints, how
//! it exits, and what it serves when no database is configured.
//!
//! 1. the database setting, in both builds: no `DATABASE_URL` serves, the database
//!    routes answering 503.

mod support;

use support::{Server, get};

// ---------------------------------------------------------------------------------------
// 1. The database setting
// ---------------------------------------------------------------------------------------

#[test]
fn users_id_answers_503_not_configured_without_database_url() {
    let server = Server::start(&[], &[]);
    for path in ["/users/1", "/db"] {
        let response = get(&server, path);
        assert_eq!(response.status, 503, "{path}: {response:?}");
        assert_eq!(
            response.body_text(),
            r#"{"error":"database not configured"}"#,
            "{path}"
        );
    }
}
