//! Excerpts of user input in error messages. An error quotes what it could not read, and that
//! can be a 2 MB line (a TOML value, a JSON string): quoting it whole buries the message in
//! megabytes of output. Every quote is cut to about `EXCERPT_CHARS_MAX` characters, saying how
//! many were left out; a source line shown with a caret under the error (as TOML errors show
//! it) keeps a window around the caret, so the spot stays visible.

/// The most characters of user input an error message quotes in one piece.
pub const EXCERPT_CHARS_MAX: usize = 200;

/// `text` itself when it is at most `max` characters, else its first `max` characters and how
/// many more there were.
pub fn cut(text: &str, max: usize) -> String {
    let length = text.chars().count();
    if length <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max).collect();
    format!("{kept}… ({} more characters)", length - max)
}

/// A message with each line fitted to about `max` characters. A line followed by a caret line
/// (`  |    ^^^`) is shown as a window of `max` characters around the caret, with the caret
/// moved to match; any other long line is `cut`.
pub fn fit_lines(message: &str, max: usize) -> String {
    let lines: Vec<&str> = message.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        if let Some((source, caret)) = lines
            .get(index + 1)
            .and_then(|next| window_pair(line, next, max))
        {
            out.push(source);
            out.push(caret);
            index += 2;
            continue;
        }
        out.push(cut(line, max));
        index += 1;
    }
    let mut fitted = out.join("\n");
    if message.ends_with('\n') {
        fitted.push('\n');
    }
    fitted
}

/// A long source line `N | text` and its caret line `  | ^^`, as a window around the caret.
/// `None` when the pair is not one, or is short enough as it is.
fn window_pair(source: &str, caret: &str, max: usize) -> Option<(String, String)> {
    let (source_gutter, text) = source.split_once("| ")?;
    let (caret_gutter, marks) = caret.split_once("| ")?;
    let is_caret = marks.contains('^') && marks.chars().all(|c| matches!(c, ' ' | '^' | '~'));
    let text: Vec<char> = text.chars().collect();
    if !is_caret || text.len() <= max {
        return None;
    }
    let marks: Vec<char> = marks.chars().collect();
    let column = marks.iter().position(|c| *c != ' ')?;
    let start = column
        .saturating_sub(max / 2)
        .min(text.len().saturating_sub(max));
    let end = (start + max).min(text.len());
    let before = if start > 0 { "…" } else { "" };
    let after = if end < text.len() {
        format!("… ({} characters left out)", text.len() - (end - start))
    } else {
        String::new()
    };
    let shown: String = text[start..end].iter().collect();
    let mark_end = marks.len().min(end);
    let underline: String = marks[column..mark_end].iter().collect();
    let indent = " ".repeat(column - start + before.chars().count());
    Some((
        format!("{source_gutter}| {before}{shown}{after}"),
        format!("{caret_gutter}| {indent}{underline}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_saying_how_much() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcdef", 3), "abc… (3 more characters)");
        assert_eq!(cut("ééééé", 2), "éé… (3 more characters)");
    }

    #[test]
    fn a_long_source_line_keeps_a_window_around_its_caret() {
        let line = format!("{}JUNK{}", "x".repeat(5_000), "y".repeat(5_000));
        let caret = format!("{}^^^^", " ".repeat(5_000));
        let message = format!(
            "error at line 2, column 5001\n  |\n2 | {line}\n  | {caret}\nexpected newline\n"
        );
        let fitted = fit_lines(&message, 40);
        let lines: Vec<&str> = fitted.lines().collect();
        assert_eq!(lines[0], "error at line 2, column 5001");
        assert_eq!(lines[4], "expected newline");
        assert!(fitted.ends_with('\n'));
        let source = lines[2].strip_prefix("2 | ").unwrap();
        let caret = lines[3].strip_prefix("  | ").unwrap();
        assert!(
            source.starts_with('…') && source.contains("JUNK"),
            "{source}"
        );
        assert!(source.ends_with("(9964 characters left out)"), "{source}");
        // The caret still points at JUNK.
        let at = caret.find('^').unwrap();
        assert_eq!(
            &source[source.char_indices().nth(at).unwrap().0..][..4],
            "JUNK"
        );
        assert!(lines.iter().all(|l| l.chars().count() < 80), "{fitted}");
    }

    #[test]
    fn a_short_message_is_unchanged() {
        let message =
            "TOML parse error at line 2, column 1\n  |\n2 | bogus = 1\n  | ^^^^^\nunknown field";
        assert_eq!(fit_lines(message, 200), message);
    }
}
