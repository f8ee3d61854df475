//! Scan, cache and fix planning on small temp trees.

use super::*;
use crate::config::Config;
use crate::paths::Paths;
use crate::registry::RegisterOptions;

struct Env {
    _dir: tempfile::TempDir,
    paths: Paths,
    reg: Registry,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    std::fs::create_dir_all(&paths.assets_root).unwrap();
    let reg = Registry::open(&paths, &Config::defaults()).unwrap();
    Env { _dir: dir, paths, reg }
}

impl Env {
    fn write(&self, rel: &str, bytes: &[u8]) -> RelPath {
        let p = self.paths.assets_root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
        RelPath::parse(rel).unwrap()
    }
    fn findings(&self, scan: &Scan) -> Vec<String> {
        evaluate(scan, &crate::registry::Policy::default(), false, false)
            .into_iter()
            .map(|f| format!("{} {}", f.path, f.rule))
            .collect()
    }
}

/// Scan as if the audit had started `secs` later, so files written just now count as settled.
fn settled_scan(reg: &Registry, cache: &StatCache, secs: i64) -> Scan {
    let mut s = scan(reg, cache, &ScanOptions::default()).unwrap();
    s.started_at_ns += secs * 1_000_000_000;
    s
}

#[test]
fn cached_rescan_detects_a_same_size_edit() {
    let e = env();
    let rel = e.write("bg/sky.png", b"AAAA");
    e.reg.register(&rel, &RegisterOptions::default(), &|_| false).unwrap();
    let mut cache = StatCache::default();
    let fresh = scan(&e.reg, &cache, &ScanOptions::default()).unwrap();
    cache.update(&fresh);
    assert!(cache.is_empty(), "files written within 2 s of the audit are not cached");
    let first = settled_scan(&e.reg, &cache, 10);
    assert_eq!(first.stats.files_hashed, 1);
    assert!(cache.update(&first));
    let second = settled_scan(&e.reg, &cache, 10);
    assert_eq!((second.stats.files_cached, second.stats.sidecars_cached), (1, 1));
    assert!(!cache.update(&second), "nothing changed, nothing to save");
    // Same size, new content, and the old mtime put back: the ctime still differs.
    let old_mtime = std::fs::metadata(e.reg.abs(&rel)).unwrap().modified().unwrap();
    std::fs::write(e.reg.abs(&rel), b"BBBB").unwrap();
    std::fs::File::options().write(true).open(e.reg.abs(&rel)).unwrap().set_modified(old_mtime).unwrap();
    let third = settled_scan(&e.reg, &cache, 10);
    assert_eq!(third.stats.files_hashed, 1);
    assert!(e.findings(&third).contains(&"bg/sky.png stale-hash".to_string()));
    // --full ignores the cache even when the stat is the same.
    cache.update(&third);
    let full = scan(&e.reg, &cache, &ScanOptions { full: true, ..Default::default() }).unwrap();
    assert_eq!(full.stats.files_cached, 0);
}

#[test]
fn plan_registers_refreshes_and_fills() {
    let e = env();
    let new = e.write("characters/hero_smile.png", b"hero");
    let stale = e.write("bg/sky.png", b"v1");
    e.reg.register(&stale, &RegisterOptions { tags: vec!["sky".into()], ..Default::default() }, &|_| false).unwrap();
    e.write("bg/sky.png", b"v2, longer");
    let s = scan(&e.reg, &StatCache::default(), &ScanOptions::default()).unwrap();
    let plan = plan_fixes(&e.reg, &s, false, &[]);
    let lines: Vec<String> = plan.iter().map(|p| format!("{} {:?} {}", p.change.rel, p.action, p.detail)).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "bg/sky.png Refresh hash, bytes");
    assert!(lines[1].starts_with("characters/hero_smile.png Register new sidecar, uid "), "{}", lines[1]);
    assert_eq!(plan[0].change.asset.tags, ["sky"]);
    assert_eq!(plan[0].change.asset.version, 2);
    let filled = plan_fixes(&e.reg, &s, true, &[]);
    let hero = filled.iter().find(|p| p.change.rel == new).unwrap();
    assert_eq!(hero.change.asset.tags, ["characters", "hero", "smile"]);
    assert_eq!(hero.change.asset.license.as_deref(), Some("unknown"));
    assert_eq!(filled.iter().find(|p| p.change.rel == stale).unwrap().detail, "hash, bytes, license");
}

#[test]
fn written_changes_update_the_findings() {
    let e = env();
    e.write("a.png", b"a");
    e.write("b.png", b"a");
    let mut s = scan(&e.reg, &StatCache::default(), &ScanOptions::default()).unwrap();
    let plan = plan_fixes(&e.reg, &s, false, &[]);
    assert_ne!(plan[0].change.asset.uid, plan[1].change.asset.uid, "duplicates get distinct uids");
    let changes: Vec<_> = plan.iter().map(|p| p.change.clone()).collect();
    for (p, w) in plan.iter().zip(e.reg.write_batch(&changes)) {
        w.unwrap();
        record_written(&mut s, p);
    }
    let f = e.findings(&s);
    assert!(!f.iter().any(|l| l.ends_with("missing-sidecar")), "{f:?}");
    assert!(f.contains(&"a.png duplicate-content".to_string()));
    assert!(f.contains(&"a.png missing-license".to_string()));
}

#[test]
fn vanished_and_unreadable_files_are_findings() {
    let e = env();
    let rel = e.write("x.png", b"x");
    e.write("y.png", b"y");
    let found = e.reg.discover(None).unwrap();
    std::fs::remove_file(e.reg.abs(&rel)).unwrap();
    // Check what discovery listed, as if the file vanished mid-audit.
    let folder = crate::registry::discover::Folder { assets: found.assets, sidecars: vec![] };
    let (assets, _) = walk::check_folder(e.reg.root(), &folder, &StatCache::default(), true, None);
    assert_eq!(assets[0].file, FileState::Unreadable("vanished while being read".into()));
    assert!(matches!(assets[1].file, FileState::Hashed { bytes: 1, .. }));
}

/// Files of this name make the scan panic (see `walk::Run::next`), to test the recovery.
pub(super) const PANICS: &str = "boom-the-scan.png";

/// Deterministic bytes of length `n`, different for each `seed`.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn hashes(s: &Scan) -> Vec<(String, String, u64)> {
    s.assets
        .iter()
        .map(|a| match &a.file {
            FileState::Hashed { hash, bytes } => (a.rel.to_string(), hash.clone(), *bytes),
            FileState::Unreadable(why) => (a.rel.to_string(), format!("unreadable: {why}"), 0),
        })
        .collect()
}

#[test]
fn every_file_is_hashed_right_whatever_its_size_or_neighbours() {
    let e = env();
    // Sizes around SHA-256's padding boundaries, empty files, one over the whole-read limit (streamed),
    // over two folders and more than one task each.
    let mut sizes = vec![0usize, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 4096, 100_000, 17 * 1024 * 1024];
    sizes.extend((0..30).map(|i| (i * 7919) % 70_000));
    let mut expected = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let rel = format!("{}/f{i:03}.bin", if i % 2 == 0 { "even" } else { "odd" });
        let content = bytes(*n, i as u64);
        e.write(&rel, &content);
        expected.push((rel, crate::digest::sha256_hex(&content), *n as u64));
    }
    expected.sort();
    let full = scan(&e.reg, &StatCache::default(), &ScanOptions { full: true, jobs: 2, ..Default::default() }).unwrap();
    assert_eq!(hashes(&full), expected);
    assert_eq!(full.stats.files_hashed as usize, sizes.len());

    // Cached and changed files side by side in one task: only the changed ones are read again.
    let mut cache = StatCache::default();
    cache.update(&settled_scan(&e.reg, &cache, 10));
    for (i, (rel, hash, n)) in expected.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
        let content = bytes(i + 5, 1000 + i as u64);
        e.write(rel, &content);
        (*hash, *n) = (crate::digest::sha256_hex(&content), content.len() as u64);
    }
    let again = settled_scan(&e.reg, &cache, 10);
    assert_eq!(hashes(&again), expected);
    assert_eq!(again.stats.files_hashed as usize, expected.len().div_ceil(3));
    assert_eq!(again.stats.files_cached as usize, expected.len() - expected.len().div_ceil(3));
}

#[test]
fn a_panic_costs_one_file_not_its_task() {
    let e = env();
    let mut expected = Vec::new();
    for i in 0..20 {
        let rel = format!("pack/a{i:02}.png");
        let content = bytes(1000 + i * 10, i as u64);
        e.write(&rel, &content);
        expected.push((rel, crate::digest::sha256_hex(&content), content.len() as u64));
    }
    e.write(&format!("pack/{PANICS}"), b"whatever");
    let s = scan(&e.reg, &StatCache::default(), &ScanOptions::default()).unwrap();
    let got = hashes(&s);
    let (boom, rest): (Vec<_>, Vec<_>) = got.into_iter().partition(|(rel, _, _)| rel.ends_with(PANICS));
    assert_eq!(rest, expected, "the other files of the task are hashed");
    assert_eq!(boom.len(), 1);
    assert!(boom[0].1.starts_with("unreadable: internal error while checking this file:"), "{boom:?}");
    assert!(boom[0].1.contains("panicked (test)"), "{boom:?}");
    assert!(e.findings(&s).contains(&format!("pack/{PANICS} unreadable")));
}

#[test]
fn fingerprints_are_16_hex_digits_both_ways() {
    for (v, hex) in [
        (0u64, "0000000000000000"),
        (0x0123_4567_89ab_cdef, "0123456789abcdef"),
        (u64::MAX, "ffffffffffffffff"),
        (Fingerprint::of_rule("missing-sidecar").0, "c904da583cd8ae39"),
    ] {
        let f = Fingerprint(v);
        assert_eq!(f.to_string(), hex);
        assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{hex}\""));
        assert_eq!(serde_json::from_str::<Fingerprint>(&format!("\"{hex}\"")).unwrap(), f);
        assert_eq!(Fingerprint::parse(hex), Some(f));
    }
}

#[test]
fn cache_entries_are_found_with_or_without_the_hint() {
    let e = env();
    for name in ["a/1.png", "a/2.png", "b/1.png"] {
        let p = e.paths.assets_root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, name).unwrap();
    }
    let mut scan = scan(&e.reg, &StatCache::default(), &ScanOptions::default()).unwrap();
    scan.started_at_ns = i64::MAX / 2; // every stat settled
    let mut cache = StatCache::default();
    assert!(cache.update(&scan));
    // In order (the hint hits), out of order (it misses), and an unknown path.
    let mut next = 0;
    for a in scan.assets.iter().chain(scan.assets.iter().rev()) {
        let entry = cache.entry(a.rel.as_str(), &mut next).expect("a row for every asset");
        assert!(entry.file(&a.stat).is_some(), "{}", a.rel);
    }
    assert!(cache.entry("a/3.png", &mut next).is_none());
    assert!(cache.entry("a/3.png", &mut { usize::MAX }).is_none());
}
