//! Receivers: OTLP (gRPC and HTTP, served by `edgewatch-otlp`) into the buffer.

pub mod otlp;
