//! A PNG of the samples: tasks, FDs, RSS and rotations over time, so a leak or a stall is
//! something to look at rather than to read.

use plotters::prelude::*;
use std::path::Path;

use crate::agent::Sample;

/// A panel: its caption, the value it plots, its colour.
type Panel = (&'static str, fn(&Sample) -> f64, RGBColor);

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a system TTF for the chart's text (plotters' pure-Rust font path).
fn register_font() -> Result<(), String> {
    for path in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path}: not a usable font"));
        }
    }
    Err(format!(
        "no font found (install fonts-dejavu-core): tried {FONT_PATHS:?}"
    ))
}

pub fn draw(path: &Path, samples: &[Sample], title: &str, warmup_s: f64) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 24))
        .map_err(|e| e.to_string())?;
    let panels = root.split_evenly((2, 2));
    let series: [Panel; 4] = [
        ("tokio tasks alive", |s| s.tasks, BLUE),
        ("open file descriptors", |s| s.fds, RED),
        ("RSS (MiB)", |s| s.rss_mib, GREEN),
        ("stream rotations (total)", |s| s.rotations, MAGENTA),
    ];
    let t_max = samples.last().map(|s| s.t).unwrap_or(1.0).max(1.0);
    for (area, (name, value, color)) in panels.iter().zip(series) {
        let max = samples.iter().map(value).fold(0.0, f64::max);
        let top = if max <= 0.0 { 1.0 } else { max * 1.15 };
        let mut chart = ChartBuilder::on(area)
            .caption(name, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("elapsed (s)")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                samples.iter().map(|s| (s.t, value(s))),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        // Warm-up boundary: growth is fitted to the right of it.
        chart
            .draw_series(LineSeries::new(
                [(warmup_s, 0.0), (warmup_s, top)],
                BLACK.mix(0.3),
            ))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
