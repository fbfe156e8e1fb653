//! Samples of one benchmark row and the tables printed from them.

use std::time::Duration;

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p99 (nearest rank) in ms.
pub fn pct(samples: &[Duration]) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut v: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.50), rank(0.99))
}

pub fn median_u64(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// What one row measured, per repetition.
#[derive(Default)]
pub struct Row {
    pub kactus_add: Vec<Duration>,
    pub kactus_del: Vec<Duration>,
    /// kactus's wall time minus the time its delegates ran (from its log), per call: its own
    /// cost measured within the same call, so free of the run-to-run noise of the delegates.
    pub own_add: Vec<Duration>,
    pub own_del: Vec<Duration>,
    /// The delegates' time inside kactus's ADD (spawn to reap, as kactus logs it).
    pub delegates_add: Vec<Duration>,
    pub direct_add: Vec<Duration>,
    pub direct_del: Vec<Duration>,
    pub requests: Vec<u64>,
    pub verbs: String,
    pub bytes: Vec<u64>,
    pub connections: Vec<u64>,
    pub del_requests: Vec<u64>,
}

/// A row of the apiserver's counters between two snapshots.
pub fn traffic(row: &mut Row, before: &kactus_testapi::Stats, after: &kactus_testapi::Stats) {
    row.requests.push(after.requests - before.requests);
    row.bytes.push(after.response_bytes - before.response_bytes);
    row.connections.push(after.connections - before.connections);
    row.verbs = after
        .per_verb
        .iter()
        .filter_map(|(verb, count)| {
            let delta = count - before.per_verb.get(verb).copied().unwrap_or(0);
            (delta > 0).then(|| format!("{delta} {verb}"))
        })
        .collect::<Vec<_>>()
        .join(", ");
}

/// kactus against the same delegates exec'd directly.
pub fn print_timing(title: &str, rows: &[(usize, Row)]) {
    println!("\n{title}");
    println!(
        "| att | verb | kactus p50 | kactus p99 | direct p50 | direct p99 | overhead p50 | overhead/att | overhead/direct | kactus own p50 |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for verb in ["ADD", "DEL"] {
        let base = rows.iter().find(|(n, _)| *n == 0).map(|(_, r)| overhead(r, verb));
        for (n, row) in rows {
            let (k, d) =
                if verb == "ADD" { (&row.kactus_add, &row.direct_add) } else { (&row.kactus_del, &row.direct_del) };
            let ((k50, k99), (d50, d99)) = (pct(k), pct(d));
            let ovh = k50 - d50;
            let per_att = match (n, base) {
                (0, _) | (_, None) => "-".to_string(),
                (n, Some(b)) => format!("{:+.2} ms", (ovh - b) / *n as f64),
            };
            let own = if verb == "ADD" { &row.own_add } else { &row.own_del };
            let own = if own.is_empty() { "n/a".to_string() } else { format!("{:.1} ms", pct(own).0) };
            println!(
                "| {n} | {verb} | {k50:.1} ms | {k99:.1} ms | {d50:.1} ms | {d99:.1} ms | {ovh:+.1} ms | {per_att} | {:.2} | {own} |",
                ovh / d50
            );
        }
    }
}

fn overhead(row: &Row, verb: &str) -> f64 {
    let (k, d) = if verb == "ADD" { (&row.kactus_add, &row.direct_add) } else { (&row.kactus_del, &row.direct_del) };
    pct(k).0 - pct(d).0
}

/// kactus alone (null delegates), one line per attachment count and build.
pub fn print_alone(title: &str, rows: &[(usize, &str, Row)]) {
    println!("\n{title}");
    println!(
        "| att | build | ADD own p50 | ADD own p99 | ADD wall p50 | its delegates p50 | DEL own p50 | DEL wall p50 | requests/ADD | response bytes/ADD |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, build, row) in rows {
        let (own50, own99) = pct(&row.own_add);
        println!(
            "| {n} | {build} | {own50:.2} ms | {own99:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} |",
            pct(&row.kactus_add).0,
            pct(&row.delegates_add).0,
            pct(&row.own_del).0,
            pct(&row.kactus_del).0,
            median_u64(&row.requests),
            median_u64(&row.bytes),
        );
    }
    let builds: Vec<&str> = rows.iter().fold(Vec::new(), |mut v, (_, b, _)| {
        if !v.contains(b) {
            v.push(b);
        }
        v
    });
    for build in builds {
        let own = |n: usize| rows.iter().find(|(m, b, _)| *m == n && *b == build).map(|(_, _, r)| pct(&r.own_add).0);
        let slope = |a: usize, b: usize| match (own(a), own(b)) {
            (Some(x), Some(y)) => format!("{:+.3} ms", (y - x) / (b - a) as f64),
            _ => "n/a".into(),
        };
        println!(
            "{build}: own time per additional attachment (ADD p50): 0 -> 16: {}, 16 -> 64: {}",
            slope(0, 16),
            slope(16, 64)
        );
    }
}

pub fn print_api(title: &str, rows: &[(usize, &str, &Row)]) {
    println!("\n{title}");
    println!("| att | build | requests/ADD | by verb | response bytes/ADD | new connections/ADD | requests/DEL |");
    println!("|---:|---|---:|---|---:|---:|---:|");
    for (n, build, row) in rows {
        println!(
            "| {n} | {build} | {} | {} | {} | {} | {} |",
            median_u64(&row.requests),
            row.verbs,
            median_u64(&row.bytes),
            median_u64(&row.connections),
            median_u64(&row.del_requests)
        );
    }
}
