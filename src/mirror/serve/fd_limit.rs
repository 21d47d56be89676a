//! The file-descriptor budget: how many connections the server may hold open at once.
//!
//! Each connection costs its socket and, while it sends a blob, that blob's open file;
//! the rest of the process (the listener, the runtime's epoll and wakers, stdio, reads
//! of index.json) needs a few more. Past the budget the server stops accepting, so
//! new connections wait in the listen backlog rather than failing with `EMFILE`.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use super::ServeError;

/// Descriptors kept back from connections for the rest of the process.
const RESERVE: u64 = 64;

/// Descriptors one connection may hold: its socket and one blob file.
const PER_CONNECTION: u64 = 2;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as Go's runtime does at start,
/// and returns the soft limit now in force (`None`: unlimited).
pub fn raise_fd_limit() -> Result<Option<u64>, ServeError> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return Ok(limit.current);
    }
    // An unlimited hard limit cannot be the soft one on Linux (it is capped by
    // fs.nr_open); leave the soft limit as it is then.
    let Some(maximum) = limit.maximum else {
        return Ok(limit.current);
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        },
    )
    .map_err(|e| ServeError::FdLimit(e.into()))?;
    tracing::debug!(
        "raised the open-file limit from {} to {maximum}",
        limit
            .current
            .map_or("unlimited".to_string(), |n| n.to_string())
    );
    Ok(Some(maximum))
}

/// The connections the current soft `RLIMIT_NOFILE` leaves room for: the limit less
/// [`RESERVE`], over [`PER_CONNECTION`]; at least one.
pub(super) fn default_max_connections() -> usize {
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    connections_for(soft)
}

fn connections_for(soft: u64) -> usize {
    let n = soft.saturating_sub(RESERVE) / PER_CONNECTION;
    usize::try_from(n)
        .unwrap_or(usize::MAX)
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS)
}

#[cfg(test)]
mod tests {
    use super::connections_for;

    #[test]
    fn budget() {
        assert_eq!(connections_for(1024), 480);
        assert_eq!(connections_for(20), 1);
        assert_eq!(
            connections_for(u64::MAX),
            tokio::sync::Semaphore::MAX_PERMITS
        );
    }
}
