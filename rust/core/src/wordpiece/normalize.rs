//! BERT's text normalisation, as HF tokenizers' `BertNormalizer` does it, in its
//! order: clean the text, pad CJK ideographs with spaces, strip accents (NFD, then
//! drop non-spacing marks), lowercase.
//!
//! The character classes come from the same crates HF uses (`unicode_categories`
//! for Cc/Cf/Co/Mn, `unicode-normalization-alignments` for NFD), whose tables are
//! older than today's Unicode: a character assigned since then is, for HF, neither
//! a control character nor a mark, and the ids must be HF's.

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Normalizer {
    /// Drop NUL, U+FFFD and control characters; every whitespace becomes ' '.
    pub clean_text: bool,
    /// Put spaces around CJK ideographs, so that each is a word of its own.
    pub handle_chinese_chars: bool,
    pub strip_accents: bool,
    pub lowercase: bool,
}

/// Whether `c` is a control character for BERT: Unicode Cc, Cf or Co, except the
/// three that BERT counts as whitespace. (HF's comment says "Cc, Cf, Cn or Co", but
/// its code leaves unassigned code points in.)
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

/// The CJK Unified Ideographs blocks (and their extensions and compatibility
/// blocks) that BERT treats as one word per character. Hangul, kana and the rest
/// are written with spaces and are left alone.
fn is_cjk_ideograph(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

impl Normalizer {
    /// Writes the normalised `text` to `out` (cleared first); `scratch` holds the
    /// intermediate text between calls, so a batch allocates once.
    pub fn normalize(&self, text: &str, out: &mut String, scratch: &mut String) {
        out.clear();
        let cleaned = if self.clean_text || self.handle_chinese_chars {
            scratch.clear();
            for c in text.chars() {
                self.clean_and_pad(c, scratch);
            }
            scratch.as_str()
        } else {
            text
        };
        // ASCII letters have no accents and lowercase on their own; NFD only has to
        // see the runs of other characters (an ASCII character is a starter, so
        // canonical reordering never crosses it).
        let mut rest = cleaned;
        while !rest.is_empty() {
            let ascii = rest
                .bytes()
                .position(|b| !b.is_ascii())
                .unwrap_or(rest.len());
            if self.lowercase {
                out.extend(rest[..ascii].chars().map(|c| c.to_ascii_lowercase()));
            } else {
                out.push_str(&rest[..ascii]);
            }
            rest = &rest[ascii..];
            let other = rest
                .bytes()
                .position(|b| b.is_ascii())
                .unwrap_or(rest.len());
            self.strip_and_lower(&rest[..other], out);
            rest = &rest[other..];
        }
    }

    fn clean_and_pad(&self, c: char, out: &mut String) {
        if c.is_ascii() {
            // The same answers without the category tables' binary searches: ASCII's
            // only Cc/Cf/Co characters are C0 and DEL, and no CJK is ASCII.
            match c {
                '\t' | '\n' | '\r' if self.clean_text => out.push(' '),
                c if self.clean_text && c.is_ascii_control() => {}
                c => out.push(c),
            }
            return;
        }
        if self.clean_text {
            if c == '\0' || c == '\u{FFFD}' || is_control(c) {
                return;
            }
            if c.is_whitespace() {
                out.push(' ');
                return;
            }
        }
        if self.handle_chinese_chars && is_cjk_ideograph(c) {
            out.extend([' ', c, ' ']);
        } else {
            out.push(c);
        }
    }

    /// Accents and case of a run of non-ASCII characters.
    fn strip_and_lower(&self, run: &str, out: &mut String) {
        let lower = |c: char, out: &mut String| {
            if self.lowercase {
                out.extend(c.to_lowercase());
            } else {
                out.push(c);
            }
        };
        if self.strip_accents {
            for (c, _) in run.nfd().filter(|(c, _)| !c.is_mark_nonspacing()) {
                lower(c, out);
            }
        } else {
            for c in run.chars() {
                lower(c, out);
            }
        }
    }
}

#[cfg(test)]
impl Normalizer {
    /// BERT's uncased settings, every step on (tests).
    pub(crate) const BERT: Normalizer = Normalizer {
        clean_text: true,
        handle_chinese_chars: true,
        strip_accents: true,
        lowercase: true,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERT: Normalizer = Normalizer::BERT;

    fn norm(n: Normalizer, text: &str) -> String {
        let (mut out, mut scratch) = (String::new(), String::new());
        n.normalize(text, &mut out, &mut scratch);
        out
    }

    #[test]
    fn cleans_controls_and_whitespace() {
        // \t \n \r and Unicode spaces become ' '; NUL, U+FFFD, other Cc, Cf
        // (zero-width space, BOM) and private use are dropped.
        let text = "a\tb\nc\rd\u{a0}e\u{3000}f\0g\u{fffd}h\u{7}i\u{200b}j\u{feff}k\u{e000}l";
        assert_eq!(norm(BERT, text), "a b c d e fghijkl");
        // Vertical tab and form feed are whitespace but Cc: dropped, not spaced.
        assert_eq!(norm(BERT, "a\u{b}b\u{c}c"), "abc");
        // An unassigned code point is no control character for HF: it stays.
        assert_eq!(norm(BERT, "a\u{378}b"), "a\u{378}b");
    }

    #[test]
    fn pads_cjk_ideographs_only() {
        assert_eq!(norm(BERT, "野口x"), " 野  口 x");
        // Kana and Hangul are not in the CJK blocks.
        let no_accents = Normalizer {
            strip_accents: false,
            ..BERT
        };
        assert_eq!(norm(no_accents, "ひらカナ한"), "ひらカナ한");
    }

    #[test]
    fn strips_accents_before_lowercasing() {
        assert_eq!(norm(BERT, "Héllo WÖRLD Ångström"), "hello world angstrom");
        // İ decomposes to I + U+0307 first, so lowercasing yields a bare i.
        assert_eq!(norm(BERT, "İstanbul"), "istanbul");
        // Full lowercase, not only ASCII; ß has no single-letter lowercase change.
        assert_eq!(norm(BERT, "ΣΑΣ ß"), "σασ ß");
        // NFD also splits kana voicing marks (Mn) and Hangul syllables (into jamo).
        assert_eq!(norm(BERT, "が한"), "か\u{1112}\u{1161}\u{11ab}");
        // A mark newer than HF's tables is no Mn for it and stays.
        assert_eq!(norm(BERT, "a\u{1e4ef}"), "a\u{1e4ef}");
    }

    #[test]
    fn each_step_can_be_turned_off() {
        let none = Normalizer {
            clean_text: false,
            handle_chinese_chars: false,
            strip_accents: false,
            lowercase: false,
        };
        assert_eq!(norm(none, "Hé\t野\u{200b}"), "Hé\t野\u{200b}");
        let keep_accents = Normalizer {
            strip_accents: false,
            ..BERT
        };
        assert_eq!(norm(keep_accents, "Hé"), "hé");
    }
}
