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
        evaluate(scan, &crate::registry::Policy::default(), false)
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
    let found = e.reg.discover(None).unwrap();
    std::fs::remove_file(e.reg.abs(&rel)).unwrap();
    // Hash what discovery listed, as if the file vanished mid-audit.
    let err = walk::hash_file(&e.reg.abs(&rel), found.assets[0].stat.size).unwrap_err();
    assert_eq!(crate::registry::discover::vanished_or(&err), "vanished while being read");
}
