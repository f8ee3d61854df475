//! The watcher's [`Sink`] over the asset registry: each [`Action`] becomes a registry operation, each
//! registry event its bridged hook events (`registry::to_hooks`). The only watcher file that knows
//! the sidecar format; the registry owns it.
//!
//! Batches of registrations and refreshes go through `Registry::write_batch` (one durability
//! barrier for the whole batch instead of an fsync per sidecar); single actions use the registry's
//! ordinary operations. A sidecar a person broke is reported (`obs.sidecar_invalid`) and never
//! rewritten.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::engine::canonical;
use super::sink::{Action, Applied, HookEvent, Known, Sink};
use crate::config::Config;
use crate::paths::Paths;
use crate::registry::{
    self, assign_uid, new_sidecar, refreshed, to_hooks, RegisterOptions, Registry, RegistryError, RegistryEvent,
    RelPath, Sidecar,
};

/// The registry, as the watcher drives it.
#[derive(Debug)]
pub struct RegistrySink {
    registry: Registry,
    /// Uids in use (filled by every lookup and action), so a new asset never takes another's uid.
    uids: Mutex<HashSet<String>>,
}

impl RegistrySink {
    /// Open the registry of a runtime root. The assets root is taken in its canonical form, the form
    /// the watcher's event paths have.
    pub fn open(paths: &Paths, config: &Config) -> Result<RegistrySink> {
        let mut paths = paths.clone();
        paths.assets_root = canonical(&paths.assets_root);
        Ok(RegistrySink { registry: Registry::open(&paths, config)?, uids: Mutex::new(HashSet::new()) })
    }

    fn rel(&self, path: &Path) -> Result<RelPath> {
        RelPath::from_fs(self.registry.root(), path).with_context(|| format!("{} is not an asset path", path.display()))
    }

    fn taken(&self) -> impl Fn(&str) -> bool + '_ {
        |uid| self.uids.lock().expect("uid set lock").contains(uid)
    }

    fn remember(&self, uid: &str) {
        self.uids.lock().expect("uid set lock").insert(uid.to_string());
    }

    fn forget(&self, uid: &str) {
        self.uids.lock().expect("uid set lock").remove(uid);
    }

    fn known(&self, s: &Sidecar) -> Known {
        self.remember(&s.uid);
        Known { uid: s.uid.clone(), hash: s.hash.clone(), bytes: s.bytes }
    }

    fn read(&self, rel: &RelPath) -> Result<Option<registry::Parsed>> {
        self.registry.read_sidecar(rel)
    }

    /// The uid for a new asset, reserved at once so a batch never hands one out twice.
    fn new_uid(&self, hash: &str, rel: &RelPath) -> String {
        let mut uids = self.uids.lock().expect("uid set lock");
        let uid = assign_uid(hash, rel, &|u| uids.contains(u));
        uids.insert(uid.clone());
        uid
    }

    fn options() -> RegisterOptions {
        RegisterOptions { origin: Some("watch".into()), ..Default::default() }
    }

    /// Plan and write a registration or refresh; when another writer changed the sidecar between
    /// the read and the write ([`registry::Registry::commit`] refuses), plan again from the new one.
    fn write(&self, action: &Action) -> Result<Applied> {
        for _ in 0..registry::EDIT_ATTEMPTS {
            // Looked at again on every attempt: the writer that changed the sidecar meanwhile may
            // have written exactly this content's sidecar.
            if let Some(done) = self.already_recorded(action)? {
                return Ok(done);
            }
            let change = self.plan_change(action)?;
            if let Some(events) = self.registry.commit(&change)? {
                return Ok(Applied {
                    events: to_hooks(&events),
                    known: Some(self.known(&change.asset)),
                    sidecar: Some(self.registry.sidecar_abs(&change.rel)),
                    trashed: None,
                });
            }
        }
        bail!("the sidecar kept changing while the watcher updated it ({action:?}); left for the next event")
    }

    /// A refresh (or registration) whose sidecar on disk already describes exactly this content: someone else wrote it
    /// (`git checkout` puts the branch's sidecar beside the branch's file; another process refreshed
    /// it). Rewriting it would change only `updated_at` and leave a work tree dirty, so the watcher
    /// only reports the change of content.
    fn already_recorded(&self, action: &Action) -> Result<Option<Applied>> {
        let (path, hash, bytes, previous_hash) = match action {
            Action::Refresh { path, hash, bytes, previous_hash } => (path, hash, bytes, Some(previous_hash)),
            Action::Register { path, hash, bytes } => (path, hash, bytes, None),
            _ => return Ok(None),
        };
        let rel = self.rel(path)?;
        let Some(parsed) = self.read(&rel)? else { return Ok(None) };
        if parsed.sidecar.hash != *hash || parsed.sidecar.bytes != *bytes {
            return Ok(None);
        }
        let Some(previous_hash) = previous_hash else {
            // A registration whose sidecar appeared meanwhile, for this very content (checked out
            // with its file, or written by another process, which reported it).
            return Ok(Some(Applied {
                events: Vec::new(),
                known: Some(self.known(&parsed.sidecar)),
                sidecar: None,
                trashed: None,
            }));
        };
        let event = RegistryEvent::AssetMetaUpdated {
            asset: parsed.sidecar.clone(),
            previous_hash: Some(previous_hash.clone()),
            previous_path: None,
        };
        Ok(Some(Applied {
            events: to_hooks(&[event]),
            known: Some(self.known(&parsed.sidecar)),
            sidecar: None,
            trashed: None,
        }))
    }

    /// Write a carried-over sidecar (a move or restore) at `rel`, replacing whatever is there:
    /// `previous` is the sidecar it came from, for the events.
    fn write_carried(&self, rel: &RelPath, next: Sidecar, previous: Sidecar) -> Result<Applied> {
        let change = registry::Change { rel: rel.clone(), asset: next, previous: Some(previous) };
        let path = self.registry.sidecar_abs(rel);
        crate::fs::write_atomic(&path, &change.asset.to_bytes())?;
        Ok(Applied {
            events: to_hooks(&change.events(path.clone())),
            known: Some(self.known(&change.asset)),
            sidecar: Some(path),
            trashed: None,
        })
    }

    /// The Change a registration or refresh writes.
    fn plan_change(&self, action: &Action) -> Result<registry::Change> {
        match action {
            Action::Register { path, hash, bytes } => {
                let rel = self.rel(path)?;
                if let Some(parsed) = self.read(&rel)? {
                    // Registered meanwhile (another process): refresh instead.
                    return self.refresh_change(&rel, parsed, hash, *bytes);
                }
                let uid = self.new_uid(hash, &rel);
                Ok(registry::Change {
                    asset: new_sidecar(&rel, hash, *bytes, uid, &Self::options()),
                    rel,
                    previous: None,
                })
            }
            Action::Refresh { path, hash, bytes, .. } => {
                let rel = self.rel(path)?;
                let parsed = self.read(&rel)?.ok_or_else(|| RegistryError::NotRegistered(rel.to_string()))?;
                self.refresh_change(&rel, parsed, hash, *bytes)
            }
            other => bail!("not a batchable action: {other:?}"),
        }
    }

    fn refresh_change(
        &self,
        rel: &RelPath,
        parsed: registry::Parsed,
        hash: &str,
        bytes: u64,
    ) -> Result<registry::Change> {
        let mut next = refreshed(&parsed, rel, hash, bytes, &self.taken());
        next.updated_at = Some(crate::time::iso_now());
        Ok(registry::Change { rel: rel.clone(), asset: next, previous: Some(parsed.sidecar) })
    }

    /// Move or restore: `source` is the sidecar to carry over (its bytes), `old` the file it described.
    fn carry(&self, to: &Path, source: &Path, hash: Option<(&str, u64)>) -> Result<Applied> {
        let rel = self.rel(to)?;
        // Read, rewrite and remove the source under its edit lock, so an edit of it is not lost.
        let _lock = crate::fs::lock_in_place(source)?;
        let bytes = std::fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
        let parsed = registry::sidecar::parse(&bytes, &rel)
            .map_err(|error| RegistryError::InvalidSidecar { sidecar: source.display().to_string(), error })?;
        let (hash, size) = match hash {
            Some((h, n)) => (h.to_string(), n),
            None => crate::digest::sha256_file(&self.registry.abs(&rel))
                .with_context(|| format!("cannot read {}", to.display()))?,
        };
        let mut next = refreshed(&parsed, &rel, &hash, size, &|u| u != parsed.sidecar.uid && self.taken()(u));
        next.updated_at = Some(crate::time::iso_now());
        let applied = self.write_carried(&rel, next, parsed.sidecar)?;
        if source != self.registry.sidecar_abs(&rel) {
            std::fs::remove_file(source).with_context(|| format!("cannot remove {}", source.display()))?;
        }
        Ok(applied)
    }

    /// `logs/trash/<stamp>[-n]`, a folder where `rel`'s sidecar does not exist yet.
    fn trash_dir_for(&self, rel: &RelPath) -> PathBuf {
        let stamp = crate::time::file_stamp();
        let mut dir = self.registry.trash_dir().join(&stamp);
        let mut n = 1;
        while rel.sidecar().under(&dir).exists() {
            dir = self.registry.trash_dir().join(format!("{stamp}-{n}"));
            n += 1;
        }
        dir
    }

    /// `on_asset_removed` for an asset whose sidecar is already gone (its folder was deleted with it).
    /// `on_asset_removed` for an asset whose sidecar is no longer here: deleted with it (`rm -r`), or
    /// carried away with it (`away`: moved out of the watched tree). Only what the watcher knows is
    /// reported: `meta` is null rather than made up, `sidecar_lost` is true only when it was deleted.
    fn removed_without_sidecar(&self, rel: &RelPath, known: &Known, away: bool) -> Vec<HookEvent> {
        let asset = new_sidecar(rel, &known.hash, known.bytes, known.uid.clone(), &RegisterOptions::default());
        let mut events = to_hooks(&[RegistryEvent::AssetRemoved { asset, trashed_to: PathBuf::new() }]);
        for (_, data) in &mut events {
            data["trashed_to"] = Value::Null;
            data["meta"] = Value::Null;
            data["sidecar_lost"] = json!(!away);
            if away {
                data["moved_out"] = json!(true);
            }
        }
        events
    }

    fn sidecar_edited(&self, sidecar: &Path, asset: &Path) -> Result<Applied> {
        let rel = self.rel(asset)?;
        match self.read(&rel) {
            Ok(Some(parsed)) => {
                let event = RegistryEvent::AssetMetaUpdated {
                    asset: parsed.sidecar.clone(),
                    previous_hash: None,
                    previous_path: None,
                };
                Ok(Applied {
                    events: to_hooks(&[event]),
                    known: Some(self.known(&parsed.sidecar)),
                    sidecar: None,
                    trashed: None,
                })
            }
            Ok(None) => Ok(Applied::default()),
            Err(e) => {
                let (field, message) = match e.downcast_ref::<RegistryError>() {
                    Some(RegistryError::InvalidSidecar { error, .. }) => {
                        (error.errors.first().map(|f| f.field.clone()).unwrap_or_default(), error.to_string())
                    }
                    _ => (String::new(), format!("{e:#}")),
                };
                tracing::error!(sidecar = %sidecar.display(), field = %field, error = %message, "invalid sidecar left as written");
                let data = json!({
                    "path": rel.as_str(),
                    "sidecar": rel.sidecar().as_str(),
                    "field": field,
                    "error": message,
                    "hook_event": "sidecar_invalid",
                    "timestamp": crate::time::epoch_secs(),
                });
                Ok(Applied { events: vec![("obs.sidecar_invalid".into(), data)], ..Default::default() })
            }
        }
    }
}

impl Sink for RegistrySink {
    fn lookup(&self, asset: &Path) -> Result<Option<Known>> {
        let rel = self.rel(asset)?;
        Ok(self.read(&rel)?.map(|p| self.known(&p.sidecar)))
    }

    fn apply(&self, action: &Action) -> Result<Applied> {
        match action {
            Action::Register { .. } | Action::Refresh { .. } => self.write(action),
            Action::Move { from, to } => {
                let old = self.registry.sidecar_abs(&self.rel(from)?);
                let source = if old.exists() { old } else { self.registry.sidecar_abs(&self.rel(to)?) };
                self.carry(to, &source, None)
            }
            Action::Restore { path, hash, bytes, trashed, .. } => self.carry(path, trashed, Some((hash, *bytes))),
            Action::Remove { path, known, away } => {
                // Only the sidecar goes to the trash: the file is gone already, and if a file with
                // that name is back it belongs to someone else (`registry.remove` would move it too).
                let rel = self.rel(path)?;
                // Under the sidecar's edit lock, so an edit in flight elsewhere is not lost in the trash.
                let _lock = crate::fs::lock_in_place(&self.registry.sidecar_abs(&rel))?;
                let Some(parsed) = self.read(&rel)? else {
                    self.forget(&known.uid);
                    return Ok(Applied {
                        events: self.removed_without_sidecar(&rel, known, *away),
                        ..Default::default()
                    });
                };
                let dir = self.trash_dir_for(&rel);
                let trashed = rel.sidecar().under(&dir);
                crate::fs::move_file(&self.registry.sidecar_abs(&rel), &trashed)?;
                self.forget(&parsed.sidecar.uid);
                let event = RegistryEvent::AssetRemoved { asset: parsed.sidecar, trashed_to: dir };
                Ok(Applied { events: to_hooks(&[event]), known: None, sidecar: None, trashed: Some(trashed) })
            }
            Action::SidecarEdited { sidecar, asset } => self.sidecar_edited(sidecar, asset),
        }
    }

    fn apply_batch(&self, actions: &[Action]) -> Vec<Result<Applied>> {
        // A sidecar that already describes the content (a branch checkout) is left as it is; only
        // the other actions are planned and written, in one batch.
        let mut recorded: Vec<Option<Result<Applied>>> =
            actions.iter().map(|a| self.already_recorded(a).transpose()).collect();
        let planned: Vec<Option<Result<registry::Change>>> =
            actions.iter().zip(&recorded).map(|(a, r)| r.is_none().then(|| self.plan_change(a))).collect();
        let changes: Vec<registry::Change> =
            planned.iter().flatten().filter_map(|c| c.as_ref().ok().cloned()).collect();
        let mut written = self.registry.write_batch(&changes).into_iter().zip(changes);
        planned
            .into_iter()
            .zip(actions)
            .zip(recorded.iter_mut())
            .map(|((p, action), r)| {
                if let Some(done) = r.take() {
                    return done;
                }
                p.expect("planned when not already recorded")?;
                let (w, change) = written.next().ok_or_else(|| anyhow!("batch write lost a result"))?;
                let w = match w {
                    Ok(w) => w,
                    // Another writer changed the sidecar after it was planned: plan again from it.
                    Err(e) if matches!(e.downcast_ref(), Some(RegistryError::Changed(_))) => return self.write(action),
                    Err(e) => return Err(e),
                };
                Ok(Applied {
                    events: to_hooks(&w),
                    known: Some(self.known(&change.asset)),
                    sidecar: Some(self.registry.sidecar_abs(&change.rel)),
                    trashed: None,
                })
            })
            .collect()
    }

    fn replay(&self, action: &Action) -> Result<Vec<HookEvent>> {
        let on_disk = |path: &Path| -> Result<Option<(RelPath, Sidecar)>> {
            let rel = self.rel(path)?;
            Ok(self.read(&rel).ok().flatten().map(|p| (rel, p.sidecar)))
        };
        Ok(match action {
            Action::Register { path, hash, .. } => match on_disk(path)? {
                Some((rel, s)) if s.hash == *hash => {
                    let change = registry::Change { rel: rel.clone(), asset: s, previous: None };
                    to_hooks(&change.events(self.registry.sidecar_abs(&rel)))
                }
                _ => Vec::new(),
            },
            Action::Refresh { path, hash, previous_hash, .. } => match on_disk(path)? {
                Some((rel, s)) if s.hash == *hash => {
                    let mut previous = s.clone();
                    previous.hash = previous_hash.clone();
                    let change = registry::Change { rel: rel.clone(), asset: s, previous: Some(previous) };
                    to_hooks(&change.events(self.registry.sidecar_abs(&rel)))
                }
                _ => Vec::new(),
            },
            Action::Move { from, to } | Action::Restore { path: to, previous_path: from, .. } => {
                match (on_disk(to)?, self.rel(from)) {
                    (Some((rel, s)), Ok(from_rel)) if s.path == rel.as_str() => {
                        let mut previous = s.clone();
                        previous.path = from_rel.to_string();
                        let change = registry::Change { rel: rel.clone(), asset: s, previous: Some(previous) };
                        to_hooks(&change.events(self.registry.sidecar_abs(&rel)))
                    }
                    _ => Vec::new(),
                }
            }
            Action::Remove { path, known, away } => {
                let rel = self.rel(path)?;
                if self.registry.sidecar_abs(&rel).exists() {
                    Vec::new()
                } else {
                    self.removed_without_sidecar(&rel, known, *away)
                }
            }
            Action::SidecarEdited { sidecar, asset } => self.sidecar_edited(sidecar, asset)?.events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Env {
        _dir: tempfile::TempDir,
        paths: Paths,
        sink: RegistrySink,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(&dir.path().canonicalize().unwrap());
        std::fs::create_dir_all(&paths.assets_root).unwrap();
        let sink = RegistrySink::open(&paths, &Config::defaults()).unwrap();
        Env { _dir: dir, paths, sink }
    }

    impl Env {
        fn file(&self, rel: &str, bytes: &[u8]) -> (PathBuf, String) {
            let p = self.paths.assets_root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
            (p, crate::digest::sha256_hex(bytes))
        }
        fn sidecar(&self, rel: &str) -> Value {
            let text = std::fs::read_to_string(self.paths.assets_root.join(format!("{rel}.asset.json"))).unwrap();
            serde_json::from_str(&text).unwrap()
        }
        fn register(&self, rel: &str, bytes: &[u8]) -> PathBuf {
            let (p, hash) = self.file(rel, bytes);
            self.sink.apply(&Action::Register { path: p.clone(), hash, bytes: bytes.len() as u64 }).unwrap();
            p
        }
    }

    fn names(events: &[HookEvent]) -> Vec<&str> {
        events.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn register_writes_a_sidecar_and_the_three_hooks() {
        let e = env();
        let (p, hash) = e.file("chars/hero.png", b"hero");
        let applied = e.sink.apply(&Action::Register { path: p.clone(), hash: hash.clone(), bytes: 4 }).unwrap();
        assert_eq!(names(&applied.events), ["on_asset_sidecar_written", "on_asset_saved", "on_asset_registered"]);
        assert_eq!(applied.events[2].1["path"], "chars/hero.png");
        let s = e.sidecar("chars/hero.png");
        assert_eq!(
            (s["hash"].as_str(), s["origin"].as_str(), s["uid"].as_str()),
            (Some(&*hash), Some("watch"), Some(&hash[..16]))
        );
        assert_eq!(e.sink.lookup(&p).unwrap().unwrap().hash, hash);
        assert_eq!(applied.sidecar, Some(p.with_file_name("hero.png.asset.json")));
    }

    #[test]
    fn the_same_content_twice_gets_two_uids() {
        let e = env();
        let a = e.register("a.png", b"same");
        let b = e.register("b.png", b"same");
        assert_ne!(e.sink.lookup(&a).unwrap().unwrap().uid, e.sink.lookup(&b).unwrap().unwrap().uid);
    }

    #[test]
    fn refresh_keeps_uid_and_human_fields() {
        let e = env();
        let p = e.register("a.png", b"v1");
        let mut s = e.sidecar("a.png");
        s["tags"] = json!(["forest"]);
        s["license"] = json!("CC0-1.0");
        std::fs::write(p.with_file_name("a.png.asset.json"), serde_json::to_vec(&s).unwrap()).unwrap();
        let (_, hash) = e.file("a.png", b"v2!");
        let action = Action::Refresh {
            path: p.clone(),
            hash: hash.clone(),
            bytes: 3,
            previous_hash: crate::digest::sha256_hex(b"v1"),
        };
        let applied = e.sink.apply(&action).unwrap();
        assert_eq!(names(&applied.events), ["on_asset_sidecar_written", "on_asset_meta_updated"]);
        assert_eq!(applied.events[1].1["previous_hash"], crate::digest::sha256_hex(b"v1"));
        let after = e.sidecar("a.png");
        assert_eq!(
            (after["uid"].clone(), after["tags"].clone(), after["license"].clone()),
            (s["uid"].clone(), json!(["forest"]), json!("CC0-1.0"))
        );
        assert_eq!(after["hash"], hash);
        assert_eq!(after["version"], 2);
    }

    #[test]
    fn move_carries_the_sidecar_and_names_the_previous_path() {
        let e = env();
        let a = e.register("a.png", b"content");
        let uid = e.sidecar("a.png")["uid"].clone();
        let b = e.paths.assets_root.join("sub/b.png");
        std::fs::create_dir_all(b.parent().unwrap()).unwrap();
        std::fs::rename(&a, &b).unwrap();
        let applied = e.sink.apply(&Action::Move { from: a.clone(), to: b.clone() }).unwrap();
        assert_eq!(names(&applied.events), ["on_asset_sidecar_written", "on_asset_meta_updated"]);
        assert_eq!(applied.events[1].1["previous_path"], "a.png");
        assert!(!a.with_file_name("a.png.asset.json").exists());
        assert_eq!(
            (e.sidecar("sub/b.png")["uid"].clone(), e.sidecar("sub/b.png")["path"].clone()),
            (uid, json!("sub/b.png"))
        );
    }

    #[test]
    fn move_of_a_sidecar_that_travelled_with_its_folder_updates_the_path() {
        let e = env();
        let a = e.register("pack/a.png", b"content");
        std::fs::rename(e.paths.assets_root.join("pack"), e.paths.assets_root.join("pack2")).unwrap();
        let to = e.paths.assets_root.join("pack2/a.png");
        let applied = e.sink.apply(&Action::Move { from: a, to }).unwrap();
        assert_eq!(applied.events[1].1["previous_path"], "pack/a.png");
        assert_eq!(e.sidecar("pack2/a.png")["path"], "pack2/a.png");
    }

    #[test]
    fn remove_trashes_only_the_sidecar_and_restore_brings_it_back() {
        let e = env();
        let a = e.register("a.png", b"keep me");
        let mut s = e.sidecar("a.png");
        s["tags"] = json!(["precious"]);
        std::fs::write(a.with_file_name("a.png.asset.json"), serde_json::to_vec(&s).unwrap()).unwrap();
        let known = e.sink.lookup(&a).unwrap().unwrap();
        // A file with that name is back (it belongs to someone else): it must not be moved.
        std::fs::write(&a, b"someone else's").unwrap();
        let applied = e.sink.apply(&Action::Remove { path: a.clone(), known: known.clone(), away: false }).unwrap();
        assert_eq!(names(&applied.events), ["on_asset_removed"]);
        assert_eq!(std::fs::read(&a).unwrap(), b"someone else's");
        let trashed = applied.trashed.unwrap();
        assert!(trashed.starts_with(e.paths.trash_dir()) && trashed.exists(), "{}", trashed.display());

        let (c, hash) = e.file("restored/c.png", b"keep me");
        let action = Action::Restore { path: c, hash, bytes: 7, trashed: trashed.clone(), previous_path: a };
        let applied = e.sink.apply(&action).unwrap();
        assert_eq!(applied.events[1].1["previous_path"], "a.png");
        let back = e.sidecar("restored/c.png");
        assert_eq!((back["uid"].as_str(), back["tags"].clone()), (Some(known.uid.as_str()), json!(["precious"])));
        assert!(!trashed.exists());
    }

    #[test]
    fn remove_after_the_sidecar_went_with_its_folder_still_publishes() {
        let e = env();
        let a = e.register("pack/a.png", b"x");
        let known = e.sink.lookup(&a).unwrap().unwrap();
        std::fs::remove_dir_all(e.paths.assets_root.join("pack")).unwrap();
        let applied = e.sink.apply(&Action::Remove { path: a, known: known.clone(), away: false }).unwrap();
        assert_eq!(names(&applied.events), ["on_asset_removed"]);
        let data = &applied.events[0].1;
        assert_eq!(
            (data["uid"].as_str(), data["sidecar_lost"].clone(), data["trashed_to"].clone()),
            (Some(known.uid.as_str()), json!(true), Value::Null)
        );
    }

    #[test]
    fn sidecar_edits_are_validated_and_invalid_ones_name_the_field() {
        let e = env();
        let a = e.register("a.png", b"x");
        let sidecar = a.with_file_name("a.png.asset.json");
        let mut s = e.sidecar("a.png");
        s["tags"] = json!(["ok"]);
        std::fs::write(&sidecar, serde_json::to_vec(&s).unwrap()).unwrap();
        let applied = e.sink.apply(&Action::SidecarEdited { sidecar: sidecar.clone(), asset: a.clone() }).unwrap();
        assert_eq!(names(&applied.events), ["on_asset_meta_updated"]);
        assert_eq!(applied.events[0].1["meta"]["tags"], json!(["ok"]));

        s["license"] = json!(42);
        let bytes = serde_json::to_vec(&s).unwrap();
        std::fs::write(&sidecar, &bytes).unwrap();
        let applied = e.sink.apply(&Action::SidecarEdited { sidecar: sidecar.clone(), asset: a.clone() }).unwrap();
        assert_eq!(names(&applied.events), ["obs.sidecar_invalid"]);
        assert_eq!(applied.events[0].1["field"], "license");
        assert_eq!(applied.known, None);
        assert_eq!(std::fs::read(&sidecar).unwrap(), bytes, "never rewritten");
    }

    #[test]
    fn a_batch_registers_many_with_distinct_uids_and_in_order() {
        let e = env();
        let actions: Vec<Action> = (0..5)
            .map(|i| {
                let body = if i < 2 { b"dup".to_vec() } else { format!("f{i}").into_bytes() };
                let (p, hash) = e.file(&format!("b/f{i}.bin"), &body);
                Action::Register { path: p, hash, bytes: body.len() as u64 }
            })
            .collect();
        let results = e.sink.apply_batch(&actions);
        let uids: HashSet<String> = results.iter().map(|r| r.as_ref().unwrap().known.clone().unwrap().uid).collect();
        assert_eq!(uids.len(), 5);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.as_ref().unwrap().events[2].1["path"], format!("b/f{i}.bin"));
        }
    }

    #[test]
    fn replay_rebuilds_events_only_for_effects_on_disk() {
        let e = env();
        let a = e.register("a.png", b"on disk");
        let hash = crate::digest::sha256_hex(b"on disk");
        let replayed = e.sink.replay(&Action::Register { path: a.clone(), hash: hash.clone(), bytes: 7 }).unwrap();
        assert_eq!(names(&replayed), ["on_asset_sidecar_written", "on_asset_saved", "on_asset_registered"]);
        let (b, hash_b) = e.file("b.png", b"never written");
        assert!(e.sink.replay(&Action::Register { path: b, hash: hash_b, bytes: 13 }).unwrap().is_empty());
        let stale = Action::Register { path: a, hash: "0".repeat(64), bytes: 1 };
        assert!(e.sink.replay(&stale).unwrap().is_empty(), "the sidecar describes other content");
    }
}
