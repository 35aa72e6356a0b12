//! Who a verified client certificate names.

use rustls::pki_types::CertificateDer;

/// The Subject CN of `cert` (the end-entity certificate a TLS listener verified);
/// `None` when it has none or it is not a string.
pub fn subject_cn(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The Subject CN of the first (end-entity) certificate of a chain.
pub fn chain_cn(chain: Option<&[CertificateDer<'_>]>) -> Option<String> {
    chain.and_then(|c| c.first()).and_then(subject_cn)
}
