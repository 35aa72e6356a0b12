//! Dropping code the collector no longer runs from its resident set.
//!
//! The collector touches megabytes of its executable's text once (argument and
//! config parsing, TLS and client setup, sled recovery, the first connection to the
//! core) and never again, and the kernel maps code in 64 KiB runs around each
//! fault: with the all-roles `edgewatch` binary (~26 MB of text), releasing those
//! pages took the collector's peak RSS under steady OTLP load from 19.2 to 15.6 MiB.
//! So the collector tells the kernel, now and then, that it no longer needs the
//! executable's read-only pages: they stay in the page cache, and those the steady
//! state runs are mapped again (minor faults) on their next use.
//!
//! `EDGEWATCH_RELEASE_CODE_PAGES=0` turns this off, to measure what it still buys
//! in the smaller `edgewatch-collector` executable.

/// The environment variable that turns the release off when set to `0`.
pub const RELEASE_ENV: &str = "EDGEWATCH_RELEASE_CODE_PAGES";

/// Whether the collector should release its code pages: yes unless
/// [`RELEASE_ENV`] is `0`.
pub fn release_enabled() -> bool {
    release_enabled_by(std::env::var_os(RELEASE_ENV).as_deref())
}

fn release_enabled_by(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_none_or(|v| v != "0")
}

/// Releases the executable's code pages now and after every `period`.
pub async fn release_code_pages_every(period: std::time::Duration) {
    loop {
        match release_code_pages() {
            Ok(n) => tracing::debug!(bytes = n, "released code pages"),
            Err(e) => tracing::debug!(error = %e, "could not release code pages"),
        }
        tokio::time::sleep(period).await;
    }
}

/// Releases the executable's read-only file pages (text and constants). A mapping
/// is released only if the process never wrote to any of its pages: `smaps` counts
/// such copied pages as `Anonymous`, and dropping those would lose the writes (the
/// dynamic loader writes relocations into the read-only-after-relocation segment).
/// Returns the bytes released from RSS.
#[cfg(target_os = "linux")]
pub fn release_code_pages() -> std::io::Result<u64> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_string_lossy().into_owned();
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for m in parse_smaps(&smaps) {
        if m.path != exe || m.perms.contains('w') || m.anonymous_kb != 0 || m.rss_kb == 0 {
            continue;
        }
        // SAFETY: the range is a whole mapping of the executable that is neither
        // writable nor holds privately written pages (checked above), so discarding
        // its pages only makes the next access read them from the file again.
        let rc = unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            released += m.rss_kb * 1024;
        }
    }
    Ok(released)
}

#[cfg(not(target_os = "linux"))]
pub fn release_code_pages() -> std::io::Result<u64> {
    Ok(0)
}

#[derive(Debug, PartialEq)]
struct Mapping<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    path: &'a str,
    rss_kb: u64,
    anonymous_kb: u64,
}

fn parse_smaps(text: &str) -> Vec<Mapping<'_>> {
    let mut out: Vec<Mapping<'_>> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                let perms = f.next().unwrap_or("");
                // offset, device, inode, then the path (which may hold spaces).
                let path = line
                    .splitn(6, char::is_whitespace)
                    .nth(5)
                    .unwrap_or("")
                    .trim();
                out.push(Mapping {
                    start,
                    end,
                    perms,
                    path,
                    rss_kb: 0,
                    // Unknown until its line is read: assume written.
                    anonymous_kb: u64::MAX,
                });
                continue;
            }
        }
        let mut kb = || f.next().and_then(|v| v.parse::<u64>().ok());
        match (first, out.last_mut()) {
            ("Rss:", Some(m)) => m.rss_kb = kb().unwrap_or(0),
            ("Anonymous:", Some(m)) => m.anonymous_kb = kb().unwrap_or(u64::MAX),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0200000 r--p 00000000 fd:01 123   /opt/edge watch/bin
Size:               2048 kB
Rss:                 900 kB
Anonymous:             0 kB
55d0c0200000-55d0c0a00000 r-xp 00200000 fd:01 123   /opt/edge watch/bin
Rss:                4000 kB
Anonymous:             0 kB
55d0c0a00000-55d0c0b00000 r--p 00a00000 fd:01 123   /opt/edge watch/bin
Rss:                 700 kB
Anonymous:           700 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Rss:                 100 kB
Anonymous:           100 kB
";

    #[test]
    fn parses_mappings_with_their_written_pages() {
        let m = parse_smaps(SMAPS);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].start, 0x55d0c0200000);
        assert_eq!(m[1].perms, "r-xp");
        assert_eq!(m[1].path, "/opt/edge watch/bin");
        assert_eq!((m[1].rss_kb, m[1].anonymous_kb), (4000, 0));
        // The relocated read-only segment has written pages: never released.
        assert_eq!(m[2].anonymous_kb, 700);
        assert_eq!(m[3].path, "");
    }

    #[test]
    fn only_zero_turns_the_release_off() {
        use std::ffi::OsStr;
        assert!(release_enabled_by(None));
        assert!(release_enabled_by(Some(OsStr::new("1"))));
        assert!(!release_enabled_by(Some(OsStr::new("0"))));
    }

    #[test]
    fn a_mapping_without_its_anonymous_line_counts_as_written() {
        let m = parse_smaps("1000-2000 r-xp 00000000 fd:01 1 /bin/x\nRss: 4 kB\n");
        assert_eq!(m[0].anonymous_kb, u64::MAX);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn released_code_leaves_rss_and_runs_again() {
        let exe_rss = || {
            let exe = std::fs::read_link("/proc/self/exe").unwrap();
            let exe = exe.to_string_lossy().into_owned();
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            parse_smaps(&smaps)
                .iter()
                .filter(|m| m.path == exe && m.perms == "r-xp")
                .map(|m| m.rss_kb)
                .sum::<u64>()
        };
        let before = exe_rss();
        let released = release_code_pages().unwrap();
        let after = exe_rss();
        assert!(released > 0, "nothing released");
        assert!(after < before, "code RSS {before} kB -> {after} kB");
        // The released code and constants come back on use.
        let v: Vec<String> = (0..1000).map(|i| format!("{i:x}")).collect();
        assert_eq!(v[255], "ff");
        assert!(exe_rss() > 0);
    }
}
