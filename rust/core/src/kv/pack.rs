//! Packing a KV cache (keys and values tensors) into pages, and back.

use rayon::prelude::*;

use super::copy::BlockCopy;
use super::dtype::DType;
use super::layout::{KvShape, Layout};
use super::page::{check_crc, seal, verify, Encoding, PageCrc, PageHeader, HEADER_LEN};
use super::quant::{dequantize, quantize, Block};
use crate::error::{Error, Result};

/// What a keys or values tensor is: its layout, element type and shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    pub layout: Layout,
    pub dtype: DType,
    pub shape: KvShape,
}

impl TensorMeta {
    /// Bytes of one dense tensor, or `None` on overflow.
    pub fn byte_len(&self) -> Option<usize> {
        self.shape.elements()?.checked_mul(self.dtype.size())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct PackOptions {
    /// Tokens per page; the last page holds the remainder.
    pub tokens_per_page: usize,
    pub encoding: Encoding,
    /// Stamped on every page so that pages of different sequences cannot be mixed.
    pub sequence_id: u64,
}

/// Packs one keys/values pair; pages can be produced one by one or all at once.
pub struct Packer<'a> {
    keys: &'a [u8],
    values: &'a [u8],
    meta: TensorMeta,
    opts: PackOptions,
}

impl<'a> Packer<'a> {
    pub fn new(
        keys: &'a [u8],
        values: &'a [u8],
        meta: TensorMeta,
        opts: PackOptions,
    ) -> Result<Self> {
        if opts.tokens_per_page == 0 {
            return Err(Error::invalid("tokens_per_page", "must be positive"));
        }
        if meta
            .shape
            .canonical()
            .iter()
            .any(|&n| n > u32::MAX as usize)
        {
            return Err(Error::invalid("shape", "an axis exceeds 2^32 - 1"));
        }
        let expected = meta
            .byte_len()
            .ok_or_else(|| Error::invalid("shape", "tensor size overflows"))?;
        for (field, data) in [("keys", keys), ("values", values)] {
            if data.len() != expected {
                return Err(Error::invalid(
                    field,
                    format!(
                        "{} bytes, but shape {:?} of {} needs {expected}",
                        data.len(),
                        meta.layout.dims(&meta.shape),
                        meta.dtype.name()
                    ),
                ));
            }
        }
        Ok(Packer {
            keys,
            values,
            meta,
            opts,
        })
    }

    pub fn page_count(&self) -> usize {
        self.meta.shape.tokens.div_ceil(self.opts.tokens_per_page)
    }

    fn header(&self, index: usize) -> PageHeader {
        let start = index * self.opts.tokens_per_page;
        let tokens = self
            .opts
            .tokens_per_page
            .min(self.meta.shape.tokens - start);
        let shape = self.meta.shape.with_tokens(tokens);
        PageHeader {
            dtype: self.meta.dtype,
            encoding: self.opts.encoding,
            layout: self.meta.layout,
            shape,
            token_start: start,
            total_tokens: self.meta.shape.tokens,
            sequence_id: self.opts.sequence_id,
            payload_len: PageHeader::expected_payload_len(
                &shape,
                self.meta.dtype,
                self.opts.encoding,
            )
            .expect("a page is smaller than its validated tensor"),
        }
    }

    /// Bytes of page `index`, header included.
    pub fn page_len(&self, index: usize) -> usize {
        self.header(index).page_len()
    }

    /// Writes page `index` into `out`, which must be exactly `page_len(index)` bytes.
    pub fn pack_page(&self, index: usize, out: &mut [u8]) -> Result<()> {
        if index >= self.page_count() {
            return Err(Error::invalid(
                "index",
                format!("page {index} of {}", self.page_count()),
            ));
        }
        let header = self.header(index);
        if out.len() != header.page_len() {
            return Err(Error::invalid(
                "out",
                format!(
                    "{} bytes, page {index} needs {}",
                    out.len(),
                    header.page_len()
                ),
            ));
        }
        let encoded = header.encode();
        out[..HEADER_LEN].copy_from_slice(&encoded);
        let mut crc = PageCrc::new(&encoded);
        let payload = &mut out[HEADER_LEN..];
        let m = &self.meta;
        match header.encoding {
            Encoding::Raw => {
                let copy = BlockCopy::new(
                    &m.shape,
                    m.layout,
                    &header.shape,
                    m.layout,
                    header.token_start,
                );
                let (k, v) = payload.split_at_mut(payload.len() / 2);
                copy.gather(m.dtype.size(), self.keys, k, |run| crc.update(run));
                copy.gather(m.dtype.size(), self.values, v, |run| crc.update(run));
            }
            Encoding::Int8 => {
                let block = Block {
                    tensor_shape: &m.shape,
                    tensor_layout: m.layout,
                    page_shape: &header.shape,
                    page_layout: m.layout,
                    start: header.token_start,
                };
                let elements = header.shape.elements().unwrap_or(0);
                let (qk, rest) = payload.split_at_mut(elements);
                let (qv, scales) = rest.split_at_mut(elements);
                let (sk, sv) = scales.split_at_mut(scales.len() / 2);
                quantize(&block, m.dtype, self.keys, qk, sk, "keys")?;
                quantize(&block, m.dtype, self.values, qv, sv, "values")?;
                crc.update(payload);
            }
        }
        seal(out, crc.finish());
        Ok(())
    }

    /// Every page, packed in parallel.
    pub fn pack_all(&self) -> Result<Vec<Vec<u8>>> {
        (0..self.page_count())
            .into_par_iter()
            .map(|i| {
                let mut page = vec![0u8; self.page_len(i)];
                self.pack_page(i, &mut page)?;
                Ok(page)
            })
            .collect()
    }
}

/// A validated, ordered run of pages that together hold one sequence.
#[derive(Debug)]
pub struct Sequence {
    pub dtype: DType,
    /// Shape of the whole sequence.
    pub shape: KvShape,
    /// The layout of the first page, a natural default for unpacking.
    pub layout: Layout,
    pub sequence_id: u64,
    pub headers: Vec<PageHeader>,
}

fn in_page(index: usize, e: Error) -> Error {
    match e {
        Error::Corrupt(m) => Error::Corrupt(format!("page {index}: {m}")),
        other => other,
    }
}

/// Reads the headers of `pages` and checks that they form one complete sequence,
/// in order. Checksums are verified later, while unpacking.
pub fn inspect(pages: &[&[u8]]) -> Result<Sequence> {
    let first = pages
        .first()
        .ok_or_else(|| Error::invalid("pages", "no pages given"))?;
    let head = PageHeader::decode(first).map_err(|e| in_page(0, e))?;
    let mut next = 0usize;
    let mut headers = Vec::with_capacity(pages.len());
    for (i, page) in pages.iter().enumerate() {
        let h = PageHeader::decode(page).map_err(|e| in_page(i, e))?;
        let same = h.dtype == head.dtype
            && h.sequence_id == head.sequence_id
            && h.total_tokens == head.total_tokens
            && h.shape.with_tokens(0) == head.shape.with_tokens(0);
        if !same {
            return Err(Error::invalid(
                "pages",
                format!("page {i} belongs to another sequence than page 0"),
            ));
        }
        if h.token_start != next {
            return Err(Error::invalid(
                "pages",
                format!(
                    "page {i} starts at token {}, expected {next} (pages missing or out of order)",
                    h.token_start
                ),
            ));
        }
        next += h.shape.tokens;
        headers.push(h);
    }
    if next != head.total_tokens {
        return Err(Error::invalid(
            "pages",
            format!(
                "pages cover tokens 0..{next} of a {}-token sequence",
                head.total_tokens
            ),
        ));
    }
    Ok(Sequence {
        dtype: head.dtype,
        shape: head.shape.with_tokens(head.total_tokens),
        layout: head.layout,
        sequence_id: head.sequence_id,
        headers,
    })
}

impl Sequence {
    pub fn meta(&self, layout: Layout) -> TensorMeta {
        TensorMeta {
            layout,
            dtype: self.dtype,
            shape: self.shape,
        }
    }

    /// Unpacks `pages` (the ones inspected) into dense keys and values tensors in
    /// `layout`. Every checksum is verified; on error the outputs hold garbage and
    /// must be discarded.
    pub fn unpack_into(
        &self,
        pages: &[&[u8]],
        layout: Layout,
        keys: &mut [u8],
        values: &mut [u8],
    ) -> Result<()> {
        let expected = self.meta(layout).byte_len().unwrap_or(usize::MAX);
        for (field, out) in [("keys", &*keys), ("values", &*values)] {
            if out.len() != expected {
                return Err(Error::invalid(
                    field,
                    format!(
                        "output is {} bytes, the sequence needs {expected}",
                        out.len()
                    ),
                ));
            }
        }
        if pages.len() != self.headers.len() {
            return Err(Error::invalid("pages", "not the pages that were inspected"));
        }
        for (i, (page, h)) in pages.iter().zip(&self.headers).enumerate() {
            if PageHeader::decode(page).ok().as_ref() != Some(h) {
                return Err(Error::invalid(
                    "pages",
                    format!("page {i} changed since inspection"),
                ));
            }
            let payload = &page[HEADER_LEN..];
            match h.encoding {
                Encoding::Raw => {
                    let copy =
                        BlockCopy::new(&self.shape, layout, &h.shape, h.layout, h.token_start);
                    let mut crc = PageCrc::new(&page[..HEADER_LEN]);
                    let (k, v) = payload.split_at(payload.len() / 2);
                    copy.scatter(self.dtype.size(), k, keys, |run| crc.update(run));
                    copy.scatter(self.dtype.size(), v, values, |run| crc.update(run));
                    check_crc(page, crc.finish()).map_err(|e| in_page(i, e))?;
                }
                Encoding::Int8 => {
                    verify(page).map_err(|e| in_page(i, e))?;
                    let block = Block {
                        tensor_shape: &self.shape,
                        tensor_layout: layout,
                        page_shape: &h.shape,
                        page_layout: h.layout,
                        start: h.token_start,
                    };
                    let elements = h.shape.elements().unwrap_or(0);
                    let (qk, rest) = payload.split_at(elements);
                    let (qv, scales) = rest.split_at(elements);
                    let (sk, sv) = scales.split_at(scales.len() / 2);
                    dequantize(&block, self.dtype, qk, sk, keys);
                    dequantize(&block, self.dtype, qv, sv, values);
                }
            }
        }
        Ok(())
    }

    /// Unpacks into freshly allocated tensors.
    pub fn unpack(&self, pages: &[&[u8]], layout: Layout) -> Result<(Vec<u8>, Vec<u8>)> {
        let len = self
            .meta(layout)
            .byte_len()
            .ok_or_else(|| Error::invalid("pages", "sequence size overflows"))?;
        let (mut keys, mut values) = (vec![0u8; len], vec![0u8; len]);
        self.unpack_into(pages, layout, &mut keys, &mut values)?;
        Ok((keys, values))
    }
}
