//! A gRPC server codec that passes request bodies through as bytes.
//!
//! tonic's generated OTLP service decodes every request into prost structs; edgewatch
//! needs the encoded bytes instead (the collector stores them, the aggregator splits
//! a forwarded batch at entry boundaries before decoding), so the export method is
//! served through this codec. Responses stay ordinary prost messages. (The client
//! side is [`crate::client`].)

use bytes::{Buf, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::ExportMetricsServiceResponse;

/// Decodes request bodies as [`Bytes`], encodes prost responses.
pub struct ServerCodec {
    max_decoded: usize,
}

impl ServerCodec {
    /// `max_decoded` bounds the decoded (decompressed) size of a request; over it the
    /// call fails with RESOURCE_EXHAUSTED, as OTLP asks for oversized requests.
    pub fn new(max_decoded: usize) -> Self {
        ServerCodec { max_decoded }
    }
}

pub struct ResponseEncoder;

pub struct BodyDecoder {
    max: usize,
}

impl Encoder for ResponseEncoder {
    type Item = ExportMetricsServiceResponse;
    type Error = Status;
    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for BodyDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        if src.remaining() > self.max {
            return Err(Status::resource_exhausted(format!(
                "request of {} bytes exceeds the limit of {} bytes",
                src.remaining(),
                self.max
            )));
        }
        // A copy of exactly the body: `copy_to_bytes` would share tonic's read or
        // decompression buffer, whose capacity grows by doubling, so a held request
        // could pin up to twice the bytes the ingest budget counts for it.
        let mut body = bytes::BytesMut::with_capacity(src.remaining());
        while src.has_remaining() {
            let chunk = src.chunk();
            body.extend_from_slice(chunk);
            let n = chunk.len();
            src.advance(n);
        }
        Ok(Some(body.freeze()))
    }
}

impl Codec for ServerCodec {
    type Encode = ExportMetricsServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = BodyDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        BodyDecoder {
            max: self.max_decoded,
        }
    }
}
