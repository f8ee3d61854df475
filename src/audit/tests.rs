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

/// Pretend the files were written long ago, so the cache may store them.
fn age(path: &std::path::Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(old).unwrap();
}

#[test]
fn cached_rescan_detects_a_same_size_edit() {
    let e = env();
    let rel = e.write("bg/sky.png", b"AAAA");
    e.reg.register(&rel, &RegisterOptions::default(), &|_| false).unwrap();
    age(&e.reg.abs(&rel));
    age(&e.reg.sidecar_abs(&rel));
    let mut cache = StatCache::default();
    let first = scan(&e.reg, &cache, &ScanOptions::default()).unwrap();
    assert_eq!(first.stats.files_hashed, 1);
    assert!(cache.update(&first));
    let second = scan(&e.reg, &cache, &ScanOptions::default()).unwrap();
    assert_eq!((second.stats.files_cached, second.stats.sidecars_cached), (1, 1));
    assert!(!cache.update(&second));
    // Same size, new content, new mtime: the stat differs, so it is rehashed.
    std::fs::write(e.reg.abs(&rel), b"BBBB").unwrap();
    let third = scan(&e.reg, &cache, &ScanOptions::default()).unwrap();
    assert_eq!(third.stats.files_hashed, 1);
    assert!(e.findings(&third).contains(&"bg/sky.png stale-hash".to_string()));
    // --full ignores the cache even when the stat is the same.
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
        record_written(&mut s, p, w.unwrap().stat);
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
