//! The page format: a fixed 64-byte header followed by the payload.
//!
//! ```text
//! offset size field
//!      0    4 magic          b"MKVP"
//!      4    2 version        1
//!      6    1 dtype          1 f32, 2 f16, 3 bf16 (what unpack returns)
//!      7    1 encoding       0 raw, 1 int8 with per-channel scales
//!      8    4 layout         axis order in ASCII, e.g. b"LHSD"
//!     12    4 layers
//!     16    4 heads          KV heads
//!     20    4 head_dim
//!     24    4 token_start    first token of this page in the sequence
//!     28    4 token_count    tokens in this page
//!     32    4 total_tokens   tokens in the whole sequence
//!     36    4 page_crc       crc32 over bytes 0..36, 40..56 and the payload
//!     40    8 sequence_id    chosen by the packer; all pages of a sequence share it
//!     48    8 payload_len
//!     56    4 header_crc     crc32 over bytes 0..56
//!     60    4 reserved       zero
//! ```
//!
//! The header checksum lets a damaged header be reported as corrupt before any
//! of its fields is trusted; the page checksum covers the payload and is checked
//! while unpacking, so the payload is read once.
//!
//! All integers are little-endian. The raw payload is the keys block then the
//! values block, each dense in the page's layout with `token_count` tokens. The
//! int8 payload is the quantised keys, the quantised values, then one f32 scale
//! per (layer, head, dim) for keys and then for values.

use super::dtype::DType;
use super::layout::{KvShape, Layout};
use crate::error::{Error, Result};

pub const MAGIC: [u8; 4] = *b"MKVP";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 64;
const CRC_AT: usize = 36;
const HEADER_CRC_AT: usize = 56;

/// How the payload stores elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Bytes exactly as packed.
    Raw,
    /// int8, one f32 scale per (layer, head, dim) channel and page.
    Int8,
}

impl Encoding {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "raw" => Ok(Encoding::Raw),
            "int8" => Ok(Encoding::Int8),
            other => Err(Error::invalid(
                "encoding",
                format!("unknown encoding {other:?}; expected raw or int8"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Int8 => "int8",
        }
    }

    fn code(self) -> u8 {
        match self {
            Encoding::Raw => 0,
            Encoding::Int8 => 1,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Encoding::Raw),
            1 => Some(Encoding::Int8),
            _ => None,
        }
    }
}

/// A decoded page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    pub dtype: DType,
    pub encoding: Encoding,
    pub layout: Layout,
    /// Shape of this page's block (`tokens` = tokens in the page).
    pub shape: KvShape,
    pub token_start: usize,
    pub total_tokens: usize,
    pub sequence_id: u64,
    pub payload_len: usize,
}

impl PageHeader {
    /// Payload bytes a page of this shape, dtype and encoding must have.
    pub fn expected_payload_len(
        shape: &KvShape,
        dtype: DType,
        encoding: Encoding,
    ) -> Option<usize> {
        let elements = shape.elements()?;
        let block = match encoding {
            Encoding::Raw => elements.checked_mul(dtype.size())?,
            Encoding::Int8 => elements.checked_add(shape.channels().checked_mul(4)?)?,
        };
        block.checked_mul(2)
    }

    pub fn page_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// The header bytes with zero checksum fields (see [`seal`]).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..6].copy_from_slice(&VERSION.to_le_bytes());
        h[6] = self.dtype.code();
        h[7] = self.encoding.code();
        h[8..12].copy_from_slice(&self.layout.to_bytes());
        let fields = [
            self.shape.layers,
            self.shape.heads,
            self.shape.head_dim,
            self.token_start,
            self.shape.tokens,
            self.total_tokens,
        ];
        for (i, v) in fields.iter().enumerate() {
            h[12 + 4 * i..16 + 4 * i].copy_from_slice(&(*v as u32).to_le_bytes());
        }
        h[40..48].copy_from_slice(&self.sequence_id.to_le_bytes());
        h[48..56].copy_from_slice(&(self.payload_len as u64).to_le_bytes());
        h
    }

    /// Decodes and checks the header of `page` without reading the payload:
    /// magic, version, codes, shape consistency and the exact page length.
    pub fn decode(page: &[u8]) -> Result<Self> {
        if page.len() < HEADER_LEN {
            return Err(Error::Corrupt(format!(
                "KV page is {} bytes, shorter than its {HEADER_LEN}-byte header",
                page.len()
            )));
        }
        if page[0..4] != MAGIC {
            return Err(Error::Corrupt("not a KV page (bad magic)".into()));
        }
        let version = u16::from_le_bytes([page[4], page[5]]);
        if version != VERSION {
            return Err(Error::Corrupt(format!(
                "KV page format version {version} is not supported (expected {VERSION})"
            )));
        }
        let header_crc = crc32fast::hash(&page[..HEADER_CRC_AT]);
        if u32::from_le_bytes([page[56], page[57], page[58], page[59]]) != header_crc {
            return Err(Error::Corrupt("KV page header checksum mismatch".into()));
        }
        let bad = |what: &str| Error::Corrupt(format!("KV page header: {what}"));
        let dtype = DType::from_code(page[6]).ok_or_else(|| bad("unknown dtype"))?;
        let encoding = Encoding::from_code(page[7]).ok_or_else(|| bad("unknown encoding"))?;
        let layout = Layout::from_bytes(&page[8..12]).ok_or_else(|| bad("unknown layout"))?;
        let u32_at = |o: usize| {
            u32::from_le_bytes([page[o], page[o + 1], page[o + 2], page[o + 3]]) as usize
        };
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&page[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let shape = KvShape {
            layers: u32_at(12),
            heads: u32_at(16),
            head_dim: u32_at(20),
            tokens: u32_at(28),
        };
        let token_start = u32_at(24);
        let total_tokens = u32_at(32);
        if shape.canonical().contains(&0) {
            return Err(bad("an axis has size zero"));
        }
        if token_start + shape.tokens > total_tokens {
            return Err(bad("token range exceeds the sequence"));
        }
        if page[60..64].iter().any(|&b| b != 0) {
            return Err(bad("reserved bytes are not zero"));
        }
        let payload_len = u64_at(48);
        let expected = Self::expected_payload_len(&shape, dtype, encoding);
        if expected.map(|e| e as u64) != Some(payload_len) {
            return Err(bad("payload length does not match the shape"));
        }
        let header = PageHeader {
            dtype,
            encoding,
            layout,
            shape,
            token_start,
            total_tokens,
            sequence_id: u64_at(40),
            payload_len: payload_len as usize,
        };
        if page.len() != header.page_len() {
            return Err(Error::Corrupt(format!(
                "KV page is {} bytes; its header describes {} (truncated or padded)",
                page.len(),
                header.page_len()
            )));
        }
        Ok(header)
    }

    /// The checksum stored in `page`.
    pub fn stored_crc(page: &[u8]) -> u32 {
        u32::from_le_bytes([
            page[CRC_AT],
            page[CRC_AT + 1],
            page[CRC_AT + 2],
            page[CRC_AT + 3],
        ])
    }
}

/// A running checksum over a page: the header (without its checksum field) first,
/// then the payload in order.
pub struct PageCrc(crc32fast::Hasher);

impl PageCrc {
    pub fn new(header: &[u8]) -> Self {
        let mut h = crc32fast::Hasher::new();
        h.update(&header[..CRC_AT]);
        h.update(&header[CRC_AT + 4..HEADER_CRC_AT]);
        PageCrc(h)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> u32 {
        self.0.finalize()
    }
}

/// Stores the page checksum `crc` in the header of `page`, then the header checksum.
pub fn seal(page: &mut [u8], crc: u32) {
    page[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32fast::hash(&page[..HEADER_CRC_AT]);
    page[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&header_crc.to_le_bytes());
}

/// Fails with `Corrupt` unless `crc` (computed over the page) matches the stored one.
pub fn check_crc(page: &[u8], crc: u32) -> Result<()> {
    let stored = PageHeader::stored_crc(page);
    if stored != crc {
        return Err(Error::Corrupt(format!(
            "KV page checksum mismatch (stored {stored:#010x}, computed {crc:#010x})"
        )));
    }
    Ok(())
}

/// Decodes the header and verifies the checksum of the whole page.
pub fn verify(page: &[u8]) -> Result<PageHeader> {
    let header = PageHeader::decode(page)?;
    let mut crc = PageCrc::new(&page[..HEADER_LEN]);
    crc.update(&page[HEADER_LEN..]);
    check_crc(page, crc.finish())?;
    Ok(header)
}
