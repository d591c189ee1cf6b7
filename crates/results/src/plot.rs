//! Minimal SVG line charts in the style of the paper's figures: paired curves, optional log-scale
//! y axis (LR and weight norm), a shaded band per curve (the spread over seeds), dashed curves
//! (negative controls) and vertical markers (LR milestones). Hand-written to keep the
//! dependency tree small; the one plotter of the workspace.

use std::fmt::Write;

/// One curve.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// (x, y) points; non-finite (or, on a log axis, non-positive) y values are skipped.
    pub points: Vec<(f64, f64)>,
    /// (x, low, high): a band shaded around the curve (e.g. the min–max over seeds); empty for
    /// none.
    pub band: Vec<(f64, f64, f64)>,
    /// Draw the curve dashed (a negative control).
    pub dashed: bool,
}

impl Series {
    /// A plain solid curve without a band.
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
            ..Self::default()
        }
    }
}

/// A chart.
#[derive(Clone, Debug)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// X-axis label.
    pub x_label: String,
    /// Y-axis label.
    pub y_label: String,
    /// Log10 y axis.
    pub log_y: bool,
    /// Log10 x axis (e.g. update counts 1, 2, 4, …, 256).
    pub log_x: bool,
    /// The curves.
    pub series: Vec<Series>,
    /// x positions of vertical marker lines (e.g. LR milestones), with a label each.
    pub markers: Vec<(f64, String)>,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// The dash pattern of dashed curves.
const DASHED: &str = "6,3";

fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let raw = (hi - lo) / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// An axis' ticks over `[lo, hi]` (on the axis' own scale) with their labels: every decade of
/// a log axis (`decade` labels the exponent), about `n` round values of a linear one.
fn ticks(
    log: bool,
    lo: f64,
    hi: f64,
    n: usize,
    decade: impl Fn(i32) -> String,
) -> Vec<(f64, String)> {
    if log {
        (lo.ceil() as i32..=hi.floor() as i32)
            .map(|e| (e as f64, decade(e)))
            .collect()
    } else {
        nice_ticks(lo, hi, n)
            .into_iter()
            .map(|t| (t, fmt_tick(t)))
            .collect()
    }
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 && v.abs() < 1e7 && v == v.round() {
        // Whole step counts (15000, 25000): `{:.0e}` would print both as 2e4.
        format!("{v:.0}")
    } else if v.abs() >= 1e4 || v.abs() < 1e-3 {
        // Shortest exponent form that still tells neighbouring ticks apart (1.5e-4, 2e-4).
        let s = format!("{v:.1e}");
        s.replace(".0e", "e")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Where the data land on the canvas: the canvas size, the margins around the plot area and
/// the (axis-transformed) data range that the plot area shows.
#[derive(Clone, Copy)]
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    /// The frame that shows every point (a unit square for none), with 5 % room above and
    /// below.
    fn fit(all: &[(f64, f64)]) -> Self {
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in all {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 == x0 {
            x1 = x0 + 1.0;
        }
        if y1 == y0 {
            y0 -= 0.5;
            y1 += 0.5;
        }
        let pad = (y1 - y0) * 0.05;
        Self {
            w: 640.0,
            h: 400.0,
            left: 70.0,
            right: 20.0,
            top: 36.0,
            bottom: 56.0,
            x0,
            x1,
            y0: y0 - pad,
            y1: y1 + pad,
        }
    }

    /// A data x as a canvas x.
    fn px(&self, x: f64) -> f64 {
        let Self {
            w,
            left,
            right,
            x0,
            x1,
            ..
        } = *self;
        left + (x - x0) / (x1 - x0) * (w - left - right)
    }

    /// A (transformed) data y as a canvas y.
    fn py(&self, y: f64) -> f64 {
        let Self {
            h,
            top,
            bottom,
            y0,
            y1,
            ..
        } = *self;
        h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)
    }
}

/// Each series' points, and each series' band, that can be drawn, with y on the axis' scale.
type Visible = (Vec<Vec<(f64, f64)>>, Vec<Vec<(f64, f64, f64)>>);

impl Chart {
    /// Renders the chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let (pts, bands) = self.visible();
        let band_points = bands
            .iter()
            .flatten()
            .flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]);
        let all: Vec<(f64, f64)> = pts.iter().flatten().copied().chain(band_points).collect();
        let f = Frame::fit(&all);
        let mut s = String::new();
        self.write_head(&mut s, &f);
        self.write_axes(&mut s, &f);
        self.write_markers(&mut s, &f);
        write_bands(&mut s, &f, &bands);
        self.write_curves(&mut s, &f, &pts);
        s.push_str("</svg>\n");
        s
    }

    /// The points and bands that can be drawn (finite, and positive on a log axis), with y
    /// transformed to the axis' scale.
    fn visible(&self) -> Visible {
        let ty = |y: f64| if self.log_y { y.log10() } else { y };
        let tx = |x: f64| if self.log_x { x.log10() } else { x };
        let visible = |x: f64, y: f64| {
            x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0) && (!self.log_x || x > 0.0)
        };
        let pts: Vec<Vec<(f64, f64)>> = self
            .series
            .iter()
            .map(|s| {
                s.points
                    .iter()
                    .filter(|(x, y)| visible(*x, *y))
                    .map(|&(x, y)| (tx(x), ty(y)))
                    .collect()
            })
            .collect();
        let bands: Vec<Vec<(f64, f64, f64)>> = self
            .series
            .iter()
            .map(|s| {
                s.band
                    .iter()
                    .filter(|(x, lo, hi)| visible(*x, *lo) && visible(*x, *hi))
                    .map(|&(x, lo, hi)| (tx(x), ty(lo), ty(hi)))
                    .collect()
            })
            .collect();
        (pts, bands)
    }

    /// The document's opening tag, its white background and the title.
    fn write_head(&self, s: &mut String, f: &Frame) {
        let Frame { w, h, .. } = *f;
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
            w / 2.0,
            escape(&self.title)
        );
    }

    /// Axes, ticks, grid and the axis labels.
    fn write_axes(&self, s: &mut String, f: &Frame) {
        let Frame {
            w,
            h,
            left,
            right,
            top,
            bottom,
            ..
        } = *f;
        for (t, label) in ticks(self.log_y, f.y0, f.y1, 5, |e| format!("1e{e}")) {
            let y = f.py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
                w - right,
                left - 6.0,
                y + 4.0
            );
        }
        for (t, label) in ticks(self.log_x, f.x0, f.x1, 6, |e| fmt_tick(10f64.powi(e))) {
            let x = f.px(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"##,
                h - bottom,
                h - bottom + 16.0,
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
            w - left - right,
            h - top - bottom
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}{}</text>"#,
            (left + w - right) / 2.0,
            h - 12.0,
            escape(&self.x_label),
            if self.log_x { " (log scale)" } else { "" }
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}{}</text>"#,
            (top + h - bottom) / 2.0,
            escape(&self.y_label),
            if self.log_y { " (log scale)" } else { "" }
        );
    }

    /// The vertical markers within the x range.
    fn write_markers(&self, s: &mut String, f: &Frame) {
        let Frame {
            h,
            top,
            bottom,
            x0,
            x1,
            ..
        } = *f;
        for (x, label) in &self.markers {
            let x = if self.log_x { x.log10() } else { *x };
            if !x.is_finite() || x < x0 || x > x1 {
                continue;
            }
            let x = f.px(x);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{}" stroke="#888" stroke-dasharray="2,3"/><text x="{:.1}" y="{}" font-size="10" fill="#555">{}</text>"##,
                h - bottom,
                x + 3.0,
                h - bottom - 4.0,
                escape(label)
            );
        }
    }

    /// The curves, each with its legend entry.
    fn write_curves(&self, s: &mut String, f: &Frame, pts: &[Vec<(f64, f64)>]) {
        let Frame { left, top, .. } = *f;
        for (i, (series, p)) in self.series.iter().zip(pts).enumerate() {
            let color = COLORS[i % COLORS.len()];
            let dash = if series.dashed { DASHED } else { "" };
            let on_canvas: Vec<(f64, f64)> = p.iter().map(|&(x, y)| (f.px(x), f.py(y))).collect();
            let path: Vec<String> = envelope(&on_canvas)
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" stroke-dasharray="{dash}" points="{}"/>"#,
                path.join(" ")
            );
            let ly = top + 14.0 + 16.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{}">{}</text>"#,
                left + 10.0,
                left + 34.0,
                left + 40.0,
                ly + 4.0,
                escape(&series.label)
            );
        }
    }
}

/// The shaded bands, each in its series' colour.
fn write_bands(s: &mut String, f: &Frame, bands: &[Vec<(f64, f64, f64)>]) {
    for (i, band) in bands.iter().enumerate() {
        if band.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let upper = band
            .iter()
            .map(|&(x, _, hi)| format!("{:.1},{:.1}", f.px(x), f.py(hi)));
        let lower = band
            .iter()
            .rev()
            .map(|&(x, lo, _)| format!("{:.1},{:.1}", f.px(x), f.py(lo)));
        let outline: Vec<String> = upper.chain(lower).collect();
        let _ = writeln!(
            s,
            r#"<polygon fill="{color}" fill-opacity="0.15" stroke="none" points="{}"/>"#,
            outline.join(" ")
        );
    }
}

/// The points of a polyline (in canvas pixels) that can be seen: within each half-pixel
/// column only the lowest and the highest point, in their order. A per-step curve of 10⁵
/// points becomes at most four per pixel column, drawn the same.
fn envelope(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let column = |x: f64| (x * 2.0).round() as i64;
    let mut i = 0;
    while i < points.len() {
        let c = column(points[i].0);
        let mut j = i;
        let (mut lo, mut hi) = (i, i);
        while j < points.len() && column(points[j].0) == c {
            if points[j].1 < points[lo].1 {
                lo = j;
            }
            if points[j].1 > points[hi].1 {
                hi = j;
            }
            j += 1;
        }
        // The first and last of the column keep the line's joins; the extremes its height.
        let mut keep = vec![i, lo, hi, j - 1];
        keep.sort_unstable();
        keep.dedup();
        out.extend(keep.into_iter().map(|k| points[k]));
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_tell_neighbours_apart() {
        let labels: Vec<String> = [
            0.0, 5000.0, 15000.0, 20000.0, 25000.0, 1.5e-4, 2e-4, 0.25, 3e7,
        ]
        .into_iter()
        .map(fmt_tick)
        .collect();
        assert_eq!(
            labels,
            ["0", "5000", "15000", "20000", "25000", "1.5e-4", "2e-4", "0.25", "3e7"]
        );
    }

    #[test]
    fn envelope_keeps_each_columns_extremes_and_ends_only() {
        // 10 000 points over 10 pixels, oscillating between 0 and 100 with one spike to 500.
        let pts: Vec<(f64, f64)> = (0..10_000)
            .map(|i| {
                let y = if i == 4321 {
                    500.0
                } else {
                    (i % 2) as f64 * 100.0
                };
                (i as f64 / 1000.0, y)
            })
            .collect();
        let kept = envelope(&pts);
        assert!(kept.len() <= 4 * 21, "{}", kept.len());
        assert!(kept.contains(&(4.321, 500.0)));
        assert_eq!(kept.first(), pts.first());
        assert_eq!(kept.last(), pts.last());
        // In order, and a short curve is kept whole.
        assert!(kept.windows(2).all(|w| w[0].0 <= w[1].0));
        let short = [(0.0, 1.0), (5.0, 2.0), (10.0, 0.5)];
        assert_eq!(envelope(&short), short);
    }

    #[test]
    fn svg_has_one_polyline_per_series_and_skips_nonpositive_on_log_axes() {
        let chart = Chart {
            title: "LR <schedule>".into(),
            x_label: "epoch".into(),
            y_label: "lr".into(),
            log_y: true,
            log_x: false,
            series: vec![
                Series::line("a", vec![(0.0, 0.1), (1.0, 1.0), (2.0, 0.0)]),
                Series::line("b", vec![(0.0, 1e3), (2.0, f64::NAN)]),
            ],
            markers: Vec::new(),
        };
        let svg = chart.to_svg();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("LR &lt;schedule&gt;"));
        assert!(svg.contains(">1e3<") && svg.contains(">1e-1<"));
        let first = svg.split("<polyline").nth(1).unwrap();
        let points = first
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(
            points.split(' ').count(),
            2,
            "the zero is not drawn on a log axis"
        );
    }

    /// On a log x axis, points at 1, 10 and 100 are evenly spaced, the ticks are the decades
    /// and a non-positive x is not drawn.
    #[test]
    fn a_log_x_axis_spaces_decades_evenly() {
        let chart = Chart {
            title: "drift".into(),
            x_label: "update".into(),
            y_label: "distance".into(),
            log_y: true,
            log_x: true,
            series: vec![Series::line(
                "b vs a",
                vec![(0.0, 1.0), (1.0, 1e-7), (10.0, 1e-4), (100.0, 1e-1)],
            )],
            markers: vec![(100.0, "end of epoch 1".into())],
        };
        let svg = chart.to_svg();
        assert!(svg.contains(">1<") && svg.contains(">10<") && svg.contains(">100<"));
        assert!(svg.contains("update (log scale)") && svg.contains(">end of epoch 1<"));
        let line = svg.split("<polyline").nth(1).unwrap();
        let xs: Vec<f64> = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .split(' ')
            .map(|p| p.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(xs.len(), 3, "x = 0 is not drawn on a log axis: {xs:?}");
        assert!(((xs[1] - xs[0]) - (xs[2] - xs[1])).abs() < 0.2, "{xs:?}");
    }

    #[test]
    fn bands_controls_and_markers_are_drawn() {
        let chart = Chart {
            title: "t".into(),
            x_label: "epoch".into(),
            y_label: "acc".into(),
            log_y: false,
            log_x: false,
            series: vec![
                Series {
                    band: vec![(1.0, 0.1, 0.3), (2.0, 0.4, 0.6)],
                    ..Series::line("claimed", vec![(1.0, 0.2), (2.0, 0.5)])
                },
                Series {
                    dashed: true,
                    ..Series::line("control", vec![(1.0, 0.2), (2.0, 0.1)])
                },
            ],
            markers: vec![(1.5, "milestone".into()), (9.0, "outside".into())],
        };
        let svg = chart.to_svg();
        assert_eq!(svg.matches("<polygon").count(), 1);
        assert_eq!(
            svg.matches(r#"stroke-dasharray="6,3""#).count(),
            2,
            "curve and legend"
        );
        assert!(svg.contains(">milestone<") && !svg.contains(">outside<"));
    }

    #[test]
    fn nice_ticks_are_round_numbers() {
        let t = nice_ticks(0.0, 1.0, 5);
        let want = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
        assert_eq!(t.len(), want.len());
        assert!(
            t.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12),
            "{t:?}"
        );
        assert_eq!(nice_ticks(0.0, 160.0, 6), vec![0.0, 50.0, 100.0, 150.0]);
    }
}
