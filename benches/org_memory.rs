//! Heap of the metadata poller and the metrics at organization scale (issue #17, point 6):
//! 100,000 secrets in 50 accounts x 2 regions by default (`benches/org_fleet.rs`), with every
//! secret's versions, so the first cycle looks each one up and the steady cycles none.
//!
//! A counting global allocator measures keywarden's live heap (bytes requested and not freed)
//! and its peak within each phase: the first cycle, steady cycles, a cycle in which every
//! secret got a new AWSCURRENT version, the re-rendering of the metrics, and each kind of
//! scrape read to its end as the HTTP body would be. The in-memory ListSecrets data (what AWS
//! holds) is built first and reported apart. Heap bytes are not the resident size (glibc keeps
//! some freed memory, and the binary's code is resident too): `benches/org_scale.sh` measures
//! the daemon's VmRSS and VmHWM against moto; this is the tool to see which phase costs what.
//!
//! ```sh
//! cargo bench --bench org_memory                       # discovered and inventory fleets
//! KEYWARDEN_BENCH_FLEETS=discovered cargo bench --bench org_memory
//! ```
//!
//! It exits non-zero if a phase's peak exceeds `KEYWARDEN_BENCH_MAX_HEAP_MIB` (when set).

use std::sync::atomic::Ordering;
use std::time::Instant;

#[path = "common.rs"]
mod common;

#[path = "pages.rs"]
mod pages;

#[path = "org_fleet.rs"]
mod org_fleet;
use org_fleet::{Shape, now};

/// The system allocator, counting live bytes and their high-water mark.
#[allow(unsafe_code)] // A GlobalAlloc forwarding to System (see the SAFETY comments).
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct Counting;

    pub static LIVE: AtomicUsize = AtomicUsize::new(0);
    pub static PEAK: AtomicUsize = AtomicUsize::new(0);

    fn grew(n: usize) {
        let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }

    // SAFETY: every call is forwarded to `System` with the same arguments; the counters are
    // bookkeeping only.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded as is.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded as is.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded as is.
            unsafe { System.dealloc(ptr, layout) };
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: forwarded as is.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                if new_size >= layout.size() {
                    grew(new_size - layout.size());
                } else {
                    LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
                }
            }
            p
        }
    }
}

use counting::{Counting, LIVE, PEAK};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: f64 = 1024.0 * 1024.0;

/// The live heap now.
fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Runs `f`; returns its result and the peak live heap while it ran.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.store(live(), Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed))
}

/// One line of the report.
struct Row {
    phase: String,
    seconds: f64,
    peak: usize,
    after: usize,
}

fn fleet(rt: &tokio::runtime::Runtime, shape: Shape, inventory: bool) -> Vec<Row> {
    let name = if inventory { "inventory" } else { "discovered" };
    let base = live();
    let listings = org_fleet::listings(shape);
    let aws = live() - base;
    eprintln!(
        "{name} fleet: {} secrets in {} targets; the in-memory ListSecrets data (AWS's side) takes {:.1} MiB, left out below",
        shape.total(),
        shape.accounts * shape.regions,
        aws as f64 / MIB
    );
    // Everything below is relative to this: keywarden's own heap.
    let zero = live();
    let mut rows = Vec::new();
    let mut row = |phase: &str, started: Instant, peak: usize| {
        rows.push(Row {
            phase: phase.to_string(),
            seconds: started.elapsed().as_secs_f64(),
            peak: peak.saturating_sub(zero),
            after: live().saturating_sub(zero),
        });
    };

    let t = Instant::now();
    let (config, peak) = peak_of(|| org_fleet::config(shape, inventory));
    row("configuration parsed", t, peak);
    let t = Instant::now();
    let ((mut poller, metrics, view), peak) = peak_of(|| org_fleet::wire(shape, config, listings));
    row("poller and metrics wired", t, peak);

    let t = Instant::now();
    let (report, peak) = peak_of(|| rt.block_on(poller.poll_once(now())));
    let report = report.expect("first cycle");
    assert_eq!(report.version_lookups, shape.total());
    assert_eq!(report.watched, shape.total());
    row("first cycle (every version looked up)", t, peak);

    for k in 1..=3 {
        let t = Instant::now();
        let (report, peak) = peak_of(|| rt.block_on(poller.poll_once(now())));
        let report = report.expect("steady cycle");
        assert_eq!(report.version_lookups, 0);
        assert_eq!(report.watched, shape.total());
        row(&format!("steady cycle {k}"), t, peak);
    }

    // What the view's statuses take: the heap a copy of them adds.
    let before = live();
    let copy = view.read().secrets.clone();
    let statuses = live() - before;
    drop(copy);
    eprintln!(
        "{name}: the view's {} statuses take {:.1} MiB ({} bytes each); the rest of the live heap is the metrics' records, the configuration and the targets",
        shape.total(),
        statuses as f64 / MIB,
        statuses / shape.total().max(1)
    );

    let t = Instant::now();
    let (_, peak) = peak_of(|| metrics.refresh());
    row("metrics re-rendered (gzip cache)", t, peak);

    for (label, openmetrics, gzip) in [
        ("scrape: OpenMetrics, gzip (Prometheus)", true, true),
        ("scrape: OpenMetrics, plain", true, false),
        ("scrape: text 0.0.4, plain", false, false),
    ] {
        let t = Instant::now();
        let (bytes, peak) = peak_of(|| {
            metrics
                .scrape(openmetrics, gzip)
                .into_chunks()
                .map(|c| c.len())
                .sum::<usize>()
        });
        row(&format!("{label}, {bytes} bytes"), t, peak);
    }
    assert_eq!(view.read().secrets.len(), shape.total());
    drop(poller);
    drop(metrics);
    drop(view);
    rows
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once as a test (smaller).
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let shape = Shape::from_env();
    let fleets = std::env::var("KEYWARDEN_BENCH_FLEETS").unwrap_or_else(|_| "both".into());
    let limit = std::env::var("KEYWARDEN_BENCH_MAX_HEAP_MIB").ok().map(|v| {
        v.parse::<f64>()
            .expect("KEYWARDEN_BENCH_MAX_HEAP_MIB: a number")
    });
    let mut over = Vec::new();
    for inventory in [false, true] {
        let name = if inventory { "inventory" } else { "discovered" };
        if fleets != "both" && fleets != name {
            continue;
        }
        let rows = fleet(&rt, shape, inventory);
        println!(
            "\n{name} fleet, {} secrets: keywarden's live heap (MiB)",
            shape.total()
        );
        println!("| phase | time | peak during | live after |\n|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {:.2} s | {:.1} | {:.1} |",
                r.phase,
                r.seconds,
                r.peak as f64 / MIB,
                r.after as f64 / MIB
            );
            if let Some(max) = limit
                && r.peak as f64 / MIB > max
            {
                over.push(format!(
                    "{name}: {} peaked at {:.1} MiB",
                    r.phase,
                    r.peak as f64 / MIB
                ));
            }
        }
    }
    if !over.is_empty() {
        eprintln!("over KEYWARDEN_BENCH_MAX_HEAP_MIB: {}", over.join("; "));
        std::process::exit(1);
    }
}
