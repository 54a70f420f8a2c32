//! The process's open-file limit: every connection is a file descriptor, so a receiver with
//! `max_connections = 1024` under the common default soft limit of 1024 runs out of
//! descriptors (`accept` fails with `EMFILE`) before its own limit can shed anything.

/// Raises this process's soft limit of open files (`RLIMIT_NOFILE`) to its hard limit and
/// returns the new soft limit. Raising the soft limit needs no privilege; the hard limit is
/// left alone. Call it once at startup, before serving.
#[cfg(unix)]
pub fn raise_fd_limit() -> std::io::Result<u64> {
    // SAFETY: `getrlimit` and `setrlimit` only read or write the struct we pass.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(limit.rlim_cur as u64)
    }
}

/// Does nothing where there is no `RLIMIT_NOFILE`; returns 0.
#[cfg(not(unix))]
pub fn raise_fd_limit() -> std::io::Result<u64> {
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_raise_fd_limit_reaches_the_hard_limit() {
        let soft = raise_fd_limit().unwrap();
        // SAFETY: as above.
        let hard = unsafe {
            let mut limit: libc::rlimit = std::mem::zeroed();
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            assert_eq!(limit.rlim_cur, limit.rlim_max);
            limit.rlim_max
        };
        assert_eq!(soft, hard as u64);
        // Idempotent.
        assert_eq!(raise_fd_limit().unwrap(), soft);
    }
}
