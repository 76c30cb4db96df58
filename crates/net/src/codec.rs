//! The wire format of the sync protocol stream: one length-prefixed frame per
//! request and one per response.
//!
//! A frame is a `u32` big-endian length followed by that many opaque bytes.
//! The length is checked against a cap *before* any byte of the body is
//! read, and the body buffer grows only as bytes actually arrive, so a peer
//! that claims a large frame and sends nothing costs us nothing.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

/// The protocol name negotiated for sync request/response streams.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/basic/sync/0");
/// The protocol name negotiated for joining a database (pairing a new
/// device with the inviting one): the same framing, another stream protocol.
pub const JOIN_PROTOCOL: StreamProtocol = StreamProtocol::new("/basic/join/0");

/// Bytes taken by the length prefix.
const PREFIX_LEN: usize = 4;

/// Reads one frame of at most `max` bytes.
///
/// Errors: [`io::ErrorKind::InvalidData`] if the announced length exceeds
/// `max` (nothing is allocated for it), [`io::ErrorKind::UnexpectedEof`] if
/// the stream ends before the announced length.
pub(crate) async fn read_frame<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut prefix = [0u8; PREFIX_LEN];
    io.read_exact(&mut prefix).await?;
    let claimed = u32::from_be_bytes(prefix);
    let len = usize::try_from(claimed).map_err(|_| oversized(u64::from(claimed), max))?;
    if len > max {
        return Err(oversized(u64::from(claimed), max));
    }
    // Grow with the data received, never with the claim.
    let mut frame = Vec::new();
    io.take(u64::from(claimed)).read_to_end(&mut frame).await?;
    if frame.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame truncated: {} of {len} bytes", frame.len()),
        ));
    }
    Ok(frame)
}

/// Writes one frame, refusing (with [`io::ErrorKind::InvalidInput`]) a
/// frame longer than `max` or than a `u32` can announce.
pub(crate) async fn write_frame<T>(io: &mut T, frame: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let len = u32::try_from(frame.len()).ok().filter(|_| frame.len() <= max).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds the cap of {max}", frame.len()),
        )
    })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(frame).await?;
    io.flush().await
}

fn oversized(claimed: u64, max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("frame of {claimed} bytes announced, cap is {max}"),
    )
}

/// Request-response codec for [`SYNC_PROTOCOL`] and [`JOIN_PROTOCOL`]: opaque byte frames with
/// separate caps for requests and responses.
#[derive(Debug, Clone)]
pub(crate) struct FrameCodec {
    /// Largest request frame read or written.
    pub(crate) max_request_bytes: usize,
    /// Largest response frame read or written.
    pub(crate) max_response_bytes: usize,
    /// Inbound frames refused for announcing more than the cap, shared by
    /// every clone (libp2p does not report inbound read failures).
    pub(crate) oversized: Arc<AtomicU64>,
}

impl FrameCodec {
    async fn read<T>(&self, io: &mut T, max: usize) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let result = read_frame(io, max).await;
        if let Err(e) = &result {
            if e.kind() == io::ErrorKind::InvalidData {
                self.oversized.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(error = %e, "dropping sync stream");
        }
        result
    }
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read(io, self.max_request_bytes).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read(io, self.max_response_bytes).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request, self.max_request_bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response, self.max_response_bytes).await
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::io::Cursor;

    use super::*;

    fn encode(frame: &[u8], max: usize) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        block_on(write_frame(&mut out, frame, max)).unwrap();
        out.into_inner()
    }

    #[test]
    fn round_trip() {
        for frame in [&b""[..], b"x", &[7u8; 1000]] {
            let wire = encode(frame, 1000);
            assert_eq!(wire.len(), 4 + frame.len());
            assert_eq!(&wire[..4], &(frame.len() as u32).to_be_bytes());
            let read = block_on(read_frame(&mut Cursor::new(wire), 1000)).unwrap();
            assert_eq!(read, frame);
        }
    }

    #[test]
    fn consecutive_frames_do_not_bleed() {
        let mut wire = encode(b"first", 16);
        wire.extend(encode(b"second", 16));
        let mut io = Cursor::new(wire);
        assert_eq!(block_on(read_frame(&mut io, 16)).unwrap(), b"first");
        assert_eq!(block_on(read_frame(&mut io, 16)).unwrap(), b"second");
    }

    #[test]
    fn oversized_prefix_is_rejected_before_reading_the_body() {
        // Claims 4 GiB - 1 and carries nothing: must fail on the prefix alone,
        // without allocating (an allocation of the claim would abort the test).
        let wire = u32::MAX.to_be_bytes().to_vec();
        let err = block_on(read_frame(&mut Cursor::new(wire), 1024)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // One byte over the cap, body present: still rejected, body untouched.
        let mut wire = 11u32.to_be_bytes().to_vec();
        wire.extend([0u8; 11]);
        let mut io = Cursor::new(wire);
        let err = block_on(read_frame(&mut io, 10)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(io.position(), 4, "only the prefix was consumed");
    }

    #[test]
    fn frame_at_the_cap_is_accepted() {
        let wire = encode(&[1u8; 10], 10);
        assert_eq!(block_on(read_frame(&mut Cursor::new(wire), 10)).unwrap().len(), 10);
    }

    #[test]
    fn truncated_frame_is_unexpected_eof() {
        let mut wire = encode(b"hello world", 64);
        wire.truncate(wire.len() - 3);
        let err = block_on(read_frame(&mut Cursor::new(wire), 64)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let err = block_on(read_frame(&mut Cursor::new(vec![0u8, 0]), 64)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "truncated prefix");
    }

    #[test]
    fn writing_over_the_cap_is_refused() {
        let mut out = Cursor::new(Vec::new());
        let err = block_on(write_frame(&mut out, &[0u8; 11], 10)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(out.into_inner().is_empty(), "nothing written");
    }
}
