//! PNG charts of the bench's runs (plotters): the write budget's windows, the fair-share run's
//! progress over time and the pipeline against its floor. Plain data in, one file out.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context};
use plotters::coord::Shift;
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendCoord, DrawingErrorKind};

/// Every chart's size in pixels.
pub const SIZE: (u32, u32) = (900, 500);

/// The environment variable that names a TTF file for the charts' text.
pub const FONT_ENV: &str = "BULKLINK_CHART_FONT";

/// Where Debian's font packages put a sans-serif TTF (fonts-dejavu-core, fonts-liberation,
/// fonts-liberation2, fonts-freefont-ttf), tried in order after `$BULKLINK_CHART_FONT`.
const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

const FAMILY: &str = "sans-serif";

/// One look per process: plotters' ab_glyph backend keeps registered fonts for the process's
/// life, so the font file is read once and its bytes leaked on purpose.
static FONT: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Registers the charts' font (`$BULKLINK_CHART_FONT`, else the first of [`FONT_PATHS`]
/// present); which file, or why there is none.
pub fn ensure_font() -> anyhow::Result<&'static Path> {
    match FONT.get_or_init(|| register_font(std::env::var_os(FONT_ENV).map(PathBuf::from))) {
        Ok(path) => Ok(path),
        Err(why) => bail!("{why}"),
    }
}

fn register_font(chosen: Option<PathBuf>) -> Result<PathBuf, String> {
    // A font the user named is used or reported, never silently replaced by another.
    let named = chosen.is_some();
    let path = match chosen {
        Some(path) => path,
        None => FONT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "no TTF font found for the chart text (looked in ${FONT_ENV}, {}); \
                     install fonts-dejavu-core or set {FONT_ENV} to a .ttf file",
                    FONT_PATHS.join(", ")
                )
            })?,
    };
    let from = if named {
        format!(" (from ${FONT_ENV})")
    } else {
        String::new()
    };
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("reading chart font {}{from}: {e}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| format!("{}{from} is not a TTF/OTF font", path.display()))?;
    Ok(path)
}

/// How one series looks: colour, and a marker and a line pattern so that colour is not the
/// only thing telling series apart.
#[derive(Clone, Copy)]
struct Look {
    colour: RGBColor,
    marker: Marker,
    dashed: bool,
}

#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Triangle,
    Square,
    Cross,
}

const LOOKS: [Look; 4] = [
    Look {
        colour: RGBColor(31, 119, 180),
        marker: Marker::Circle,
        dashed: false,
    },
    Look {
        colour: RGBColor(214, 96, 26),
        marker: Marker::Triangle,
        dashed: false,
    },
    Look {
        colour: RGBColor(110, 110, 110),
        marker: Marker::Square,
        dashed: true,
    },
    Look {
        colour: RGBColor(44, 160, 44),
        marker: Marker::Cross,
        dashed: true,
    },
];

const BUDGET_RED: RGBColor = RGBColor(200, 30, 30);

/// A series' marker at a point (`icon` adds a line through it: the legend's sample).
struct Mark<C> {
    at: C,
    look: Look,
    icon: bool,
}

impl<'a, C> PointCollection<'a, C> for &'a Mark<C> {
    type Point = &'a C;
    type IntoIter = std::iter::Once<&'a C>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<C, DB: DrawingBackend> Drawable<DB> for Mark<C> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut pos: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = pos.next() else {
            return Ok(());
        };
        let colour: ShapeStyle = self.look.colour.into();
        let line = colour.stroke_width(2);
        if self.icon {
            // The legend's origin is the icon's left end; the marker sits in its middle.
            let segments: &[(i32, i32)] = if self.look.dashed {
                &[(0, 7), (11, 19), (23, 30)]
            } else {
                &[(0, 30)]
            };
            for &(from, to) in segments {
                backend.draw_line((x + from, y), (x + to, y), &line)?;
            }
            return Mark {
                at: (x + 15, y),
                look: self.look,
                icon: false,
            }
            .draw(std::iter::once((x + 15, y)), backend, (0, 0));
        }
        let r = 5;
        match self.look.marker {
            Marker::Circle => backend.draw_circle((x, y), r as u32, &colour, true),
            Marker::Triangle => backend.fill_polygon(
                [(x, y - r - 1), (x - r - 1, y + r), (x + r + 1, y + r)],
                &colour,
            ),
            Marker::Square => {
                backend.draw_rect((x - r + 1, y - r + 1), (x + r - 1, y + r - 1), &line, false)
            }
            Marker::Cross => {
                backend.draw_line((x - r, y - r), (x + r, y + r), &line)?;
                backend.draw_line((x - r, y + r), (x + r, y - r), &line)
            }
        }
    }
}

fn finite(points: &[(f64, f64)]) -> impl Iterator<Item = (f64, f64)> + '_ {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

fn canvas(path: &Path) -> anyhow::Result<DrawingArea<BitMapBackend<'_>, Shift>> {
    ensure_font()?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

/// A bar series' sample in the legend, at the legend entry's origin.
fn swatch<S: Into<ShapeStyle>>((x, y): (i32, i32), style: S) -> Rectangle<(i32, i32)> {
    Rectangle::new([(x + 4, y - 6), (x + 26, y + 6)], style)
}

/// The series' legend, boxed, at `position`.
fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .legend_area_size(36)
        .label_font(text_style(14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(position)
        .draw()?;
    Ok(())
}

/// Writes the finished chart to its file.
fn write(root: &DrawingArea<BitMapBackend<'_>, Shift>, path: &Path) -> anyhow::Result<()> {
    root.present()
        .with_context(|| format!("writing {}", path.display()))
}

fn text_style(size: u32) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font())
}

/// A "1,000,000"-style number.
pub fn grouped(n: f64) -> String {
    let digits = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// Catalog writes per one-second window as bars, against the budget in force as a dashed
/// step line. `windows`: (window start in s, writes in it); the last window is drawn as
/// partial. `budget_steps`: (from s, writes/s), in time order.
pub fn budget_windows(
    path: &Path,
    title: &str,
    windows: &[(f64, f64)],
    budget_steps: &[(f64, f64)],
) -> anyhow::Result<()> {
    let windows: Vec<_> = finite(windows).collect();
    let steps: Vec<_> = finite(budget_steps).collect();
    if windows.is_empty() {
        bail!("no write windows to chart");
    }
    let x_end = windows.iter().map(|(x, _)| x + 1.0).fold(1.0, f64::max);
    let y_top = windows
        .iter()
        .map(|(_, y)| *y)
        .chain(steps.iter().map(|(_, b)| *b))
        .fold(1.0, f64::max)
        * 1.35;

    let root = canvas(path)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, text_style(22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(78)
        .build_cartesian_2d(0f64..x_end, 0f64..y_top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("time since the job's first write (s; one bar per 1 s window)")
        .y_desc("catalog writes in the window")
        .axis_desc_style(text_style(16))
        .label_style(text_style(14))
        .y_label_formatter(&|v| grouped(*v))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;

    let bar = LOOKS[0].colour;
    let last = windows.len() - 1;
    chart
        .draw_series(windows[..last].iter().map(|&(x, y)| {
            Rectangle::new([(x + 0.12, 0.0), (x + 0.88, y)], bar.mix(0.85).filled())
        }))?
        .label("writes in a full window")
        .legend(move |(x, y)| swatch((x, y), bar.filled()));
    let (x, y) = windows[last];
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(x + 0.12, 0.0), (x + 0.88, y)],
            bar.stroke_width(2),
        )))?
        .label("last window (partial: the job ended in it)")
        .legend(move |(x, y)| swatch((x, y), bar.stroke_width(2)));

    if !steps.is_empty() {
        let mut line = Vec::new();
        for (i, &(from, budget)) in steps.iter().enumerate() {
            let to = steps.get(i + 1).map_or(x_end, |(next, _)| *next);
            line.push((from.max(0.0), budget));
            line.push((to.min(x_end), budget));
        }
        let style = BUDGET_RED.stroke_width(3);
        chart
            .draw_series(DashedLineSeries::new(line, 10, 6, style))?
            .label("write budget in force (writes/s)")
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (10, 0)], style)
                    + PathElement::new(vec![(16, 0), (30, 0)], style)
            });
        // Each budget's value where it starts, so the step reads without the axis.
        chart.draw_series(steps.iter().map(|&(from, budget)| {
            Text::new(
                format!("{} writes/s", grouped(budget)),
                (from.max(0.0) + 0.2, budget + y_top * 0.015),
                text_style(14)
                    .color(&BUDGET_RED)
                    .pos(Pos::new(HPos::Left, VPos::Bottom)),
            )
        }))?;
    }

    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    write(&root, path)
}

/// Each series' percent done over time, on one clock: the whole run on the left and, when
/// `zoom` is given (a time range in s), that range enlarged on the right.
pub fn fairness(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
    zoom: Option<(f64, f64)>,
) -> anyhow::Result<()> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(label, points)| (label.as_str(), finite(points).collect()))
        .collect();
    if series.iter().all(|(_, points)| points.is_empty()) {
        bail!("no progress samples to chart");
    }
    if series.len() > LOOKS.len() {
        bail!("at most {} series in one chart", LOOKS.len());
    }
    let x_end = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(x, _)| *x))
        .fold(1.0, f64::max)
        * 1.02;

    let root = canvas(path)?;
    let root = root.titled(title, text_style(22))?;
    let zoom = zoom.filter(|(from, to)| from.is_finite() && to.is_finite() && to > from);
    let (whole, detail) = match zoom {
        Some(_) => {
            let (left, right) = root.split_horizontally(SIZE.0 * 3 / 5);
            (left, Some(right))
        }
        None => (root.clone(), None),
    };

    progress_panel(&whole, "the whole run", &series, (0.0, x_end), true)?;
    if let (Some(area), Some((from, to))) = (detail, zoom) {
        progress_panel(
            &area,
            &format!("zoom: {from:.1}–{to:.1} s"),
            &series,
            (from, to),
            false,
        )?;
    }
    write(&root, path)
}

fn progress_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    caption: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    (from, to): (f64, f64),
    legend: bool,
) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, text_style(16))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(56)
        .build_cartesian_2d(from..to, 0f64..105f64)?;
    chart
        .configure_mesh()
        .x_desc("seconds since A's POST")
        .y_desc("percent done (%)")
        .axis_desc_style(text_style(16))
        .label_style(text_style(14))
        .x_labels(if legend { 10 } else { 6 })
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| {
            if (to - from) < 10.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        })
        .draw()?;

    for (i, (label, points)) in series.iter().enumerate() {
        let look = LOOKS[i];
        // Clip by hand so a line leaving the zoomed range does not draw over the axes.
        let visible: Vec<_> = points
            .iter()
            .copied()
            .filter(|(x, _)| (from..=to).contains(x))
            .collect();
        let style = look.colour.stroke_width(if i == 1 { 3 } else { 2 });
        let line = visible.iter().copied();
        let drawn = if look.dashed {
            chart.draw_series(DashedLineSeries::new(line, 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(line, style))?
        };
        if legend {
            drawn.label(*label).legend(move |at| Mark {
                at,
                look,
                icon: true,
            });
        }
        // A dozen markers a series at most: enough to tell the lines apart, few enough to read.
        // Each series starts its markers a little further on, so that where two lines
        // coincide (A alone and A beside B) both series' markers still show.
        let stride = (visible.len() / 12).max(1);
        let shift = if stride > 1 {
            i * stride / series.len()
        } else {
            0
        };
        let mut marks: Vec<_> = visible
            .iter()
            .copied()
            .skip(shift)
            .step_by(stride)
            .collect();
        if let Some(&end) = visible.last() {
            marks.push(end);
        }
        chart.draw_series(marks.into_iter().map(|at| Mark {
            at,
            look,
            icon: false,
        }))?;
    }
    if legend {
        self::legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    }
    Ok(())
}

/// The pipeline's and the floor's rate per size as grouped bars, the ratio above each group.
/// `rows`: (locations, pipeline loc/s, floor loc/s).
pub fn pipeline_vs_floor(path: &Path, title: &str, rows: &[(u64, f64, f64)]) -> anyhow::Result<()> {
    let rows: Vec<_> = rows
        .iter()
        .copied()
        .filter(|(_, p, f)| p.is_finite() && f.is_finite())
        .collect();
    if rows.is_empty() {
        bail!("no sizes to chart");
    }
    let y_top = rows.iter().map(|(_, p, f)| p.max(*f)).fold(1.0, f64::max) * 1.4;
    let n = rows.len();
    let labels: Vec<String> = rows
        .iter()
        .map(|(size, _, _)| grouped(*size as f64))
        .collect();

    let root = canvas(path)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, text_style(22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(84)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..y_top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(4 * n + 1)
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| grouped(*v))
        .x_desc("locations in the job")
        .y_desc("locations linked per second")
        .axis_desc_style(text_style(16))
        .label_style(text_style(14))
        .draw()?;

    let (pipe, floor) = (LOOKS[0].colour, LOOKS[1].colour);
    chart
        .draw_series(rows.iter().enumerate().map(|(i, &(_, p, _))| {
            let x = i as f64;
            Rectangle::new([(x - 0.36, 0.0), (x - 0.02, p)], pipe.filled())
        }))?
        .label("pipeline: POST → SUCCEEDED over HTTP (filled)")
        .legend(move |(x, y)| swatch((x, y), pipe.filled()));
    chart
        .draw_series(rows.iter().enumerate().map(|(i, &(_, _, f))| {
            let x = i as f64;
            Rectangle::new([(x + 0.02, 0.0), (x + 0.36, f)], floor.stroke_width(3))
        }))?
        .label("floor: the bare SQLite work (outlined)")
        .legend(move |(x, y)| swatch((x, y), floor.stroke_width(3)));
    let values = rows.iter().enumerate().flat_map(|(i, &(_, p, f))| {
        let x = i as f64;
        [(x - 0.19, p), (x + 0.19, f)]
    });
    chart.draw_series(values.map(|(x, v)| {
        Text::new(
            grouped(v),
            (x, v + y_top * 0.01),
            text_style(13).pos(Pos::new(HPos::Center, VPos::Bottom)),
        )
    }))?;
    chart.draw_series(rows.iter().enumerate().map(|(i, &(_, p, f))| {
        Text::new(
            format!("pipeline/floor {:.2}", p / f),
            (i as f64, p.max(f) + y_top * 0.07),
            text_style(15).pos(Pos::new(HPos::Center, VPos::Bottom)),
        )
    }))?;

    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    write(&root, path)
}

/// A labelled line of (s, writes in the window) points with its ceiling (writes/s).
pub type RateSeries = (String, f64, Vec<(f64, f64)>);

/// Link writes per one-second window of one job per shard count, as lines on one clock
/// (seconds since its POST), with each shard count's modelled ceiling (shards × the
/// per-key capacity) dashed in the same colour. `series`: (label, ceiling, points).
pub fn link_rates(path: &Path, title: &str, series: &[RateSeries]) -> anyhow::Result<()> {
    if series.iter().all(|(_, _, points)| points.is_empty()) {
        bail!("no link windows to chart");
    }
    if series.len() > LOOKS.len() {
        bail!("at most {} series in one chart", LOOKS.len());
    }
    let points_of = |p: &[(f64, f64)]| finite(p).collect::<Vec<_>>();
    let x_end = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|(x, _)| *x + 1.0))
        .fold(1.0, f64::max);
    let y_top = series
        .iter()
        .flat_map(|(_, ceiling, points)| points.iter().map(|(_, y)| *y).chain([*ceiling]))
        .fold(1.0, f64::max)
        * 1.2;
    let root = canvas(path)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, text_style(22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(78)
        .build_cartesian_2d(0f64..x_end, 0f64..y_top)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("seconds since the job's POST (one point per 1 s window)")
        .y_desc("link writes in the window")
        .axis_desc_style(text_style(16))
        .label_style(text_style(14))
        .y_label_formatter(&|v| grouped(*v))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (i, (label, ceiling, points)) in series.iter().enumerate() {
        let look = LOOKS[i];
        let style = look.colour.stroke_width(2);
        chart
            .draw_series(LineSeries::new(points_of(points), style))?
            .label(label.as_str())
            .legend(move |at| Mark {
                at,
                look,
                icon: true,
            });
        chart.draw_series(DashedLineSeries::new(
            [(0.0, *ceiling), (x_end, *ceiling)],
            10,
            6,
            look.colour.stroke_width(1),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("ceiling {} writes/s", grouped(*ceiling)),
            (x_end * 0.7, ceiling + y_top * 0.015),
            text_style(14)
                .color(&look.colour)
                .pos(Pos::new(HPos::Left, VPos::Bottom)),
        )))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    write(&root, path)
}
