//! The open-file limit: hundreds of concurrent streams need more descriptors than the usual
//! soft limit of 1024.
/// The soft limit aimed for (each stream is one socket here, two in the server).
const WANTED: libc::rlim_t = 65_536;

/// Raises the soft `RLIMIT_NOFILE` towards [`WANTED`], as far as the hard limit allows.
pub fn raise() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let wanted = WANTED.min(limit.rlim_max);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                eprintln!("could not raise the open-file limit to {wanted}");
            }
        }
    }
}
