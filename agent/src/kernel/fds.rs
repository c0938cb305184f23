//! A reserve of file descriptors for the undo path. Connection limits keep the agent far
//! from its descriptor limit, but a revert must not depend on that: if an undo step hits
//! EMFILE/ENFILE, the reserve is released and the step tried once more, so reverting a
//! fault never fails for want of a descriptor that an idle connection holds.

use std::sync::Mutex;

/// Descriptors held back: enough for a journal rewrite, a pidfd, a cgroup file and a
/// netlink or ioctl socket at once.
const RESERVE: usize = 8;

static SPARE: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());

/// Fills the reserve (at start, and again after it was used).
pub fn refill() {
    let mut spare = SPARE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    while spare.len() < RESERVE {
        match std::fs::File::open("/dev/null") {
            Ok(f) => spare.push(f),
            Err(_) => break,
        }
    }
}

fn exhausted(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Runs `op`; if it failed for want of descriptors, frees the reserve and runs it again.
pub fn retry<T>(mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    match op() {
        Err(e) if exhausted(&e) => {
            SPARE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
            let again = op();
            refill();
            again
        }
        other => other,
    }
}

/// Raises the soft descriptor limit to the hard one (what Go's runtime does at start):
/// the service unit sets the hard limit, and the default soft 1024 is not enough for the
/// connection limits plus the undo reserve.
pub fn raise_limit() -> std::io::Result<u64> {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exhausted_step_is_tried_again_with_the_reserve() {
        refill();
        let mut calls = 0;
        let r = retry(|| {
            calls += 1;
            if calls == 1 {
                Err(std::io::Error::from_raw_os_error(libc::EMFILE))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.unwrap(), 2);
        // Any other error is returned as it is, once.
        let mut calls = 0;
        let r: std::io::Result<()> = retry(|| {
            calls += 1;
            Err(std::io::Error::from_raw_os_error(libc::EACCES))
        });
        assert_eq!((r.unwrap_err().raw_os_error(), calls), (Some(libc::EACCES), 1));
        assert_eq!(SPARE.lock().unwrap().len(), RESERVE);
    }
}
