//! The WordPiece model: a word becomes the longest vocabulary entry that starts it,
//! then the longest continuation piece (`##`-prefixed entry) at each point after,
//! greedily; a word that cannot be covered so, or that is too long, is one unknown
//! token.

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};

pub struct WordPiece {
    /// Every entry, as matched at the start of a word (HF looks the bare piece up
    /// in the whole vocabulary there).
    starts: FxHashMap<Box<str>, u32>,
    /// Entries with the continuation prefix, keyed without it, so lookups inside a
    /// word need no prefixed copy of the piece.
    continuations: FxHashMap<Box<str>, u32>,
    /// The longest keys in bytes: a longer piece cannot match, so the search for
    /// the longest match starts there instead of at the end of the word.
    longest_start: usize,
    longest_continuation: usize,
    unk: u32,
    max_chars: usize,
}

impl WordPiece {
    /// `max_input_chars_per_word`: a word of more characters is unknown as a whole.
    pub fn new(
        vocab: impl IntoIterator<Item = (String, u32)>,
        unk_token: &str,
        continuing_subword_prefix: &str,
        max_input_chars_per_word: usize,
    ) -> Result<Self> {
        let mut starts = FxHashMap::default();
        let mut continuations = FxHashMap::default();
        for (token, id) in vocab {
            if let Some(piece) = token.strip_prefix(continuing_subword_prefix) {
                continuations.insert(piece.into(), id);
            }
            starts.insert(token.into_boxed_str(), id);
        }
        let unk = *starts.get(unk_token).ok_or_else(|| {
            Error::invalid(
                "unk_token",
                format!("{unk_token:?} is not in the vocabulary"),
            )
        })?;
        let longest = |m: &FxHashMap<Box<str>, u32>| m.keys().map(|k| k.len()).max().unwrap_or(0);
        Ok(WordPiece {
            longest_start: longest(&starts),
            longest_continuation: longest(&continuations),
            starts,
            continuations,
            unk,
            max_chars: max_input_chars_per_word,
        })
    }

    /// Appends the ids of `word`'s pieces to `out`.
    pub fn tokenize(&self, word: &str, out: &mut Vec<i64>) {
        if word.chars().count() > self.max_chars {
            out.push(self.unk.into());
            return;
        }
        let first = out.len();
        let mut start = 0;
        while start < word.len() {
            let (pieces, longest) = if start == 0 {
                (&self.starts, self.longest_start)
            } else {
                (&self.continuations, self.longest_continuation)
            };
            let mut end = floor_char_boundary(word, start + longest);
            let id = loop {
                if end == start {
                    out.truncate(first);
                    out.push(self.unk.into());
                    return;
                }
                if let Some(&id) = pieces.get(&word[start..end]) {
                    break id;
                }
                end = floor_char_boundary(word, end - 1);
            };
            out.push(id.into());
            start = end;
        }
    }
}

/// The largest char boundary of `s` at or below `i` (`s.len()` if `i` is past it).
fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(max_chars: usize) -> WordPiece {
        let vocab = [
            "[UNK]", "un", "##aff", "##able", "a", "##a", "aff", "é", "##é",
        ];
        let vocab = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32));
        WordPiece::new(vocab, "[UNK]", "##", max_chars).unwrap()
    }

    fn ids(m: &WordPiece, word: &str) -> Vec<i64> {
        let mut out = vec![-1];
        m.tokenize(word, &mut out);
        out.split_off(1)
    }

    #[test]
    fn longest_match_first() {
        let m = model(100);
        assert_eq!(ids(&m, "unaffable"), [1, 2, 3]);
        assert_eq!(ids(&m, "aff"), [6]);
        // "affa": the longest start is "aff", then "##a".
        assert_eq!(ids(&m, "affa"), [6, 5]);
        assert_eq!(ids(&m, "aaa"), [4, 5, 5]);
        assert_eq!(ids(&m, "éé"), [7, 8]);
    }

    #[test]
    fn a_word_with_an_uncovered_piece_is_one_unknown() {
        let m = model(100);
        // "##b" is missing: the pieces found before it are dropped too.
        assert_eq!(ids(&m, "unaffb"), [0]);
        assert_eq!(ids(&m, "b"), [0]);
        // A continuation piece cannot start a word...
        assert_eq!(ids(&m, "able"), [0]);
        // ...but the vocabulary's own "##a" entry can, spelled out.
        assert_eq!(ids(&m, "##a"), [5]);
    }

    #[test]
    fn words_longer_than_the_limit_are_unknown() {
        let m = model(4);
        assert_eq!(ids(&m, "aaaa"), [4, 5, 5, 5]);
        assert_eq!(ids(&m, "aaaaa"), [0]);
        // Characters, not bytes.
        assert_eq!(ids(&m, "éééé"), [7, 8, 8, 8]);
    }

    #[test]
    fn the_unknown_token_must_be_in_the_vocabulary() {
        let vocab = [("a".to_string(), 0)];
        let err = WordPiece::new(vocab, "[UNK]", "##", 100).err().unwrap();
        assert!(err.to_string().starts_with("unk_token:"), "{err}");
    }
}
