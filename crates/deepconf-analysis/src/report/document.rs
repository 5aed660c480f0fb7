//! A tiny document model rendered both as Markdown and as self-contained HTML (figures inlined as
//! SVG), so the two reports always say the same thing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One block of a report.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A heading of level 1-4.
    Heading(u8, String),
    /// A paragraph (plain text; `**bold**` is kept in Markdown and rendered in HTML).
    Paragraph(String),
    /// A bullet list.
    List(Vec<String>),
    /// A table: header and rows.
    Table(Vec<String>, Vec<Vec<String>>),
    /// A figure: plot file stem and caption.
    Figure(String, String),
}

/// A report: blocks in reading order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    /// The blocks.
    pub blocks: Vec<Block>,
}

impl Document {
    /// Appends a heading.
    pub fn heading(&mut self, level: u8, text: impl Into<String>) {
        self.blocks.push(Block::Heading(level, text.into()));
    }
    /// Appends a paragraph.
    pub fn paragraph(&mut self, text: impl Into<String>) {
        self.blocks.push(Block::Paragraph(text.into()));
    }
    /// Appends a list.
    pub fn list(&mut self, items: Vec<String>) {
        self.blocks.push(Block::List(items));
    }
    /// Appends a table.
    pub fn table(&mut self, header: &[&str], rows: Vec<Vec<String>>) {
        self.blocks.push(Block::Table(
            header.iter().map(|s| s.to_string()).collect(),
            rows,
        ));
    }
    /// Appends a figure.
    pub fn figure(&mut self, name: impl Into<String>, caption: impl Into<String>) {
        self.blocks.push(Block::Figure(name.into(), caption.into()));
    }

    /// Markdown; figures link `plots/<name>.png`.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let _ = writeln!(out, "{} {text}\n", "#".repeat(usize::from(*level)));
                }
                Block::Paragraph(text) => {
                    let _ = writeln!(out, "{text}\n");
                }
                Block::List(items) => {
                    for item in items {
                        let _ = writeln!(out, "- {item}");
                    }
                    out.push('\n');
                }
                Block::Table(header, rows) => {
                    let cell = |s: &String| s.replace('|', "\\|");
                    let _ = writeln!(
                        out,
                        "| {} |",
                        header.iter().map(cell).collect::<Vec<_>>().join(" | ")
                    );
                    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
                    for row in rows {
                        let _ = writeln!(
                            out,
                            "| {} |",
                            row.iter().map(cell).collect::<Vec<_>>().join(" | ")
                        );
                    }
                    out.push('\n');
                }
                Block::Figure(name, caption) => {
                    let _ = writeln!(out, "![{caption}](plots/{name}.png)\n\n*{caption}*\n");
                }
            }
        }
        out
    }

    /// Self-contained HTML; figures are the SVG texts of `svgs` (by plot name), inlined.
    pub fn to_html(&self, title: &str, svgs: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
body{{font-family:'DejaVu Sans',Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}}\
table{{border-collapse:collapse;margin:1em 0;font-size:0.92em}}th,td{{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top}}\
th{{background:#eef}}figure{{margin:1.5em 0}}figure svg{{max-width:100%;height:auto}}figcaption{{font-style:italic;color:#444}}\
</style></head><body>\n",
            escape(title)
        );
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let _ = writeln!(out, "<h{level}>{}</h{level}>", inline(text));
                }
                Block::Paragraph(text) => {
                    let _ = writeln!(out, "<p>{}</p>", inline(text));
                }
                Block::List(items) => {
                    out.push_str("<ul>\n");
                    for item in items {
                        let _ = writeln!(out, "<li>{}</li>", inline(item));
                    }
                    out.push_str("</ul>\n");
                }
                Block::Table(header, rows) => {
                    out.push_str("<table><thead><tr>");
                    for h in header {
                        let _ = write!(out, "<th>{}</th>", inline(h));
                    }
                    out.push_str("</tr></thead><tbody>\n");
                    for row in rows {
                        out.push_str("<tr>");
                        for c in row {
                            let _ = write!(out, "<td>{}</td>", inline(c));
                        }
                        out.push_str("</tr>\n");
                    }
                    out.push_str("</tbody></table>\n");
                }
                Block::Figure(name, caption) => {
                    let body = svgs
                        .get(name)
                        .map(|svg| strip_xml_declaration(svg).to_string())
                        .unwrap_or_else(|| format!("<p>(plot {} not drawn)</p>", escape(name)));
                    let _ = writeln!(
                        out,
                        "<figure>{body}<figcaption>{}</figcaption></figure>",
                        inline(caption)
                    );
                }
            }
        }
        out.push_str("</body></html>\n");
        out
    }
}

fn strip_xml_declaration(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(start) => &svg[start..],
        None => svg,
    }
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Escapes text and renders `**bold**` and `` `code` ``.
fn inline(text: &str) -> String {
    let escaped = escape(text);
    let mut out = String::with_capacity(escaped.len());
    let mut bold = false;
    let mut code = false;
    let mut rest = escaped.as_str();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("**") {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = after;
        } else if let Some(after) = rest.strip_prefix('`') {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = after;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if bold {
        out.push_str("</strong>");
    }
    if code {
        out.push_str("</code>");
    }
    out
}
