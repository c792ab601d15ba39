//! The delegation tree as a picture (SVG): the token asked about, its
//! ancestors above it, its descendants below. Each token is a box naming its
//! agent, target, scopes and lifetime, coloured by its state, marked where a
//! person approved it or it is bound to a key (DPoP), and linking to its own
//! page.

use maud::{html, Markup, PreEscaped};

use crate::admin::{Trace, TraceNode};
use crate::store::Status;

const WIDTH: i64 = 420;
/// The most characters a line of a box holds (12 px monospace); the whole
/// text is in the box's tooltip.
const LINE: usize = 56;
const HEIGHT: i64 = 78;
const GAP_X: i64 = 24;
const GAP_Y: i64 = 36;

/// How a token stands, as the picture colours it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Standing {
    /// Nothing kills it.
    Live,
    /// It or an ancestor was revoked, or a principal of its chain deprovisioned.
    Revoked,
    /// Past its `exp`.
    Expired,
}

impl Standing {
    pub fn of(node: &TraceNode) -> Standing {
        match (node.status, node.expired) {
            (Status::Revoked | Status::Deprovisioned, _) => Standing::Revoked,
            (Status::Active, true) => Standing::Expired,
            (Status::Active, false) => Standing::Live,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Standing::Live => "live",
            Standing::Revoked => "revoked",
            Standing::Expired => "expired",
        }
    }
}

/// One box placed in the picture, and the box it hangs from.
struct Placed<'a> {
    node: &'a TraceNode,
    x: i64,
    y: i64,
    parent: Option<usize>,
    selected: bool,
}

/// Places `node` at `row` and its descendants below it: leaves left to
/// right from column `next`, each parent centred over its children.
fn place<'a>(node: &'a TraceNode, row: i64, parent: Option<usize>, next: &mut i64, placed: &mut Vec<Placed<'a>>) {
    let index = placed.len();
    let y = row * (HEIGHT + GAP_Y);
    placed.push(Placed { node, x: 0, y, parent, selected: false });
    let first_child = placed.len();
    for child in &node.children {
        place(child, row + 1, Some(index), next, placed);
    }
    let children: Vec<i64> =
        placed.iter().skip(first_child).filter(|placed| placed.parent == Some(index)).map(|placed| placed.x).collect();
    let x = match (children.first(), children.last()) {
        (Some(left), Some(right)) => (left + right) / 2,
        _ => {
            let x = *next;
            *next += WIDTH + GAP_X;
            x
        }
    };
    if let Some(me) = placed.get_mut(index) {
        me.x = x;
    }
}

/// The picture of `trace`.
pub fn picture(trace: &Trace) -> Markup {
    let mut placed: Vec<Placed<'_>> = Vec::new();
    // Ancestors stand in one column above the token, root first; the token's
    // descendants are placed under it, and the column is moved over it.
    for (row, ancestor) in trace.ancestors.iter().enumerate() {
        let parent = row.checked_sub(1);
        placed.push(Placed { node: ancestor, x: 0, y: row as i64 * (HEIGHT + GAP_Y), parent, selected: false });
    }
    let token = placed.len();
    let mut next = 0;
    place(&trace.token, trace.ancestors.len() as i64, token.checked_sub(1), &mut next, &mut placed);
    if let Some(selected) = placed.get_mut(token) {
        selected.selected = true;
    }
    let token_x = placed.get(token).map_or(0, |placed| placed.x);
    for ancestor in placed.iter_mut().take(token) {
        ancestor.x = token_x;
    }
    let width = placed.iter().map(|placed| placed.x).max().unwrap_or(0) + WIDTH;
    let height = placed.iter().map(|placed| placed.y).max().unwrap_or(0) + HEIGHT;
    let edges: Vec<(i64, i64, i64, i64)> = placed
        .iter()
        .filter_map(|each| {
            let parent = placed.get(each.parent?)?;
            Some((parent.x + WIDTH / 2, parent.y + HEIGHT, each.x + WIDTH / 2, each.y))
        })
        .collect();
    html! {
        svg #tree xmlns="http://www.w3.org/2000/svg" role="img" width=(width) height=(height)
            viewBox={ "0 0 " (width) " " (height) } {
            title { "Delegation tree" }
            @for (x1, y1, x2, y2) in &edges {
                line.edge x1=(x1) y1=(y1) x2=(x2) y2=(y2) {}
            }
            @for each in &placed { (token_box(each)) }
        }
    }
}

fn token_box(placed: &Placed<'_>) -> Markup {
    let node = placed.node;
    let standing = Standing::of(node);
    let agent = node.agent.as_deref().unwrap_or("?");
    let target = node.target.as_deref().unwrap_or("?");
    let times =
        format!("{} .. {}", node.issued_at, node.expires_at.map_or_else(|| "?".to_owned(), |at| at.to_string()));
    let class = format!("node {}{}", standing.name(), if placed.selected { " selected" } else { "" });
    html! {
        a href=(super::link::trace(&node.jti.0)) {
            g class=(class) data-jti=(node.jti.0) data-status=(standing.name()) {
                title { (agent) " → " (target) " (" (standing.name()) "): " (node.scope.as_deref().unwrap_or("")) }
                rect x=(placed.x) y=(placed.y) width=(WIDTH) height=(HEIGHT) rx="6" {}
                text x=(placed.x + 10) y=(placed.y + 20) {
                    tspan.agent { (agent) } (PreEscaped(" &#8594; ")) (fitted(target, LINE.saturating_sub(agent.len() + 3)))
                }
                text x=(placed.x + 10) y=(placed.y + 40) { (fitted(node.scope.as_deref().unwrap_or(""), LINE)) }
                text.times x=(placed.x + 10) y=(placed.y + 60) { (times) " · " (standing.name()) }
                @if let Some(approval) = &node.approval {
                    // A person approved this hop: marked in the corner.
                    text.approved x=(placed.x + WIDTH - 10) y=(placed.y + 20) text-anchor="end" data-approval=(approval) {
                        title { "approved by a person (" (approval) ")" }
                        "approved"
                    }
                }
                @if let Some(jkt) = &node.dpop_jkt {
                    // Only the holder of one key can use it (RFC 9449).
                    text.dpop x=(placed.x + WIDTH - 10) y=(placed.y + 40) text-anchor="end" data-jkt=(jkt) {
                        title { "bound to a key by DPoP (thumbprint " (jkt) ")" }
                        "DPoP"
                    }
                }
            }
        }
    }
}

/// `text` cut to `length` characters, marked when cut.
fn fitted(text: &str, length: usize) -> String {
    match text.char_indices().nth(length.saturating_sub(1)) {
        Some((end, _)) if text.chars().count() > length => format!("{}…", &text[..end]),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::fitted;

    #[test]
    fn a_long_line_is_cut_and_marked() {
        assert_eq!(fitted("flights.read", 56), "flights.read");
        assert_eq!(fitted("abcdef", 4), "abc…");
        assert_eq!(fitted("ééééé", 3), "éé…");
    }
}
