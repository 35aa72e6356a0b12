//! OTLP → Prometheus conversion.
