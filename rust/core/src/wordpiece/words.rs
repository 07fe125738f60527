//! BERT's pre-tokenization (HF tokenizers' `BertPreTokenizer`): whitespace separates
//! words and is dropped, and every punctuation character is a word of its own.

use unicode_categories::UnicodeCategories;

/// ASCII punctuation (which includes symbols such as `$`, `+` and `^`) or any
/// character of a Unicode punctuation category (P*), by HF's tables.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || (!c.is_ascii() && c.is_punctuation())
}

/// The words of a normalised text, in order.
pub struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    pub fn new(text: &'a str) -> Self {
        Words { rest: text }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest.trim_start_matches(char::is_whitespace);
        let first = text.chars().next()?;
        let end = if is_punctuation(first) {
            first.len_utf8()
        } else {
            text.find(|c: char| c.is_whitespace() || is_punctuation(c))
                .unwrap_or(text.len())
        };
        let (word, rest) = text.split_at(end);
        self.rest = rest;
        Some(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        Words::new(text).collect()
    }

    #[test]
    fn splits_on_whitespace_and_isolates_punctuation() {
        assert_eq!(
            words("  hey friend!     how are you?!?"),
            ["hey", "friend", "!", "how", "are", "you", "?", "!", "?"]
        );
        assert_eq!(words("a$b^c+d"), ["a", "$", "b", "^", "c", "+", "d"]);
        assert!(words(" \t ").is_empty());
    }

    #[test]
    fn unicode_punctuation_and_spaces() {
        // ’ and « » are punctuation (Pf, Pi); U+3000 is whitespace; € is a symbol (Sc).
        assert_eq!(
            words("i’m «x»\u{3000}5€"),
            ["i", "’", "m", "«", "x", "»", "5€"]
        );
        // U+2E43 was assigned after HF's tables were made: not punctuation for it.
        assert_eq!(
            words("a\u{2e43}b a\u{2e42}b"),
            ["a\u{2e43}b", "a", "\u{2e42}", "b"]
        );
    }
}
