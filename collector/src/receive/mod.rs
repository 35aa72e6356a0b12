//! Receivers: OTLP (gRPC and HTTP, served by `edgewatch-otlp`) and Prometheus scrapes
//! (`scrape`), into the buffer.

pub mod otlp;
pub mod scrape;
