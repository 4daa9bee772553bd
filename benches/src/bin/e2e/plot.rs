//! One PNG per workload in docs/bench/, drawn with plotters' bitmap backend.
//! Text is rendered with ab_glyph from an embedded DejaVu Sans, so no system
//! font or fontconfig is needed.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use crate::cli::{OPS, rtt_key};
use crate::plan::Results;
use crate::report::SYSTEMS;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type E = Box<dyn std::error::Error>;

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(127, 127, 127),
    RGBColor(44, 160, 44),
];

fn color(sys: &str) -> RGBColor {
    // The command-line runs have one rmmap column ("rmmap", over Tokio).
    let sys = if sys == "rmmap" { "tokio" } else { sys };
    let i = SYSTEMS.iter().position(|(s, _)| *s == sys).unwrap_or(2);
    COLORS[i]
}

/// A bar per (system, value); `line` draws a target as a dashed level.
fn bars(
    area: &Area<'_>,
    title: &str,
    unit: &str,
    bars: &[(&str, &str, f64)],
    line: Option<(f64, &str)>,
) -> Result<(), E> {
    let top = bars
        .iter()
        .map(|b| b.2)
        .chain(line.map(|l| l.0))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        * 1.2;
    let top = if top > 0.0 { top } else { 1.0 };
    // Bar k sits in segment 2k+1; the even segments are the gaps.
    let n = 2 * bars.len() + 1;
    let names: Vec<String> = bars.iter().map(|b| b.1.to_owned()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(85)
        .build_cartesian_2d((0..n).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .y_desc(unit)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if i % 2 == 1 => {
                names.get(i / 2).cloned().unwrap_or_default()
            }
            _ => String::new(),
        })
        .light_line_style(WHITE)
        .label_style(("sans-serif", 15))
        .draw()?;
    for (k, (sys, _, v)) in bars.iter().enumerate() {
        let i = 2 * k + 1;
        if !v.is_finite() {
            continue;
        }
        let c = color(sys);
        chart.draw_series(std::iter::once(Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), *v),
            ],
            c.mix(0.85).filled(),
        )))?;
        let label = if *v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        };
        chart.draw_series(std::iter::once(Text::new(
            label,
            (SegmentValue::CenterOf(i), *v + top * 0.02),
            ("sans-serif", 15)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        )))?;
    }
    if let Some((y, what)) = line {
        chart
            .draw_series(DashedLineSeries::new(
                [(SegmentValue::Exact(0), y), (SegmentValue::Exact(n), y)],
                8,
                6,
                RED.stroke_width(2),
            ))?
            .label(what)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
    }
    Ok(())
}

/// Lines of (x, y) points, one per system.
fn lines(
    area: &Area<'_>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    log_x: bool,
) -> Result<(), E> {
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut xmax, mut ymax) = (0.0f64, 1.0f64);
    for &(x, y) in pts {
        xmax = xmax.max(x);
        ymax = ymax.max(y);
    }
    let tx = |x: f64| if log_x { x.log2() } else { x };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..(tx(xmax.max(1e-3)) * 1.05).max(0.01), 0.0..ymax * 1.2)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| {
            if log_x {
                format!("{:.0}", 2f64.powf(*v))
            } else {
                format!("{v:.1}")
            }
        })
        .label_style(("sans-serif", 15))
        .draw()?;
    for (sys, points) in series {
        let c = color(sys);
        let name = match *sys {
            "rmmap" => "rmmap",
            "nbd" => "NBD (nbdcopy)",
            _ => SYSTEMS.iter().find(|s| s.0 == *sys).map_or(*sys, |s| s.1),
        };
        let p: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (tx(x), y)).collect();
        chart
            .draw_series(LineSeries::new(p.clone(), c.stroke_width(3)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(3)));
        chart.draw_series(p.into_iter().map(|xy| Circle::new(xy, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

/// A label that lives as long as the plot (a handful per run).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// (system, heading, median) for each system that has `metric`.
fn values<'a>(r: &Results, metric: &str, systems: &[&'a str]) -> Vec<(&'a str, &'static str, f64)> {
    systems
        .iter()
        .filter_map(|s| {
            let head = SYSTEMS.iter().find(|x| x.0 == *s)?.1;
            r.get(s, metric).map(|v| (*s, head, v))
        })
        .collect()
}

/// Draws every plot into `out/bench/`.
pub(crate) fn all(out: &Path, r: &Results) -> Result<(), String> {
    draw(out, r).map_err(|e| format!("plotting failed: {e}"))
}

fn draw(out: &Path, r: &Results) -> Result<(), E> {
    register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the embedded font cannot be read")?;
    let dir = out.join("bench");
    std::fs::create_dir_all(&dir)?;
    let png = |name: &str| dir.join(name);
    let rmmap = ["tokio", "mio"];
    let rtt = r.get("raw", "ping.rtt_p50_us");

    let file = png("w1-seq-read.png");
    let a = BitMapBackend::new(&file, (900, 500)).into_drawing_area();
    a.fill(&WHITE)?;
    let mut v = values(r, "w1.mib_s", &["tokio", "mio", "nbd"]);
    v.extend(
        r.get("raw", "stream.mib_s")
            .map(|x| ("raw", "raw TCP stream", x)),
    );
    bars(&a, "1. Sequential read, cold", "MiB/s", &v, None)?;
    a.present()?;

    let file = png("w2-seq-write.png");
    let a = BitMapBackend::new(&file, (900, 500)).into_drawing_area();
    a.fill(&WHITE)?;
    bars(
        &a,
        "2. Sequential write + sync",
        "MiB/s",
        &values(r, "w2.mib_s", &["tokio", "mio", "nbd"]),
        None,
    )?;
    a.present()?;

    let file = png("w3-random-read.png");
    let a = BitMapBackend::new(&file, (1200, 500)).into_drawing_area();
    a.fill(&WHITE)?;
    let (left, right) = a.split_horizontally(600);
    let mut v = values(r, "w3.p50_us", &["tokio", "mio", "nbd"]);
    v.extend(rtt.map(|x| ("raw", "raw RTT", x)));
    bars(
        &left,
        "3. Random 4 KiB cold read, p50",
        "µs",
        &v,
        rtt.map(|x| (1.3 * x, "target: 1.3 × raw RTT")),
    )?;
    let ops: Vec<(&str, &str, f64)> = ["tokio", "mio", "nbd"]
        .iter()
        .flat_map(|s| {
            let head = SYSTEMS.iter().find(|x| x.0 == *s).map_or("", |x| x.1);
            let head = head
                .trim_start_matches("rmmap-")
                .split(' ')
                .next()
                .unwrap_or(head);
            let one = r
                .get(s, "w3.ops_s")
                .map(|v| (*s, leak(format!("{head} ×1")), v));
            let many = r
                .get(s, "w3.ops_s_inflight")
                .map(|v| (*s, leak(format!("{head} ×16")), v));
            one.into_iter().chain(many)
        })
        .collect();
    bars(
        &right,
        "ops/s: one at a time (×1), 16 in flight (×16)",
        "ops/s",
        &ops,
        None,
    )?;
    a.present()?;

    let file = png("w4-cache-hit.png");
    let a = BitMapBackend::new(&file, (700, 500)).into_drawing_area();
    a.fill(&WHITE)?;
    bars(
        &a,
        "4. Cache hit, 4 KiB, p50",
        "ns",
        &values(r, "w4.p50_ns", &rmmap),
        Some((2000.0, "target: 2 µs")),
    )?;
    a.present()?;

    let file = png("w5-handover.png");
    let a = BitMapBackend::new(&file, (700, 500)).into_drawing_area();
    a.fill(&WHITE)?;
    let mut v = values(r, "w5.handover_us", &rmmap);
    v.extend(rtt.map(|x| ("raw", "raw RTT", x)));
    bars(
        &a,
        "5. Ownership hand-over",
        "µs",
        &v,
        rtt.map(|x| (3.0 * x, "target: 3 × raw RTT")),
    )?;
    a.present()?;

    let file = png("w6-clients.png");
    let a = BitMapBackend::new(&file, (900, 500)).into_drawing_area();
    a.fill(&WHITE)?;
    let series: Vec<(&str, Vec<(f64, f64)>)> = rmmap
        .iter()
        .map(|s| {
            let pts = [1.0, 4.0, 16.0, 64.0]
                .iter()
                .filter_map(|&n| r.get(s, &format!("w6.ops_s_c{n}")).map(|v| (n, v)))
                .collect();
            (*s, pts)
        })
        .collect();
    lines(
        &a,
        "6. Clients on disjoint pages",
        "clients",
        "total ops/s",
        &series,
        true,
    )?;
    a.present()?;

    let file = png("w7-memory.png");
    let a = BitMapBackend::new(&file, (1200, 500)).into_drawing_area();
    a.fill(&WHITE)?;
    let (left, right) = a.split_horizontally(450);
    bars(
        &left,
        "7. Server memory per idle session",
        "KiB",
        &values(r, "w7.idle_kib", &rmmap),
        Some((64.0, "target: 64 KiB")),
    )?;
    let series: Vec<(&str, Vec<(f64, f64)>)> = rmmap
        .iter()
        .filter_map(|s| r.series.get(&format!("w7.{s}")).map(|p| (*s, p.clone())))
        .collect();
    lines(
        &right,
        "Server RSS while one client reads a large file",
        "GiB read",
        "server RSS, MiB",
        &series,
        false,
    )?;
    a.present()?;

    if r.values
        .get("rmmap")
        .is_some_and(|m| m.keys().any(|k| k.starts_with("cli.")))
    {
        let file = png("cli.png");
        let a = BitMapBackend::new(&file, (1000, 500)).into_drawing_area();
        a.fill(&WHITE)?;
        let v: Vec<(&str, &str, f64)> = OPS
            .iter()
            .flat_map(|op| {
                let key = format!("cli.{}.mib_s", op.name());
                let ours = r
                    .get("rmmap", &key)
                    .map(|v| ("rmmap", leak(format!("rmmap {}", op.name())), v));
                let theirs = r
                    .get("nbd", &key)
                    .map(|v| ("nbd", leak(format!("nbdcopy ({})", op.name())), v));
                ours.into_iter().chain(theirs)
            })
            .collect();
        bars(
            &a,
            "Command line against nbdcopy, loopback",
            "MiB/s",
            &v,
            None,
        )?;
        a.present()?;
    }

    if r.values
        .get("rmmap")
        .is_some_and(|m| m.keys().any(|k| k.starts_with("relay.")))
    {
        let file = png("relay.png");
        let a = BitMapBackend::new(&file, (1500, 500)).into_drawing_area();
        a.fill(&WHITE)?;
        let panels = a.split_evenly((1, OPS.len()));
        for (panel, op) in panels.iter().zip(OPS) {
            let series: Vec<(&str, Vec<(f64, f64)>)> = ["rmmap", "nbd"]
                .iter()
                .map(|sys| {
                    let pts = rtts(r)
                        .into_iter()
                        .filter_map(|rtt| {
                            let key = format!("{}.{}.mib_s", rtt_key(rtt), op.name());
                            r.get(sys, &key).map(|v| (f64::from(rtt), v))
                        })
                        .collect();
                    (*sys, pts)
                })
                .collect();
            lines(
                panel,
                &format!("`rmmap {}` and its nbdcopy through the relay", op.name()),
                "RTT, ms",
                "MiB/s",
                &series,
                false,
            )?;
        }
        a.present()?;
    }
    Ok(())
}

/// The round-trip times the relay part measured, ascending.
fn rtts(r: &Results) -> Vec<u32> {
    let mut v: Vec<u32> = r
        .values
        .values()
        .flat_map(|m| m.keys())
        .filter_map(|k| k.strip_prefix("relay.rtt")?.split('.').next()?.parse().ok())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}
