//! Raw TCP clients that misbehave (connect and say nothing, send half a request,
//! never read), and what a server process holds open for them, read from `/proc`:
//! whether a server closed a connection is seen in its file descriptors, not timed.

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};

/// Raises this process's soft limit on open files to its hard limit (children
/// inherit it); the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// `n` connections to `addr` that never complete a request: every other one has
/// sent `partial` (e.g. half a request line), the rest nothing. Their local ports
/// identify them in [`open_to`].
pub fn half_open(addr: SocketAddr, n: usize, partial: &[u8]) -> (Vec<TcpStream>, HashSet<u16>) {
    let mut conns = Vec::with_capacity(n);
    let mut ports = HashSet::with_capacity(n);
    for i in 0..n {
        let mut c = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        if i % 2 == 1 {
            c.write_all(partial)
                .unwrap_or_else(|e| panic!("write to {addr}: {e}"));
        }
        ports.insert(c.local_addr().expect("local address").port());
        conns.push(c);
    }
    (conns, ports)
}

/// How many of process `pid`'s file descriptors are TCP sockets connected to one of
/// `peer_ports` on 127.0.0.1 (the server's end of those clients' connections).
pub fn open_to(pid: u32, peer_ports: &HashSet<u16>) -> usize {
    let inodes = tcp_inodes_to(peer_ports);
    socket_inodes(pid)
        .iter()
        .filter(|i| inodes.contains(i))
        .count()
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Inodes of the sockets process `pid` holds.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Inodes of the IPv4 TCP sockets whose remote end is 127.0.0.1 on one of `ports`
/// (`/proc/net/tcp`: addresses are hex `ADDR:PORT`, the inode is the tenth field).
fn tcp_inodes_to(ports: &HashSet<u16>) -> HashSet<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, port) = f.get(2)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            // 127.0.0.1 in the kernel's byte order.
            if addr != "0100007F" || !ports.contains(&port) {
                return None;
            }
            f.get(9)?.parse().ok()
        })
        .collect()
}
