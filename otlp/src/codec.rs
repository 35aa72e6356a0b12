//! A gRPC codec that passes request bodies through as bytes.
//!
//! tonic's generated OTLP service decodes every request into prost structs; edgewatch
//! needs the encoded bytes instead (the collector stores them, the aggregator splits
//! a forwarded batch at entry boundaries before decoding), so the export method is
//! served and called through this codec. Responses stay ordinary prost messages.

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use std::marker::PhantomData;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// `Encode` is what this side sends, `Decode` what it receives; one of the two is
/// raw [`Bytes`], the other a prost message.
pub struct RawCodec<E, D> {
    max_decoded: usize,
    _p: PhantomData<fn(E, D)>,
}

impl<E, D> RawCodec<E, D> {
    /// `max_decoded` bounds the decoded (decompressed) size of a message; over it the
    /// call fails with RESOURCE_EXHAUSTED, as OTLP asks for oversized requests.
    pub fn new(max_decoded: usize) -> Self {
        RawCodec {
            max_decoded,
            _p: PhantomData,
        }
    }
}

pub trait Wire: Sized + Send + 'static {
    fn encode_to(self, dst: &mut EncodeBuf<'_>) -> Result<(), Status>;
    fn decode_from(src: &mut DecodeBuf<'_>) -> Result<Self, Status>;
}

impl Wire for Bytes {
    fn encode_to(self, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(self);
        Ok(())
    }
    fn decode_from(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        Ok(src.copy_to_bytes(src.remaining()))
    }
}

impl Wire for crate::ExportMetricsServiceResponse {
    fn encode_to(self, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        self.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
    fn decode_from(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        Message::decode(src)
            .map_err(|e| Status::internal(format!("malformed export response: {e}")))
    }
}

pub struct WireEncoder<E>(PhantomData<fn(E)>);
pub struct WireDecoder<D> {
    max: usize,
    _p: PhantomData<fn(D)>,
}

impl<E: Wire> Encoder for WireEncoder<E> {
    type Item = E;
    type Error = Status;
    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode_to(dst)
    }
}

impl<D: Wire> Decoder for WireDecoder<D> {
    type Item = D;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        if src.remaining() > self.max {
            return Err(Status::resource_exhausted(format!(
                "request of {} bytes exceeds the limit of {} bytes",
                src.remaining(),
                self.max
            )));
        }
        D::decode_from(src).map(Some)
    }
}

impl<E: Wire, D: Wire> Codec for RawCodec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = WireEncoder<E>;
    type Decoder = WireDecoder<D>;
    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder {
            max: self.max_decoded,
            _p: PhantomData,
        }
    }
}

/// Server side: receives request bytes, sends prost responses.
pub type ServerCodec = RawCodec<crate::ExportMetricsServiceResponse, Bytes>;
/// Client side: sends request bytes, receives prost responses.
pub type ClientCodec = RawCodec<Bytes, crate::ExportMetricsServiceResponse>;
