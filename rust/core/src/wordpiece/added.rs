//! Added tokens ([CLS], [SEP], [MASK], ...) written in the text itself: HF finds
//! them in the raw text, before normalisation, and emits their ids; only the text
//! between them is normalised and split into words.

/// A stretch of the raw text: ordinary text, or an added token's id.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Token(u32),
}

pub struct AddedTokens {
    tokens: Vec<(Box<str>, u32)>,
    /// Whether some token starts with this byte: most positions are ruled out
    /// with one load.
    starts: [bool; 256],
}

impl AddedTokens {
    /// `tokens`: (content, id). Empty contents are ignored, as HF ignores them.
    pub fn new(tokens: impl IntoIterator<Item = (String, u32)>) -> Self {
        let tokens: Vec<(Box<str>, u32)> = tokens
            .into_iter()
            .filter(|(content, _)| !content.is_empty())
            .map(|(content, id)| (content.into_boxed_str(), id))
            .collect();
        let mut starts = [false; 256];
        for (content, _) in &tokens {
            starts[content.as_bytes()[0] as usize] = true;
        }
        AddedTokens { tokens, starts }
    }

    /// The pieces of `text` in order: at the leftmost position where a token
    /// occurs, the longest token there (Aho-Corasick's leftmost-longest matches),
    /// then on after it. Empty text pieces are left out.
    pub fn split<'a>(&'a self, text: &'a str) -> Pieces<'a> {
        Pieces {
            added: self,
            text,
            pending: None,
        }
    }

    /// The longest token that `text` starts with: (its length, its id).
    fn longest_at(&self, text: &str) -> Option<(usize, u32)> {
        self.tokens
            .iter()
            .filter(|(content, _)| text.starts_with(&**content))
            .max_by_key(|(content, _)| content.len())
            .map(|(content, id)| (content.len(), *id))
    }
}

pub struct Pieces<'a> {
    added: &'a AddedTokens,
    text: &'a str,
    /// A token found after a text piece, handed out next.
    pending: Option<u32>,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        if let Some(id) = self.pending.take() {
            return Some(Piece::Token(id));
        }
        let text = self.text;
        let bytes = text.as_bytes();
        // A match starts on a char boundary: a token's first byte never continues
        // a UTF-8 sequence.
        for at in (0..bytes.len()).filter(|&i| self.added.starts[bytes[i] as usize]) {
            if let Some((len, id)) = self.added.longest_at(&text[at..]) {
                self.text = &text[at + len..];
                if at == 0 {
                    return Some(Piece::Token(id));
                }
                self.pending = Some(id);
                return Some(Piece::Text(&text[..at]));
            }
        }
        self.text = "";
        (!text.is_empty()).then_some(Piece::Text(text))
    }
}

#[cfg(test)]
mod tests {
    use super::Piece::{Text, Token};
    use super::*;

    fn added() -> AddedTokens {
        let tokens = [
            ("[CLS]", 101),
            ("[SEP]", 102),
            ("[MASK]", 103),
            ("[MASK]x", 7),
            ("", 9),
        ];
        AddedTokens::new(tokens.map(|(t, id)| (t.to_string(), id)))
    }

    fn pieces<'a>(a: &'a AddedTokens, text: &'a str) -> Vec<Piece<'a>> {
        a.split(text).collect()
    }

    #[test]
    fn finds_tokens_anywhere_in_the_raw_text() {
        let a = added();
        assert_eq!(
            pieces(&a, "[CLS]hi[SEP] é[MASK]"),
            [Token(101), Text("hi"), Token(102), Text(" é"), Token(103)]
        );
        assert_eq!(pieces(&a, "[CLS][CLS]"), [Token(101), Token(101)]);
        // Case and spacing matter: these tokens are not normalised.
        assert_eq!(pieces(&a, "[cls] [ SEP]"), [Text("[cls] [ SEP]")]);
        assert_eq!(pieces(&a, ""), []);
    }

    #[test]
    fn the_longest_token_at_the_leftmost_match_wins() {
        let a = added();
        assert_eq!(pieces(&a, "a[MASK]xy"), [Text("a"), Token(7), Text("y")]);
        assert_eq!(pieces(&a, "[MASK][MASK]x"), [Token(103), Token(7)]);
        // A partial token is text.
        assert_eq!(pieces(&a, "[MAS[SEP]"), [Text("[MAS"), Token(102)]);
    }
}
