//! Protobuf messages kept as their encoded bytes. The generated server code treats
//! `confab.v1.Event` and `confab.v1.SendStreamRequest` as [`Raw`] (see `build.rs`): an event is
//! encoded once and the same reference-counted bytes go to every stream, and a `SendStream` item
//! arrives whole, so the handler decodes it and one bad item is answered on its stream instead of
//! ending it.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType, skip_field},
};

/// The encoding of an `M`, never decoded by prost: decoding as a [`Message`] keeps every byte
/// and never fails; encoding writes them as they are.
pub struct Raw<M>(Bytes, PhantomData<fn() -> M>);

impl<M> Raw<M> {
    /// `bytes`, taken to be an encoded `M`.
    pub fn new(bytes: Bytes) -> Self {
        Raw(bytes, PhantomData)
    }

    /// The encoded message.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl<M> Clone for Raw<M> {
    fn clone(&self) -> Self {
        Raw::new(self.0.clone())
    }
}

impl<M> Default for Raw<M> {
    fn default() -> Self {
        Raw::new(Bytes::new())
    }
}

impl<M> PartialEq for Raw<M> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<M> std::fmt::Debug for Raw<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes: events and requests carry message bodies.
        let name = std::any::type_name::<M>()
            .rsplit("::")
            .next()
            .unwrap_or("?");
        write!(f, "Raw<{name}>({} bytes)", self.0.len())
    }
}

impl<M> Message for Raw<M> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge(&mut self, mut buf: impl Buf) -> Result<(), DecodeError> {
        self.0 = buf.copy_to_bytes(buf.remaining());
        Ok(())
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Only reached through `merge_length_delimited`, which the server never uses.
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}
