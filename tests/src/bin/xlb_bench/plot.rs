//! Charts of a benchmark's results as SVG files, 800 x 480. Text stays SVG
//! text, set in the viewer's sans-serif font, so drawing needs no font files.

use std::path::Path;

use anyhow::ensure;
use plotters::{
    coord::{
        ranged1d::{AsRangedCoord, ValueFormatter},
        Shift,
    },
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

const SIZE: (u32, u32) = (800, 480);
const FONT: &str = "sans-serif";
/// Tableau 10: distinct hues, readable on white.
const COLORS: [RGBColor; 10] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0xba, 0xb0, 0xac),
];

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A vertical bar per `(label, value)` on an axis from 0, its value written
/// on top. A value that is not finite (nothing measured) gets no bar and the
/// label "n/a".
pub fn bars(path: &Path, title: &str, y_label: &str, bars: &[(String, f64)]) -> anyhow::Result<()> {
    let groups: Vec<String> = bars.iter().map(|(label, _)| label.clone()).collect();
    let drawn: Vec<Bar> = bars
        .iter()
        .enumerate()
        .map(|(i, &(_, value))| Bar {
            group: i,
            slot: 0,
            slots: 1,
            value,
            color: color(i),
        })
        .collect();
    bar_chart(path, title, y_label, &groups, &drawn, &[])
}

/// Groups of bars side by side, e.g. one group per load and a bar per
/// contender in each, with a legend of the series. A series keeps its colour
/// and place in every group; values that are not finite get no bar and "n/a".
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[(String, Vec<(String, f64)>)],
) -> anyhow::Result<()> {
    let mut series: Vec<&str> = Vec::new();
    for (_, bars) in groups {
        for (name, _) in bars {
            if !series.contains(&name.as_str()) {
                series.push(name);
            }
        }
    }
    let mut drawn = Vec::new();
    for (group, (_, bars)) in groups.iter().enumerate() {
        for (name, value) in bars {
            let slot = series.iter().position(|s| s == name).expect("collected");
            drawn.push(Bar {
                group,
                slot,
                slots: series.len(),
                value: *value,
                color: color(slot),
            });
        }
    }
    let names: Vec<String> = groups.iter().map(|(name, _)| name.clone()).collect();
    let legend: Vec<(&str, RGBColor)> = series
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, color(i)))
        .collect();
    bar_chart(path, title, y_label, &names, &drawn, &legend)
}

/// A line per `(name, points)`, points marked, with a legend; `log_x` puts x
/// on a logarithmic axis (every x must then be positive).
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    log_x: bool,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let points = || series.iter().flat_map(|(_, points)| points);
    ensure!(points().next().is_some(), "{title}: no points to plot");
    let (mut x_lo, mut x_hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    ensure!(
        !log_x || x_lo > 0.0,
        "{title}: a logarithmic x axis needs every x above 0"
    );
    if x_lo == x_hi {
        (x_lo, x_hi) = if log_x {
            (x_lo / 2.0, x_hi * 2.0)
        } else {
            (x_lo - 1.0, x_hi + 1.0)
        };
    }
    // Room above the highest point for the legend.
    let y_top = top(points().map(|p| p.1), 1.1 + 0.07 * series.len() as f64);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    if log_x {
        line_chart(
            &root,
            (x_lo..x_hi).log_scale(),
            y_top,
            title,
            x_label,
            y_label,
            series,
        )?;
    } else {
        line_chart(&root, x_lo..x_hi, y_top, title, x_label, y_label, series)?;
    }
    root.present()?;
    Ok(())
}

fn line_chart<X>(
    root: &Area,
    x: X,
    y_top: f64,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 26))
        .margin(16)
        .margin_right(40)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x, 0.0..y_top)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|v| si(*v))
        .y_label_formatter(&|v| tick(*v))
        .y_max_light_lines(0)
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 19))
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = color(i);
        chart
            .draw_series(
                LineSeries::new(points.iter().copied(), color.stroke_width(2)).point_size(3),
            )?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    legend(&mut chart)
}

struct Bar {
    group: usize,
    /// Place in its group, of `slots`.
    slot: usize,
    slots: usize,
    value: f64,
    color: RGBColor,
}

/// Group `g` spans x from `g` to `g + 1`; its bars share the middle 80%,
/// and its name is written under its middle.
fn bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[String],
    bars: &[Bar],
    legend_of: &[(&str, RGBColor)],
) -> anyhow::Result<()> {
    ensure!(!groups.is_empty(), "{title}: no bars to plot");
    // Room above the tallest bar for its value, and for the legend.
    let headroom = 1.15 + 0.07 * legend_of.len() as f64;
    let y_top = top(bars.iter().map(|b| b.value), headroom);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..groups.len() as f64, 0.0..y_top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_label)
        .y_label_formatter(&|v| tick(*v))
        .y_max_light_lines(0)
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 19))
        .draw()?;

    let value_style =
        TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for bar in bars {
        let width = 0.8 / bar.slots as f64;
        let left = bar.group as f64 + 0.1 + width * bar.slot as f64;
        let (label, height) = if bar.value.is_finite() {
            chart.draw_series([Rectangle::new(
                [(left, 0.0), (left + width, bar.value)],
                bar.color.filled(),
            )])?;
            (number(bar.value), bar.value.max(0.0))
        } else {
            ("n/a".to_string(), 0.0)
        };
        chart.draw_series([EmptyElement::at((left + width / 2.0, height))
            + Text::new(label, (0, -3), value_style.clone())])?;
    }
    let name_style = TextStyle::from((FONT, 17).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (g, name) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
        root.draw(&Text::new(name.as_str(), (x, y + 8), name_style.clone()))?;
    }
    for &(name, color) in legend_of {
        // An empty series that only carries its legend entry.
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    if !legend_of.is_empty() {
        legend(&mut chart)?;
    }
    root.present()?;
    Ok(())
}

fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 17))
        .draw()?;
    Ok(())
}

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// The top of the y axis: the largest finite value times `headroom`, or 1
/// when there is none above 0.
fn top(values: impl Iterator<Item = f64>, headroom: f64) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max > 0.0 {
        max * headroom
    } else {
        1.0
    }
}

/// Three significant digits, with no exponent: 1234, 12.3, 0.0123.
fn number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.decimals$}")
}

/// An axis tick: its value rounded to a millionth, with no trailing zeros.
fn tick(v: f64) -> String {
    format!("{}", (v * 1e6).round() / 1e6)
}

/// An axis tick with an SI prefix from a thousand on: 500, 1k, 2.5M.
fn si(v: f64) -> String {
    [(1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(scale, _)| v.abs() >= *scale)
        .map_or_else(|| tick(v), |(scale, prefix)| tick(v / scale) + prefix)
}

/// Whether `svg` holds a text element of exactly `text`.
#[cfg(test)]
pub fn has_text(svg: &str, text: &str) -> bool {
    svg.contains(&format!(">\n{text}\n</text>"))
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

    use super::*;

    /// A fresh directory for one test's files.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xlb-plot-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The SVG at `path`, checked to hold a text element of each of `texts`.
    fn check(path: &Path, texts: &[&str]) {
        let svg = fs::read_to_string(path).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        for text in texts {
            assert!(has_text(&svg, text), "no {text:?} in {svg}");
        }
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn bars_have_labels_and_values() {
        let path = scratch("bars").join("bars.svg");
        let values = [
            ("xlb".to_string(), 12.5),
            ("nftables".into(), 1234.0),
            ("haproxy".into(), f64::NAN),
        ];
        bars(&path, "cost per packet", "ns per packet", &values).unwrap();
        check(
            &path,
            &[
                "cost per packet",
                "ns per packet",
                "xlb",
                "nftables",
                "haproxy",
                "12.5",
                "1234",
                "n/a",
            ],
        );
    }

    #[test]
    fn grouped_bars_have_groups_series_and_legend() {
        let path = scratch("grouped").join("grouped.svg");
        let groups = [
            (
                "1 s".to_string(),
                vec![("xlb".to_string(), 3600.0), ("keepalived".into(), 3700.0)],
            ),
            (
                "20 ms".into(),
                vec![("xlb".into(), 72.0), ("keepalived".into(), 0.25)],
            ),
        ];
        grouped_bars(&path, "outage, director lost", "outage gap (ms)", &groups).unwrap();
        check(
            &path,
            &[
                "outage, director lost",
                "outage gap (ms)",
                "1 s",
                "20 ms",
                "xlb",
                "keepalived",
                "3600",
                "72.0",
                "0.250",
            ],
        );
    }

    #[test]
    fn lines_on_a_log_axis_have_a_legend() {
        let path = scratch("lines").join("lines.svg");
        let series = [
            (
                "xlb".to_string(),
                vec![(1e3, 40.0), (1e4, 42.0), (1e6, 55.0)],
            ),
            ("nftables".into(), vec![(1e3, 90.0), (1e6, 300.0)]),
        ];
        lines(
            &path,
            "cost against flows",
            "flows",
            "ns per packet",
            true,
            &series,
        )
        .unwrap();
        check(
            &path,
            &[
                "cost against flows",
                "flows",
                "ns per packet",
                "xlb",
                "nftables",
                "1k",
                "1M",
            ],
        );
    }

    #[test]
    fn one_bar_fills_the_chart() {
        let path = scratch("one").join("one.svg");
        bars(&path, "alone", "ms", &[("xlb".to_string(), 0.5)]).unwrap();
        check(&path, &["alone", "ms", "xlb", "0.500"]);
    }

    #[test]
    fn lines_refuse_a_log_axis_through_zero() {
        let path = scratch("zero").join("zero.svg");
        let series = [("xlb".to_string(), vec![(0.0, 1.0), (10.0, 2.0)])];
        assert!(lines(&path, "t", "x", "y", true, &series).is_err());
        assert!(lines(&path, "t", "x", "y", false, &series).is_ok());
        check(&path, &["t"]);
    }

    #[test]
    fn numbers_keep_three_digits() {
        assert_eq!(number(1234.0), "1234");
        assert_eq!(number(12.34), "12.3");
        assert_eq!(number(0.01234), "0.0123");
        assert_eq!(number(0.0), "0");
        assert_eq!(tick(1400.0), "1400");
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(si(2.5e6), "2.5M");
        assert_eq!(si(1000.0), "1k");
        assert_eq!(si(500.0), "500");
    }
}
