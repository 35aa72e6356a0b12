use std::net::{SocketAddr, TcpListener};

/// A port that was free on 127.0.0.1 a moment ago (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// `127.0.0.1:<free port>`.
pub fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}
