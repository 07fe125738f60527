//! Length-prefixed frames: each message as a little-endian u32 byte count, then the
//! bytes. The requests file the benchmark writes, and the responses file it reads back.

use bytes::{Buf, Bytes};

/// The frames of `data`, in order; an error names the frame that is cut short.
pub fn split(data: Bytes) -> Result<Vec<Bytes>, String> {
    let mut rest = data;
    let mut frames = Vec::new();
    while rest.has_remaining() {
        let index = frames.len();
        if rest.remaining() < 4 {
            return Err(format!(
                "frame {index}: {} bytes left, no length",
                rest.remaining()
            ));
        }
        let len = rest.get_u32_le() as usize;
        if rest.remaining() < len {
            let left = rest.remaining();
            return Err(format!(
                "frame {index}: length {len}, only {left} bytes left"
            ));
        }
        frames.push(rest.split_to(len));
    }
    Ok(frames)
}

/// `frames` as one buffer, each behind its length.
pub fn join<'a>(frames: impl IntoIterator<Item = &'a Bytes>) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        let len = u32::try_from(frame.len()).expect("a gRPC message is under 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(frame);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_including_empty_ones() {
        let frames = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from(vec![7u8; 300]),
        ];
        assert_eq!(split(Bytes::from(join(&frames))).unwrap(), frames);
        assert!(split(Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn a_cut_frame_is_named() {
        let mut data = join(&[Bytes::from_static(b"abc"), Bytes::from_static(b"defg")]);
        data.pop();
        assert_eq!(
            split(Bytes::from(data.clone())).unwrap_err(),
            "frame 1: length 4, only 3 bytes left"
        );
        data.truncate(9);
        assert_eq!(
            split(Bytes::from(data)).unwrap_err(),
            "frame 1: 2 bytes left, no length"
        );
    }
}
