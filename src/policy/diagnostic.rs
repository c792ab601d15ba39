//! Cedar's own diagnostics (its parse and validation errors are
//! `miette::Diagnostic`s) as an operator reads a compiler's: the file, line
//! and column first, then each labelled span under its source line, then
//! Cedar's help.
//!
//! Rendered here rather than by miette's graphical handler, whose text
//! wrapping would bring a Unicode segmenter and its data into the build for
//! a few lines of output.

use std::fmt::Write as _;
use std::path::Path;

use miette::Diagnostic;

/// `diagnostic`, about the Cedar source `text` read from `path`:
///
/// ```text
/// policies/travel.cedar:3:38: unexpected token `when`
///     3 | permit (principal, action, resource) when
///       |                                      ^^^^ expected `;`
///     = help: …
/// ```
///
/// A diagnostic without a span names the file alone.
pub(super) fn render(path: &Path, text: &str, diagnostic: &dyn Diagnostic) -> String {
    let labels: Vec<miette::LabeledSpan> = diagnostic.labels().map(Iterator::collect).unwrap_or_default();
    let mut out = match labels.first() {
        Some(first) => {
            let (line, column) = line_and_column(text, first.offset());
            format!("{}:{line}:{column}: {diagnostic}", path.display())
        }
        None => format!("{}: {diagnostic}", path.display()),
    };
    for label in &labels {
        let (line, column) = line_and_column(text, label.offset());
        let source = text.lines().nth(line.saturating_sub(1)).unwrap_or_default();
        // The mark stays on its line: a span running past it is cut there.
        let width = source.chars().count().saturating_sub(column - 1).min(label.len().max(1)).max(1);
        let number = line.to_string();
        let gutter = " ".repeat(number.len());
        let _ =
            write!(out, "\n    {number} | {source}\n    {gutter} | {}{}", " ".repeat(column - 1), "^".repeat(width));
        if let Some(text) = label.label() {
            let _ = write!(out, " {text}");
        }
    }
    if let Some(help) = diagnostic.help() {
        let _ = write!(out, "\n    = help: {help}");
    }
    out
}

/// The 1-based line and column (in characters) of byte `offset` in `text`;
/// an offset past the end, or inside a character, counts as the end.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = (0..=offset.min(text.len())).rev().find_map(|end| text.get(..end)).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn lines_and_columns_count_from_one_in_characters() {
        let text = "ab\ncé\nd";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 1), (1, 2));
        assert_eq!(line_and_column(text, 3), (2, 1));
        // `é` is two bytes: the `\n` after it is the third character.
        assert_eq!(line_and_column(text, 6), (2, 3));
        assert_eq!(line_and_column(text, 7), (3, 1));
        assert_eq!(line_and_column(text, 99), (3, 2));
        assert_eq!(line_and_column(text, 5), (2, 2), "inside `é`: its start");
    }

    #[test]
    fn a_syntax_error_names_its_file_line_and_column_and_marks_the_span() {
        let text = "// rules\npermit (principal, action, resource)\nwhen { context.depth > };\n";
        let errors = cedar_policy::PolicySet::from_str(text).unwrap_err();
        let rendered = render(Path::new("policies/bad.cedar"), text, &errors);
        let mut lines = rendered.lines();
        let first = lines.next().unwrap();
        assert!(first.starts_with("policies/bad.cedar:3:24: "), "{rendered}");
        assert_eq!(lines.next(), Some("    3 | when { context.depth > };"), "{rendered}");
        assert!(lines.next().unwrap().starts_with("      |                        ^"), "{rendered}");
        assert!(!rendered.contains("ParseErrors("), "no Debug dump: {rendered}");
    }
}
