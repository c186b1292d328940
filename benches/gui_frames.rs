//! Frame time of the console's two big views, headless (no window, no GPU): the Devices view
//! with 100,000 devices and a selected device whose 10,000-node tree is fully open, and the
//! Delegations view with 100,000 delegations. Each frame is one egui pass (layout of what is
//! on screen) plus tessellation into triangles, which is all the CPU work a frame costs
//! before the GPU. The view scrolls a little every frame so different rows are laid out.
//!
//! Then the frames right after the operator changed something that makes the 100,000 rows
//! be filtered or ordered again: a filter typed (or grown, as while typing), a column sorted
//! either way, both at once; each change five times.
//!
//! `cargo bench --bench gui_frames` prints p50, p99 and max per view, and p50 and max of the
//! frames after a change; the target is 4 ms a frame.

use std::time::{Duration, Instant};

use dmdeleg::gui::backend::Backend;
use dmdeleg::gui::devices::DevCol;
use dmdeleg::gui::{ConsoleApp, View, frame, synthetic};
use egui::{Event, MouseWheelUnit, Pos2, RawInput, Rect, vec2};

const ROWS: usize = 100_000;
const TREE_NODES: usize = 10_000;
const FRAMES: usize = 300;
/// How many times the filter and sort changes are repeated.
const REPEAT: usize = 5;

/// egui's clock must never go back: one frame counter for the whole run.
static FRAME: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn input(scroll: f32) -> RawInput {
    let n = FRAME.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = n as f64 / 60.0;
    let mut i = RawInput {
        screen_rect: Some(Rect::from_min_size(Pos2::ZERO, vec2(1600.0, 1000.0))),
        time: Some(t),
        ..Default::default()
    };
    // Over the left list (and the tree, further right).
    i.events.push(Event::PointerMoved(Pos2::new(300.0, 500.0)));
    if scroll != 0.0 {
        i.events.push(Event::MouseWheel {
            unit: MouseWheelUnit::Point,
            delta: vec2(0.0, scroll),
            phase: egui::TouchPhase::Move,
            modifiers: Default::default(),
            source: egui::MouseWheelSource::Wheel,
        });
    }
    i
}

struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
    pass_p50: Duration,
}

fn measure(ctx: &egui::Context, app: &mut ConsoleApp, pointer: Pos2, frames: usize) -> Figures {
    let run = |app: &mut ConsoleApp, scroll: f32| -> (Duration, Duration) {
        let mut inp = input(scroll);
        inp.events[0] = Event::PointerMoved(pointer);
        let start = Instant::now();
        let mut out = ctx.run_ui(inp, |ui| frame(app, ui));
        let pass = start.elapsed();
        let prims = ctx.tessellate(std::mem::take(&mut out.shapes), out.pixels_per_point);
        // No renderer here: the font atlas uploads are dropped.
        out.textures_delta.clear();
        std::hint::black_box(prims);
        (start.elapsed(), pass)
    };
    for _ in 0..frames.min(30) {
        run(app, 0.0);
    }
    let mut total = Vec::with_capacity(frames);
    let mut pass = Vec::with_capacity(frames);
    for k in 0..frames {
        // Scroll down for a while, then up: rows keep changing.
        let scroll = if (k / 50) % 2 == 0 { -120.0 } else { 120.0 };
        let (a, b) = run(app, scroll);
        total.push(a);
        pass.push(b);
    }
    total.sort();
    pass.sort();
    Figures {
        p50: total[frames / 2],
        p99: total[frames * 99 / 100],
        max: total[frames - 1],
        pass_p50: pass[frames / 2],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep it quick then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rows = if quick { 1_000 } else { ROWS };
    let nodes = if quick { 500 } else { TREE_NODES };
    let t0 = Instant::now();
    let snap = synthetic::snapshot(rows, rows);
    let tree = synthetic::tree_model(nodes);
    let made = t0.elapsed();
    let ctx = egui::Context::default();
    let mut app = ConsoleApp::new(&ctx, Backend::fixed(snap.clone()));
    let dev = snap.servers[0].devices[rows / 2].dev_id.clone();

    // Devices: 100,000 rows, one device selected, its 10,000-node tree fully open.
    app.view = View::Devices;
    app.devices.select(&dev);
    app.devices.on_tree(&dev, Ok(tree.clone()));
    app.devices.tree_view.expand_all(&tree);
    app.devices
        .tree_view
        .ticked
        .insert("./Vendor/Data/G001".into());
    let frames = if quick { 20 } else { FRAMES };
    let devices_list = measure(&ctx, &mut app, Pos2::new(300.0, 500.0), frames);
    let devices_tree = measure(&ctx, &mut app, Pos2::new(1100.0, 400.0), frames);

    // A frame after the operator typed a filter, or picked another sort: the 100,000 rows
    // are filtered or ordered again in that frame.
    let one = |app: &mut ConsoleApp| {
        let start = Instant::now();
        let mut out = ctx.run_ui(input(0.0), |ui| frame(app, ui));
        let _ = ctx.tessellate(std::mem::take(&mut out.shapes), out.pixels_per_point);
        out.textures_delta.clear();
        start.elapsed()
    };
    let (mut refilter, mut resort) = (Vec::new(), Vec::new());
    for _ in 0..REPEAT {
        for f in [
            "IMEI:35000000001",
            "acme",
            "SimPhone 3",
            "s",
            "si",
            "sim",
            "",
        ] {
            app.devices.filter = f.to_owned();
            refilter.push(one(&mut app));
        }
        for col in [
            DevCol::Man,
            DevCol::Model,
            DevCol::LastSeen,
            DevCol::Managers,
            DevCol::Id,
        ] {
            for asc in [false, true] {
                app.devices.sort = (col, asc);
                resort.push(one(&mut app));
            }
        }
        // Sort and filter at once.
        app.devices.filter = "acme".into();
        for col in [DevCol::Model, DevCol::Id] {
            app.devices.sort = (col, false);
            resort.push(one(&mut app));
        }
        app.devices.filter.clear();
        app.devices.sort = (DevCol::Id, true);
        resort.push(one(&mut app));
    }
    refilter.sort();
    resort.sort();

    // Delegations: 100,000 rows, one selected (its timeline is not loaded: no engine).
    app.view = View::Delegations;
    let id = snap.servers[0].delegations[rows / 3].id.clone();
    app.delegations.select(&id);
    let delegations = measure(&ctx, &mut app, Pos2::new(300.0, 500.0), frames);
    let mut refilter_d = Vec::new();
    for _ in 0..REPEAT {
        for f in ["IMEI:35000000001", "0000-4000", "dms2", "d", "dm", ""] {
            app.delegations.filter = f.to_owned();
            refilter_d.push(one(&mut app));
        }
    }
    refilter_d.sort();

    let visible = app.devices.tree_view.visible(&tree).len();
    println!(
        "gui_frames: {} devices, {} delegations, a {}-node tree ({} rows open); data made in {}",
        rows,
        rows,
        tree.nodes.len(),
        visible,
        ms(made)
    );
    println!("view (frame = egui pass + tessellation)      p50       p99       max   (pass p50)");
    for (name, f) in [
        ("Devices, scrolling the device list", &devices_list),
        ("Devices, scrolling the open tree", &devices_tree),
        ("Delegations, scrolling the list", &delegations),
    ] {
        println!(
            "{name:<42} {:>9} {:>9} {:>9}   ({})",
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            ms(f.pass_p50)
        );
    }
    let range = |v: &[Duration]| {
        format!(
            "p50 {}, max {} ({} frames)",
            ms(v[v.len() / 2]),
            ms(v[v.len() - 1]),
            v.len()
        )
    };
    println!(
        "a frame that filters all {rows} device rows again:  {}",
        range(&refilter)
    );
    println!(
        "a frame that sorts all {rows} device rows again:    {}",
        range(&resort)
    );
    println!(
        "a frame that filters all {rows} delegations again:  {}",
        range(&refilter_d)
    );
}
