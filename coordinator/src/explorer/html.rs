//! HTML building blocks: escaping, exact token amounts, the page frame, small inline SVG charts.
//! Everything from users or the chain goes through [`esc`]; amounts are integers of base units,
//! never floats.

use std::fmt::Write as _;

use alloy::primitives::{Address, B256, U256};

/// `text` escaped for HTML text and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `amount` base units as an exact decimal with `decimals` places, trailing zeros dropped
/// (`1500000000000000000`, 18 → `1.5`).
pub(crate) fn units(amount: U256, decimals: u8) -> String {
    let digits = amount.to_string();
    let d = usize::from(decimals);
    if d == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = d + 1);
    let (whole, frac) = padded.split_at(padded.len() - d);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{frac}")
    }
}

/// An amount as HTML: the exact decimal and the symbol, with the base units in a data
/// attribute (the browser tests read it) and a tooltip.
/// Digits past the sixth decimal are written smaller: exact, and still readable at a glance.
pub(crate) fn money(amount: U256, decimals: u8, symbol: &str) -> String {
    let exact = units(amount, decimals);
    let shown = match exact.split_once('.') {
        Some((whole, frac)) if frac.len() > 6 => {
            format!(
                r#"{whole}.{}<span class="tail">{}</span>"#,
                &frac[..6],
                &frac[6..]
            )
        }
        _ => exact,
    };
    format!(
        r#"<span class="money" data-base-units="{amount}" title="{amount} base units">{shown} <small>{}</small></span>"#,
        esc(symbol)
    )
}

/// `part / whole` as a percentage with two decimals, computed on integers.
pub(crate) fn percent(part: U256, whole: U256) -> String {
    if whole.is_zero() {
        return "—".into();
    }
    let bp = scaled(part, whole, 10_000);
    format!("{}.{:02} %", bp / 100, bp % 100)
}

/// `part * scale / whole` on integers (`whole` > 0); for amounts so large that the product
/// overflows, the whole is scaled down instead (off by at most one).
fn scaled(part: U256, whole: U256, scale: u64) -> u64 {
    let s = U256::from(scale);
    let q = match part.checked_mul(s) {
        Some(p) => p / whole,
        None => part / (whole / s).max(U256::from(1u64)),
    };
    u64::try_from(q).unwrap_or(u64::MAX)
}

/// `0x1234…abcd`.
pub(crate) fn short(full: &str) -> String {
    if full.len() <= 13 {
        return esc(full);
    }
    format!("{}…{}", esc(&full[..6]), esc(&full[full.len() - 4..]))
}

/// A worker's address linking to its page.
pub(crate) fn worker_link(a: Address) -> String {
    format!(
        r#"<a class="addr" href="/workers/{a}" title="{a}" data-worker="{a}">{}</a>"#,
        short(&a.to_string())
    )
}

/// A hash shortened, whole in the tooltip.
pub(crate) fn hash(h: B256) -> String {
    format!(r#"<code title="{h}">{}</code>"#, short(&h.to_string()))
}

/// A duration in words: `2 h 5 min`, `4 min 10 s`, `12 s`.
pub(crate) fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 if secs.is_multiple_of(60) => format!("{} min", secs / 60),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// `then` relative to `now`: `12 s ago`, `in 4 min 10 s`.
pub(crate) fn ago(then: u64, now: u64) -> String {
    if then <= now {
        format!("{} ago", duration(now - then))
    } else {
        format!("in {}", duration(then - now))
    }
}

/// A label saying where a section's numbers come from.
pub(crate) fn source(kind: Source, what: &str) -> String {
    let (class, label) = match kind {
        Source::Chain => ("src chain", "chain"),
        Source::Report => ("src report", "published report"),
        Source::Coordinator => ("src coord", "coordinator's view"),
        Source::Audit => ("src audit", "audit"),
    };
    format!(
        r#"<span class="{class}" title="{}">{label}: {}</span>"#,
        esc(what),
        esc(what)
    )
}

/// Where a number comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// Chain events or contract reads (through the RPC).
    Chain,
    /// The settlement report the verifier published, checked against the chain.
    Report,
    /// The coordinator's database (its word, not money).
    Coordinator,
    /// The auditor's recomputation.
    Audit,
}

/// A progress bar of `done` out of `total` (with `failed` in red, `busy` striped).
pub(crate) fn progress(done: u32, failed: u32, busy: u32, total: u32) -> String {
    let pct = |n: u32| {
        if total == 0 {
            0.0
        } else {
            f64::from(n) * 100.0 / f64::from(total)
        }
    };
    format!(
        r#"<div class="progress" role="img" aria-label="{done} of {total} tasks decided" title="{done} accepted, {failed} failed, {busy} in progress, of {total}"><span class="p-ok" style="width:{:.2}%"></span><span class="p-fail" style="width:{:.2}%"></span><span class="p-busy" style="width:{:.2}%"></span></div><small>{} / {total} decided</small>"#,
        pct(done),
        pct(failed),
        pct(busy),
        done + failed
    )
}

/// A bar chart of counts per minute (`(minute start, count)`) over the `minutes` before `now`.
pub(crate) fn per_minute_chart(points: &[(u64, u32)], now: u64, minutes: u64) -> String {
    let (w, h, pad) = (1000.0, 140.0, 22.0);
    let first = (now / 60).saturating_sub(minutes - 1) * 60;
    let counts: Vec<u32> = (0..minutes)
        .map(|i| {
            let m = first + i * 60;
            points.iter().find(|(t, _)| *t == m).map_or(0, |(_, n)| *n)
        })
        .collect();
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let bar = (w - pad) / minutes as f64;
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="results per minute, last {minutes} minutes">"#
    );
    let _ = write!(
        svg,
        r#"<text x="0" y="12" class="axis">{max}/min</text><line x1="{pad}" y1="{y}" x2="{w}" y2="{y}" class="base"/>"#,
        y = h - pad
    );
    for (i, n) in counts.iter().enumerate() {
        let bh = f64::from(*n) / f64::from(max) * (h - pad - 18.0);
        let x = pad + i as f64 * bar;
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" class="bar"><title>{n} results in the minute from {}</title></rect>"#,
            x + 2.0,
            h - pad - bh,
            bar - 4.0,
            bh,
            clock(first + i as u64 * 60)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{pad}" y="{h}" class="axis">{} min ago</text><text x="{w}" y="{h}" class="axis" text-anchor="end">now</text></svg>"#,
        minutes
    );
    svg
}

/// A line chart of `(label, value in [0, 1])` points, left to right.
pub(crate) fn line_chart(points: &[(String, f64)]) -> String {
    let (w, h, pad) = (600.0, 140.0, 30.0);
    if points.is_empty() {
        return r#"<p class="muted">No confidence recorded yet: a settled job's report lists the confidence of each worker it pays.</p>"#.into();
    }
    let step = if points.len() > 1 {
        (w - 2.0 * pad) / (points.len() - 1) as f64
    } else {
        0.0
    };
    let xy = |i: usize, v: f64| {
        (
            pad + i as f64 * step
                + if points.len() == 1 {
                    (w - 2.0 * pad) / 2.0
                } else {
                    0.0
                },
            h - pad - v.clamp(0.0, 1.0) * (h - 2.0 * pad),
        )
    };
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="confidence per settled job"><text x="0" y="{:.1}" class="axis">1.0</text><text x="0" y="{:.1}" class="axis">0</text><line x1="{pad}" y1="{:.1}" x2="{w}" y2="{:.1}" class="base"/>"#,
        pad + 4.0,
        h - pad + 4.0,
        h - pad,
        h - pad
    );
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (_, v))| {
            let (x, y) = xy(i, *v);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = write!(
        svg,
        r#"<polyline points="{}" class="line"/>"#,
        path.join(" ")
    );
    for (i, (label, v)) in points.iter().enumerate() {
        let (x, y) = xy(i, *v);
        let _ = write!(
            svg,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" class="dot"><title>{}: {v:.4}</title></circle><text x="{x:.1}" y="{:.1}" class="axis" text-anchor="middle">{}</text>"#,
            esc(label),
            h - 8.0,
            esc(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars of `(label html, value, value html)`, scaled to the largest.
pub(crate) fn bars(rows: &[(String, U256, String)]) -> String {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(U256::ZERO);
    let mut out = String::from(r#"<div class="bars">"#);
    for (label, v, text) in rows {
        let pct = if max.is_zero() {
            0
        } else {
            scaled(*v, max, 1000)
        };
        let _ = write!(
            out,
            r#"<div class="bar-row"><div class="bar-label">{label}</div><div class="bar-track"><div class="bar-fill" style="width:{}.{}%"></div></div><div class="bar-value">{text}</div></div>"#,
            pct / 10,
            pct % 10
        );
    }
    out.push_str("</div>");
    out
}

/// `HH:MM:SS` UTC of a unix time.
pub(crate) fn clock(t: u64) -> String {
    format!("{:02}:{:02}:{:02}", t / 3600 % 24, t / 60 % 60, t % 60)
}

/// The page frame: header, navigation, `body`, the live-update script. `live`: the page polls
/// itself while what it shows can still change.
pub(crate) fn page(title: &str, body: &str, live: bool) -> String {
    let live_attr = if live { r#" data-live="1""# } else { "" };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Gleaner explorer</title><link rel="stylesheet" href="/explorer/style.css"><link rel="icon" href="data:,">
</head><body>
<header><a class="brand" href="/">◆ Gleaner <span>explorer</span></a><nav><a href="/">Network</a></nav><span id="live" class="live-dot" aria-live="polite"></span></header>
<main{live_attr}>
{body}
</main>
<footer>Money (escrow, payouts, refunds, fees, stakes, slashes) comes from chain events and contract reads through the RPC, and from the settlement report the verifier published, checked against its on-chain hash. Task and replica progress is the coordinator's view. Amounts are exact.</footer>
<script src="/explorer/live.js"></script>
</body></html>"#,
        title = esc(title)
    )
}

/// The CSS (served at `/explorer/style.css`).
pub(crate) const STYLE: &str = include_str!("style.css");

/// The live-update script (served at `/explorer/live.js`): re-fetches the page every two
/// seconds and swaps its `<main>` while the page says it is live; without JavaScript the pages
/// are the same, just static.
pub(crate) const SCRIPT: &str = include_str!("live.js");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_open_markup() {
        assert_eq!(
            esc(r#"<script>alert("x&'y")</script>"#),
            "&lt;script&gt;alert(&quot;x&amp;&#39;y&quot;)&lt;/script&gt;"
        );
        assert_eq!(esc("plain"), "plain");
    }

    #[test]
    fn amounts_are_exact_decimals() {
        let cases = [
            ("0", 18, "0"),
            ("1", 18, "0.000000000000000001"),
            ("1500000000000000000", 18, "1.5"),
            ("300000000000000000000", 18, "300"),
            ("29999999999999999999", 18, "29.999999999999999999"),
            ("123", 0, "123"),
            ("123", 2, "1.23"),
            ("5", 2, "0.05"),
        ];
        for (base, decimals, want) in cases {
            assert_eq!(units(base.parse().unwrap(), decimals), want, "{base}");
        }
        let max = units(U256::MAX, 18);
        assert!(max.starts_with("115792089237316195423570985008687907853269984665640564039457."));
        assert!(money(U256::from(5), 1, "<b>").contains("0.5 <small>&lt;b&gt;</small>"));
        let m = money("29999999999999999998".parse().unwrap(), 18, "GLT");
        assert!(
            m.contains(r#"29.999999<span class="tail">999999999998</span>"#),
            "{m}"
        );
        assert!(m.contains(r#"data-base-units="29999999999999999998""#));
    }

    #[test]
    fn percentages_and_durations() {
        assert_eq!(percent(U256::from(1), U256::from(3)), "33.33 %");
        assert_eq!(percent(U256::from(3), U256::from(3)), "100.00 %");
        assert_eq!(percent(U256::from(3), U256::ZERO), "—");
        assert_eq!(percent(U256::MAX, U256::MAX), "100.00 %");
        assert_eq!(duration(5), "5 s");
        assert_eq!(duration(250), "4 min 10 s");
        assert_eq!(duration(7500), "2 h 5 min");
        assert_eq!(ago(90, 100), "10 s ago");
        assert_eq!(ago(160, 100), "in 1 min");
        assert_eq!(short("0x1234567890abcdef"), "0x1234…cdef");
    }

    #[test]
    fn charts_are_svg_without_outside_references() {
        let c = per_minute_chart(&[(120, 3), (180, 1)], 200, 5);
        assert!(c.starts_with("<svg") && c.ends_with("</svg>"));
        assert_eq!(c.matches("<rect").count(), 5);
        let l = line_chart(&[("job <1>".into(), 0.95), ("job 2".into(), 1.0)]);
        assert!(l.contains("job &lt;1&gt;") && !l.contains("job <1>"));
        let page = page("<x>", "<p>body</p>", true);
        assert!(page.contains("<title>&lt;x&gt;"));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
