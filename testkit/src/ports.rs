use std::net::{SocketAddr, TcpListener};

/// A port that was free on 127.0.0.1 a moment ago, picked at random below the
/// ephemeral range.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768–60999 on Linux): a port bind(0) hands
    // out is also a source port for outgoing connections, so one could be taken by
    // another test's connection before the process under test binds it (seen in CI:
    // "Address already in use"). Never the same port twice in one test binary.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = 10_000 + rand::random::<u16>() % 22_000;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// An offset that makes every one of `bases` + offset a free 127.0.0.1 port, for
/// programs that take one offset for a set of default ports.
pub fn free_port_offset(bases: &[u16]) -> u16 {
    let top = bases.iter().copied().max().unwrap_or(0);
    let room = u16::MAX - top;
    (0..1000u32)
        .map(|_| 1024u16.saturating_add(rand::random::<u16>() % room.saturating_sub(1024).max(1)))
        .find(|&off| {
            bases
                .iter()
                .all(|b| TcpListener::bind(("127.0.0.1", b + off)).is_ok())
        })
        .expect("an offset with every port free")
}

/// `127.0.0.1:<free port>`.
pub fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}
