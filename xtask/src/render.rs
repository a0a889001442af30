//! docs/coverage.md and docs/coverage.svg, rendered from the matrix alone (so that validate can check
//! them by rendering again).

use std::collections::BTreeMap;
use std::fmt::Write;

use hwcov::spec::ModelSpec;
use hwcov::{CellResult, PlatformId, Status};

use crate::matrix::Matrix;

/// A row of the measured-cells table.
fn measured_row(s: &mut String, c: &CellResult) {
    let (rel, secs) = match &c.report {
        Some(r) => (
            r.outputs
                .iter()
                .filter(|o| !o.exact)
                .map(|o| o.max_rel_err)
                .fold(0.0, f64::max),
            r.load_seconds + r.run_seconds,
        ),
        None => (f64::NAN, f64::NAN),
    };
    let _ = writeln!(
        s,
        "| {} | {} | {} {} | {} | {} | {} | {} | {:.1e} | {:.3} |",
        c.model,
        c.platform,
        mark(c.status),
        c.status,
        escape_md(c.device.as_deref().unwrap_or("")),
        c.host,
        c.date,
        c.max_abs_err().map(|e| format!("{e:.1e}")).unwrap_or_default(),
        rel,
        secs
    );
}

fn mark(s: Status) -> &'static str {
    match s {
        Status::Verified => "✅",
        Status::Failed => "❌",
        Status::Unsupported => "🚫",
        Status::NotVerifiedHere => "➖",
        Status::NotImplemented => "⬜",
    }
}

fn short_err(c: &CellResult) -> String {
    match c.max_abs_err() {
        Some(e) if c.status.is_measured() => format!(" {e:.1e}"),
        _ => String::new(),
    }
}

fn count(m: &Matrix, s: Status) -> usize {
    m.cells.iter().filter(|c| c.status == s).count()
}

fn escape_md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(specs: &[ModelSpec], m: &Matrix) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "<!-- {} -->", m.generated);
    s.push_str("# Coverage: what runs where, measured\n\n");
    s.push_str(
        "A cell is **verified** only when a real run on that platform produced every reference output of the \
         model's fixture (`fixtures/<model>/io.safetensors`, made by transformers) within the model's tolerance \
         (f32: atol = rtol = 1e-4); the number is the largest absolute error over its outputs. Every other cell \
         says why not. Regenerate with `cargo xtask coverage`.\n\n",
    );
    s.push_str("![coverage heatmap](coverage.svg)\n\n");
    let _ = writeln!(
        s,
        "{} verified, {} failed, {} unsupported, {} not verified here, {} not implemented, of {} cells.\n",
        count(m, Status::Verified),
        count(m, Status::Failed),
        count(m, Status::Unsupported),
        count(m, Status::NotVerifiedHere),
        count(m, Status::NotImplemented),
        m.cells.len()
    );
    s.push_str("| model | class | checkpoint |");
    for p in PlatformId::ALL {
        let _ = write!(s, " {p} |");
    }
    s.push_str("\n|---|---|---|");
    for _ in PlatformId::ALL {
        s.push_str("---|");
    }
    s.push('\n');
    for spec in specs {
        let _ = write!(s, "| {} | {} | `{}` |", spec.name, spec.class, spec.hub_id);
        for p in PlatformId::ALL {
            match m.cell(&spec.name, p) {
                Some(c) => {
                    let _ = write!(s, " {} {}{} |", mark(c.status), c.status, short_err(c));
                }
                None => s.push_str(" ? not measured |"),
            }
        }
        s.push('\n');
    }

    s.push_str("\n## Measured cells\n\n");
    s.push_str(
        "Every measurement of every cell: the one the matrix shows first, then the cell's other runs (another \
         machine, an earlier date).\n\n",
    );
    s.push_str("| model | platform | status | device | host | date | max abs err | max rel err | load + run (s) |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for c in m.cells.iter().filter(|c| c.status.is_measured()) {
        measured_row(&mut s, c);
        for o in m.also.iter().filter(|o| o.model == c.model && o.platform == c.platform) {
            measured_row(&mut s, o);
        }
    }
    let failures: Vec<_> = m.cells.iter().filter(|c| c.status == Status::Failed).collect();
    if !failures.is_empty() {
        s.push_str("\n## Failures\n\n");
        for c in failures {
            let _ = writeln!(
                s,
                "- **{} on {}**: {}",
                c.model,
                c.platform,
                escape_md(c.reason.as_deref().unwrap_or(""))
            );
        }
    }

    s.push_str("\n## Why the other cells are not verified\n\n");
    let mut why: BTreeMap<(Status, String), Vec<String>> = BTreeMap::new();
    for c in m.cells.iter().filter(|c| !c.status.is_measured()) {
        why.entry((c.status, c.reason.clone().unwrap_or_default()))
            .or_default()
            .push(format!("{}/{}", c.model, c.platform));
    }
    s.push_str("| status | reason | cells |\n|---|---|---|\n");
    for ((status, reason), cells) in why {
        let _ = writeln!(
            s,
            "| {} {} | {} | {} |",
            mark(status),
            status,
            escape_md(&reason),
            cells.join(", ")
        );
    }

    s.push_str("\n## Runs merged\n\n| source | host | date | platforms compiled in |\n|---|---|---|---|\n");
    for r in &m.runs {
        let compiled: Vec<_> = r.platforms_compiled.iter().map(|p| p.as_str()).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            r.source,
            r.host,
            r.date,
            compiled.join(", ")
        );
    }
    s
}

fn color(s: Status) -> (&'static str, &'static str) {
    match s {
        Status::Verified => ("#2e7d32", "#ffffff"),
        Status::Failed => ("#c62828", "#ffffff"),
        Status::Unsupported => ("#6d4c41", "#ffffff"),
        Status::NotVerifiedHere => ("#f9a825", "#000000"),
        Status::NotImplemented => ("#e0e0e0", "#424242"),
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A heatmap: one row per model, one column per platform, coloured by status, with the max error.
pub fn svg(specs: &[ModelSpec], m: &Matrix) -> String {
    const LEFT: usize = 170;
    const TOP: usize = 64;
    const W: usize = 118;
    const H: usize = 30;
    let width = LEFT + W * PlatformId::ALL.len() + 10;
    let legend_y = TOP + H * specs.len() + 22;
    let height = legend_y + 30;
    let mut s = String::new();
    let _ = writeln!(s, "<!-- {} -->", xml(&m.generated));
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>");
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">hwcov: {} of {} cells verified against transformers</text>",
        count(m, Status::Verified),
        m.cells.len()
    );
    for (j, p) in PlatformId::ALL.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"bold\">{p}</text>",
            LEFT + j * W + W / 2,
            TOP - 10
        );
    }
    for (i, spec) in specs.iter().enumerate() {
        let y = TOP + i * H;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} ({})</text>",
            LEFT - 8,
            y + H / 2 + 4,
            xml(&spec.name),
            xml(&spec.class)
        );
        for (j, p) in PlatformId::ALL.iter().enumerate() {
            let x = LEFT + j * W;
            let (status, label, tip) = match m.cell(&spec.name, *p) {
                Some(c) => (
                    c.status,
                    format!("{}{}", c.status, short_err(c)),
                    format!(
                        "{} on {}: {}{}",
                        c.model,
                        c.platform,
                        c.status,
                        c.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                    ),
                ),
                None => (Status::NotImplemented, "not measured".to_string(), String::new()),
            };
            let (bg, fg) = color(status);
            let _ = writeln!(
                s,
                "<g><title>{}</title><rect x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{}\" rx=\"3\" fill=\"{bg}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{fg}\" font-size=\"11\">{}</text></g>",
                xml(&tip),
                x + 1,
                W - 2,
                H - 2,
                x + W / 2,
                y + H / 2 + 3,
                xml(&label)
            );
        }
    }
    let mut x = 10;
    for st in [
        Status::Verified,
        Status::Failed,
        Status::Unsupported,
        Status::NotVerifiedHere,
        Status::NotImplemented,
    ] {
        let (bg, _) = color(st);
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{}\" width=\"14\" height=\"14\" fill=\"{bg}\"/><text x=\"{}\" y=\"{}\">{st}</text>",
            legend_y,
            x + 20,
            legend_y + 12
        );
        x += 40 + 8 * st.as_str().len();
    }
    s.push_str("</svg>\n");
    s
}
