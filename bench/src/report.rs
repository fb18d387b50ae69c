//! Formatting: numbers for Markdown tables, and the SVG bar chart.

use std::fmt::Write;

/// 12345.6 → "12,346".
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency or CPU figure in µs with sensible precision.
pub fn us(value: Option<f64>) -> String {
    match value {
        None => "—".to_string(),
        Some(v) if v < 10.0 => format!("{v:.2}"),
        Some(v) if v < 100.0 => format!("{v:.1}"),
        Some(v) => thousands(v),
    }
}

pub fn ratio(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.2}×"),
        _ => "—".to_string(),
    }
}

/// One bar of the chart.
pub struct Bar {
    pub series: usize,
    pub value: f64,
    /// Written inside the bar, upwards (the mode).
    pub label: String,
    /// The tooltip's detail.
    pub note: String,
}

/// A grouped bar chart, log-scale y axis: one group per scenario, one bar per series.
pub fn bar_chart(title: &str, subtitle: &str, series: &[(&str, &str)], groups: &[(String, Vec<Bar>)]) -> String {
    let (left, right, top, bottom) = (80.0, 20.0, 80.0, 70.0);
    let bar_w = 34.0;
    let group_w = bar_w * series.len() as f64 + 40.0;
    let plot_h = 320.0;
    let width = left + right + group_w * groups.len().max(1) as f64;
    let height = top + plot_h + bottom;
    let values = groups.iter().flat_map(|(_, bars)| bars.iter().map(|b| b.value)).filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo_exp, hi_exp) = if hi > 0.0 { (lo.log10().floor() as i32, hi.log10().ceil() as i32) } else { (0, 1) };
    let hi_exp = hi_exp.max(lo_exp + 1);
    let y = |v: f64| {
        let f = (v.max(10f64.powi(lo_exp)).log10() - lo_exp as f64) / (hi_exp - lo_exp) as f64;
        top + plot_h * (1.0 - f)
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{left}" y="22" font-size="16" font-weight="bold">{}</text>"#, escape(title));
    let _ = writeln!(svg, r##"<text x="{left}" y="40" fill="#555">{}</text>"##, escape(subtitle));
    for (i, (name, color)) in series.iter().enumerate() {
        let x = left + i as f64 * 190.0;
        let _ = writeln!(svg, r#"<rect x="{x}" y="52" width="12" height="12" fill="{color}"/>"#);
        let _ = writeln!(svg, r#"<text x="{}" y="62">{}</text>"#, x + 16.0, escape(name));
    }
    for exp in lo_exp..=hi_exp {
        let v = 10f64.powi(exp);
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            width - right,
            left - 6.0,
            yy + 4.0,
            short(v)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">requests/s (log scale)</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    for (g, (name, bars)) in groups.iter().enumerate() {
        let gx = left + g as f64 * group_w + 20.0;
        for bar in bars {
            let x = gx + bar.series as f64 * bar_w;
            let yy = y(bar.value);
            let color = series.get(bar.series).map_or("#999", |s| s.1);
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}: {} req/s ({})</title></rect>"#,
                bar_w - 4.0,
                (top + plot_h - yy).max(0.0),
                escape(series.get(bar.series).map_or("", |s| s.0)),
                thousands(bar.value),
                escape(&bar.note)
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                x + (bar_w - 4.0) / 2.0,
                yy - 3.0,
                short(bar.value)
            );
            let (lx, ly) = (x + (bar_w - 4.0) / 2.0 + 4.0, top + plot_h - 5.0);
            let _ = writeln!(
                svg,
                r#"<text x="{lx:.1}" y="{ly:.1}" font-size="10" fill="white" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"#,
                escape(&bar.label)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + bar_w * series.len() as f64 / 2.0,
            top + plot_h + 18.0,
            escape(name)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        top + plot_h,
        width - right,
        top + plot_h
    );
    svg.push_str("</svg>\n");
    svg
}

/// 12345 → "12k", 1500000 → "1.5M".
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(short(12_345.0), "12k");
        assert_eq!(us(Some(4.56789)), "4.57");
    }
}
