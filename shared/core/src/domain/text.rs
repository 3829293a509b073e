//! The rules for text a client sends (names, addresses, attributes, tags), whether it comes in
//! a request or a row of an imported file: one rule, two edges.

use super::{MAX_TAGS, MAX_TAG_LEN};

/// The white space a text field may not consist of (and loses at both ends): the same set
/// the HTTP edge's documented pattern (`TEXT_PATTERN`) names.
pub const BLANKS: &[char] = &[
    ' ', '\u{a0}', '\u{1680}', '\u{2000}', '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}',
    '\u{2005}', '\u{2006}', '\u{2007}', '\u{2008}', '\u{2009}', '\u{200a}', '\u{2028}', '\u{2029}',
    '\u{202f}', '\u{205f}', '\u{3000}', '\u{feff}',
];

fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// Text for a name, an address or an attribute: 1 to `max` characters as sent, no control
/// characters (NUL and friends), not only white space; kept without the white space at its
/// ends. The error names `field`.
pub fn checked_text(field: &str, value: &str, max: usize) -> Result<String, String> {
    let length = value.chars().count();
    if length == 0 {
        return Err(format!("{field} must not be empty"));
    }
    if length > max {
        return Err(format!("{field} is longer than {max} characters"));
    }
    if let Some(c) = value.chars().find(|c| is_control(*c)) {
        return Err(format!(
            "{field} contains the control character U+{:04X}",
            c as u32
        ));
    }
    let trimmed = value.trim_matches(BLANKS);
    if trimmed.is_empty() {
        return Err(format!("{field} must not be only white space"));
    }
    Ok(trimmed.to_owned())
}

/// At most 20 tags of 1 to 50 characters (each as `checked_text`), each kept once, in the
/// order given.
pub fn checked_tags(field: &str, tags: &[String]) -> Result<Vec<String>, String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "{field} holds {} tags; at most {MAX_TAGS}",
            tags.len()
        ));
    }
    let mut checked: Vec<String> = Vec::with_capacity(tags.len());
    for (i, tag) in tags.iter().enumerate() {
        let tag = checked_text(&format!("{field}[{i}]"), tag, MAX_TAG_LEN)?;
        // A tag sent twice (perhaps with other white space at its ends) is kept once.
        if !checked.contains(&tag) {
            checked.push(tag);
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_refused_when_empty_blank_long_or_controlled() {
        assert_eq!(checked_text("name", "  Soho \u{a0}", 10).unwrap(), "Soho");
        assert_eq!(
            checked_text("name", "", 10).unwrap_err(),
            "name must not be empty"
        );
        assert!(checked_text("name", "\u{3000} ", 10)
            .unwrap_err()
            .contains("white space"));
        assert!(checked_text("name", "abcdefghijk", 10)
            .unwrap_err()
            .contains("longer than 10"));
        assert!(checked_text("name", "a\u{0}b", 10)
            .unwrap_err()
            .contains("U+0000"));
        let tags = ["a".to_owned(), " a".to_owned(), "b".to_owned()];
        assert_eq!(checked_tags("tags", &tags).unwrap(), ["a", "b"]);
        let many: Vec<String> = (0..21).map(|i| i.to_string()).collect();
        assert!(checked_tags("tags", &many).unwrap_err().contains("21 tags"));
    }
}
