//! Credentials on the receiving side shared by both roles: the bearer token of a
//! request, and the start-up warning for a listener anyone can reach.

use std::net::SocketAddr;

/// The token of an `Authorization` header value `Bearer <token>` (scheme
/// case-insensitive, RFC 6750 §2.1); None for another scheme or an empty token.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The bearer token of a request's headers (gRPC metadata are headers too).
pub fn bearer_token_of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_owned)
}

/// Whether an address is reachable from other hosts (not a loopback address).
pub fn exposed(addr: SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// Logs a warning at start when `listener` (a name such as "OTLP gRPC") is bound
/// beyond loopback and no credentials are configured for it.
pub fn warn_if_open(listener: &str, addr: SocketAddr, authenticated: bool) {
    if exposed(addr) && !authenticated {
        tracing::warn!(
            listener,
            %addr,
            "listening beyond loopback without authentication: anyone who reaches this port can use it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        for (header, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("BEARER abc.def-1", Some("abc.def-1")),
            ("Basic dXNlcjpwdw==", None),
            ("Bearer", None),
            ("Bearer ", None),
            ("abc", None),
            ("", None),
        ] {
            assert_eq!(bearer_token(header), want, "{header:?}");
        }
    }

    #[test]
    fn loopback_is_not_exposed() {
        for (addr, want) in [
            ("127.0.0.1:1", false),
            ("[::1]:1", false),
            ("0.0.0.0:1", true),
            ("[::]:1", true),
            ("10.1.2.3:1", true),
        ] {
            assert_eq!(exposed(addr.parse().unwrap()), want, "{addr}");
        }
    }
}
