//! The bench's charts, drawn from small made-up figures: no bench runs here.

use std::collections::HashSet;
use std::path::Path;

use bulklink::charts;

fn colours_of(path: &Path) -> (u32, u32, usize) {
    let image = image::open(path)
        .unwrap_or_else(|e| panic!("{} is not a readable PNG: {e}", path.display()))
        .to_rgb8();
    let colours: HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    (image.width(), image.height(), colours.len())
}

#[test]
fn each_bench_chart_is_a_900_by_500_png_with_more_than_one_colour() {
    let dir = tempfile::tempdir().unwrap();
    let windows: Vec<(f64, f64)> = (0..12)
        .map(|i| (f64::from(i), if i < 11 { 1_000.0 } else { 300.0 }))
        .collect();
    let budget = dir.path().join("write-budget.png");
    charts::budget_windows(
        &budget,
        "write budget",
        &windows,
        &[(0.0, 1_000.0), (5.0, 3_000.0)],
    )
    .unwrap();
    let fairness = dir.path().join("fairness.png");
    let a: Vec<(f64, f64)> = (0..=100).map(|s| (f64::from(s), f64::from(s))).collect();
    let b = vec![(5.0, 0.0), (5.4, 33.0), (5.8, 66.0), (6.1, 100.0)];
    charts::fairness(
        &fairness,
        "fairness",
        &[
            ("A".to_owned(), a.clone()),
            ("B".to_owned(), b),
            ("A alone".to_owned(), a),
        ],
        Some((4.5, 6.6)),
    )
    .unwrap();
    let pipeline = dir.path().join("pipeline-vs-floor.png");
    charts::pipeline_vs_floor(
        &pipeline,
        "pipeline vs floor",
        &[
            (10_000, 110_000.0, 227_000.0),
            (100_000, 118_000.0, 212_000.0),
            (1_000_000, 110_000.0, 163_000.0),
        ],
    )
    .unwrap();

    for path in [&budget, &fairness, &pipeline] {
        let (width, height, colours) = colours_of(path);
        assert_eq!((width, height), (900, 500), "{}", path.display());
        assert!(colours > 1, "{} has {colours} colour(s)", path.display());
    }
}
