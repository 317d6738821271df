//! The database routes. Each builds a job for the worker pool; the loop never waits on it.
//!
//! Without the `postgres` feature they answer `503 database not configured`.
//!
//! What it is not: the pool. Jobs here only say which SQL to run and how to render the
//! row; connecting, queueing, cancelling and closing are `db::pool`'s. Invariant: every
//! parameter is bound, never spliced into SQL text.

use crate::handler::{Answer, Ctx};

#[cfg(feature = "postgres")]
pub use with_db::{random_world, user_by_id};
#[cfg(not(feature = "postgres"))]
pub use without_db::{random_world, user_by_id};

#[cfg(feature = "postgres")]
mod with_db {
    use std::cell::Cell;
    use std::hash::{BuildHasher, RandomState};

    use super::{Answer, Ctx};
    use crate::http::response::{Response, Status};

    /// The reference query. PostgreSQL renders the row as JSON itself (`row_to_json`), so
    /// every column type — numeric, timestamps, arrays, json, NULL — comes out exactly as
    /// PostgreSQL means it, with no type mapping in this crate. The id is a bound
    /// parameter, never SQL text.
    const USER_BY_ID: &str =
        "SELECT row_to_json(u)::text FROM (SELECT * FROM users WHERE id = $1::bigint) u";

    pub fn user_by_id(ctx: &mut Ctx<'_>, id: i64) -> Answer {
        ctx.query(Box::new(move |db| {
            let row = db.query_opt(USER_BY_ID, &[&id])?;
            Ok(match row {
                Some(row) => Response::json(Status::OK, row.get::<_, String>(0)),
                None => Response::json_static(Status::OK, "null"),
            })
        }))
    }

    /// TechEmpower's single-query test: one random row of the 10,000-row `world` table.
    const WORLD_BY_ID: &str = "SELECT id, randomnumber FROM world WHERE id = $1";

    pub fn random_world(ctx: &mut Ctx<'_>) -> Answer {
        let id = (next_random() % 10_000) as i32 + 1;
        ctx.query(Box::new(move |db| {
            let row = db.query_opt(WORLD_BY_ID, &[&id])?;
            Ok(match row {
                Some(row) => {
                    let (id, n): (i32, i32) = (row.get(0), row.get(1));
                    Response::json(Status::OK, format!("{{\"id\":{id},\"randomNumber\":{n}}}"))
                }
                None => Response::error(Status::NOT_FOUND, "no such row"),
            })
        }))
    }

    thread_local! {
        /// xorshift64 state, seeded from the OS's randomness that `RandomState` already
        /// draws for hash maps (no `rand` crate, no clock read).
        static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
    }

    fn next_random() -> u64 {
        RNG.with(|state| {
            let mut x = state.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            state.set(x);
            x
        })
    }
}

#[cfg(not(feature = "postgres"))]
mod without_db {
    use super::{Answer, Ctx};
    use crate::handler::not_configured;

    pub fn user_by_id(_ctx: &mut Ctx<'_>, _id: i64) -> Answer {
        Answer::Now(not_configured())
    }

    pub fn random_world(_ctx: &mut Ctx<'_>) -> Answer {
        Answer::Now(not_configured())
    }
}
