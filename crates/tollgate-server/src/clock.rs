//! The wall clock, read in one place. Proposers stamp it into commands;
//! apply functions, the engine and the model never read a clock.

use tollgate_model::UnixSeconds;

/// The wall clock, in Unix seconds. A clock before 1970 reads as 0, which
/// every staleness check treats as "long ago" (fails closed).
pub fn now() -> UnixSeconds {
    UnixSeconds(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    )
}

/// [`now`] as plain seconds, for code below the model (TLS certificate
/// expiry and reloads).
pub fn now_secs() -> i64 {
    now().0
}
