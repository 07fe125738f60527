//! A BERT WordPiece tokenizer that gives the ids HF tokenizers gives for a
//! `tokenizer.json` with a `BertNormalizer`, a `BertPreTokenizer`, a `WordPiece`
//! model, added tokens that are matched unnormalised, special tokens around the text
//! (`[CLS] ... [SEP]`) and truncation to a total length.
//!
//! Why not HF's: a query is embedded on every search, and HF spends tens of
//! microseconds per short question (offsets, alignments, Python objects per
//! encoding); this produces the ids alone, straight into one array for the batch.
//!
//! - [`normalize`]: cleaning, CJK padding, accents, case.
//! - [`words`]: whitespace and punctuation split.
//! - [`vocab`]: greedy longest-match WordPiece.
//! - [`added`]: added tokens found in the raw text.

mod added;
mod normalize;
mod vocab;
mod words;

pub use added::{AddedTokens, Piece};
pub use normalize::Normalizer;
pub use vocab::WordPiece;
pub use words::Words;

use crate::error::{Error, Result};

pub struct Tokenizer {
    added: AddedTokens,
    normalizer: Normalizer,
    model: WordPiece,
    /// Ids before and after the text's own (the post-processor's `[CLS]` and `[SEP]`).
    prefix: Vec<i64>,
    suffix: Vec<i64>,
    /// How many of the text's own tokens are kept: the total, special tokens
    /// included, is at most the `max_tokens` given.
    max_text_tokens: usize,
}

impl Tokenizer {
    pub fn new(
        added: AddedTokens,
        normalizer: Normalizer,
        model: WordPiece,
        prefix: Vec<u32>,
        suffix: Vec<u32>,
        max_tokens: usize,
    ) -> Result<Self> {
        let special = prefix.len() + suffix.len();
        let max_text_tokens = max_tokens.checked_sub(special).ok_or_else(|| {
            Error::invalid(
                "max_tokens",
                format!("{max_tokens} leaves no room for the {special} special tokens"),
            )
        })?;
        let ids = |v: Vec<u32>| v.into_iter().map(i64::from).collect();
        Ok(Tokenizer {
            added,
            normalizer,
            model,
            prefix: ids(prefix),
            suffix: ids(suffix),
            max_text_tokens,
        })
    }

    /// The ids of every text one after another, and where each text starts: text
    /// `i` is `ids[offsets[i]..offsets[i + 1]]`.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> (Vec<i64>, Vec<i64>) {
        let mut ids = Vec::new();
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        offsets.push(0);
        let mut scratch = Scratch::default();
        for text in texts {
            self.encode(text.as_ref(), &mut ids, &mut scratch);
            offsets.push(ids.len() as i64);
        }
        (ids, offsets)
    }

    /// Appends the ids of `text` to `out`.
    fn encode(&self, text: &str, out: &mut Vec<i64>, scratch: &mut Scratch) {
        out.extend_from_slice(&self.prefix);
        let start = out.len();
        let limit = start + self.max_text_tokens;
        // Truncation keeps the first tokens, so the rest of a long text need not
        // be tokenized.
        'pieces: for piece in self.added.split(text) {
            match piece {
                Piece::Token(id) => out.push(id.into()),
                Piece::Text(text) => {
                    let Scratch {
                        normalized,
                        cleaned,
                    } = scratch;
                    self.normalizer.normalize(text, normalized, cleaned);
                    for word in Words::new(normalized) {
                        if out.len() >= limit {
                            break 'pieces;
                        }
                        self.model.tokenize(word, out);
                    }
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        out.extend_from_slice(&self.suffix);
    }
}

/// Buffers reused across the texts of a batch.
#[derive(Default)]
struct Scratch {
    normalized: String,
    cleaned: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERT: Normalizer = Normalizer::BERT;

    /// [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, then the words.
    fn tokenizer(max_tokens: usize) -> Tokenizer {
        let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
        let words = [
            "hello", "world", "!", "un", "##aff", "##able", "野", "cafe", "x",
        ];
        let vocab = specials.iter().chain(&words).enumerate();
        let model = WordPiece::new(
            vocab.map(|(i, t)| (t.to_string(), i as u32)),
            "[UNK]",
            "##",
            100,
        )
        .unwrap();
        let added = AddedTokens::new(
            specials
                .iter()
                .enumerate()
                .map(|(i, t)| (t.to_string(), i as u32)),
        );
        Tokenizer::new(added, BERT, model, vec![2], vec![3], max_tokens).unwrap()
    }

    fn ids(t: &Tokenizer, text: &str) -> Vec<i64> {
        t.encode_batch(&[text]).0
    }

    #[test]
    fn the_whole_pipeline() {
        let t = tokenizer(256);
        assert_eq!(ids(&t, "Hello, WORLD!"), [2, 5, 1, 6, 7, 3]);
        assert_eq!(ids(&t, "unaffable Café野x"), [2, 8, 9, 10, 12, 11, 13, 3]);
        assert_eq!(ids(&t, ""), [2, 3]);
        assert_eq!(ids(&t, " \u{200b}\t"), [2, 3]);
    }

    #[test]
    fn special_tokens_in_the_text_are_found_before_normalising() {
        let t = tokenizer(256);
        assert_eq!(ids(&t, "hello[MASK]world"), [2, 5, 4, 6, 3]);
        assert_eq!(ids(&t, "[SEP][CLS]"), [2, 3, 2, 3]);
        // Lowercase brackets are text: "[", "mask" (unknown), "]".
        assert_eq!(ids(&t, "[mask]"), [2, 1, 1, 1, 3]);
    }

    #[test]
    fn truncates_to_the_total_length() {
        let t = tokenizer(5);
        assert_eq!(ids(&t, "hello world hello world"), [2, 5, 6, 5, 3]);
        assert_eq!(ids(&t, "unaffable world"), [2, 8, 9, 10, 3]);
        assert_eq!(ids(&t, "hello [MASK] [MASK] [MASK]"), [2, 5, 4, 4, 3]);
        assert_eq!(ids(&tokenizer(2), "hello"), [2, 3]);
    }

    #[test]
    fn a_batch_is_its_texts_one_after_another() {
        let t = tokenizer(256);
        let (ids, offsets) = t.encode_batch(&["hello", "", "world x"]);
        assert_eq!(ids, [2, 5, 3, 2, 3, 2, 6, 13, 3]);
        assert_eq!(offsets, [0, 3, 5, 9]);
        assert_eq!(t.encode_batch::<&str>(&[]), (vec![], vec![0]));
    }

    #[test]
    fn max_tokens_must_leave_room_for_the_special_tokens() {
        let t = tokenizer(256);
        let err = Tokenizer::new(AddedTokens::new([]), BERT, t.model, vec![2], vec![3], 1)
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("max_tokens:"), "{err}");
    }
}
