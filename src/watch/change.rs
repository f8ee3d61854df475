//! Event translation: notify's events (after the debouncer) become [`Change`]s, the watcher's own
//! closed, data-only vocabulary. Pure: no disk access, no clock; only the [`Rules`] decide what is
//! dropped and how a rename splits.
//!
//! Why a second vocabulary: notify's kinds differ per backend (inotify reports renames as pairs and
//! close-write; the poller only create/modify/remove at one-second mtime resolution) and per editor
//! (save-by-rename, truncate-and-write). A `Change` says only what the planner needs: look again at
//! this path (`Written`, `Arrived`), this path is final (`Closed`), it moved (`Moved`), it is gone
//! (`Removed`), or events were lost (`Rescan`). The planner then looks at the disk, so a wrong guess
//! here costs a `stat`, never a wrong event.

use std::path::PathBuf;

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode};
use notify::Event;
use serde::Serialize;

use super::rules::{Class, Rules};

/// One thing that happened to a watched path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Content may be changing (created, written, metadata changed): settle, then look.
    Written { path: PathBuf },
    /// The writer closed the file (inotify close-write): it can be hashed now.
    Closed { path: PathBuf },
    /// Appeared by a rename from outside the watched tree or from an ignored name (a temp file renamed
    /// over an asset, a finished `*.part` download, a folder moved in): settle, then look.
    Arrived { path: PathBuf },
    /// A watched file or folder was renamed to another watched name.
    Moved { from: PathBuf, to: PathBuf },
    /// A watched file or folder is gone, or was renamed to a name that is not watched.
    Removed { path: PathBuf },
    /// A watched file or folder was moved out of the watched tree (a rename whose other half is
    /// elsewhere): gone from here, its sidecars with it.
    Left { path: PathBuf },
    /// A folder was created; files written into it before its watch existed produced no events.
    FolderCreated { path: PathBuf },
    /// The event source lost events (queue overflow) or says it must be rescanned.
    Rescan { reason: String },
}

impl Change {
    /// The paths this change is about.
    pub fn paths(&self) -> Vec<&PathBuf> {
        match self {
            Change::Written { path }
            | Change::Closed { path }
            | Change::Arrived { path }
            | Change::Removed { path }
            | Change::Left { path }
            | Change::FolderCreated { path } => vec![path],
            Change::Moved { from, to } => vec![from, to],
            Change::Rescan { .. } => Vec::new(),
        }
    }
}

/// Translate one (debounced) notify event into changes, dropping what the rules ignore.
pub fn translate(event: &Event, rules: &Rules) -> Vec<Change> {
    if event.need_rescan() {
        return vec![Change::Rescan { reason: "the event queue overflowed".into() }];
    }
    let watched = |p: &PathBuf, is_dir: bool| rules.classify(p, is_dir) != Class::Ignored;
    let each = |make: fn(PathBuf) -> Change, is_dir: bool| -> Vec<Change> {
        event.paths.iter().filter(|p| watched(p, is_dir)).map(|p| make(p.clone())).collect()
    };
    match &event.kind {
        EventKind::Modify(ModifyKind::Name(mode)) => rename(*mode, &event.paths, rules),
        EventKind::Create(CreateKind::Folder) => each(|path| Change::FolderCreated { path }, true),
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any => each(|path| Change::Written { path }, false),
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => each(|path| Change::Closed { path }, false),
        EventKind::Access(_) => Vec::new(),
        EventKind::Remove(RemoveKind::Folder) => each(|path| Change::Removed { path }, true),
        EventKind::Remove(_) => each(|path| Change::Removed { path }, false),
        EventKind::Other => Vec::new(),
    }
}

fn rename(mode: RenameMode, paths: &[PathBuf], rules: &Rules) -> Vec<Change> {
    let class = |p: &PathBuf| rules.classify(p, false);
    match (mode, paths) {
        (RenameMode::Both, [from, to]) => {
            let (cf, ct) = (class(from), class(to));
            let mut out = Vec::new();
            if cf == Class::Asset && ct == Class::Asset {
                out.push(Change::Moved { from: from.clone(), to: to.clone() });
                return out;
            }
            // Anything else splits: a sidecar renamed, an asset renamed to a backup name (`hero.png~`,
            // the first half of an editor's save), a temp file renamed over an asset (the second half).
            if cf != Class::Ignored {
                out.push(Change::Removed { path: from.clone() });
            }
            if ct != Class::Ignored {
                out.push(Change::Arrived { path: to.clone() });
            }
            out
        }
        (RenameMode::From, [path]) => {
            if class(path) != Class::Ignored {
                vec![Change::Left { path: path.clone() }]
            } else {
                Vec::new()
            }
        }
        (RenameMode::To, [path]) => {
            if class(path) != Class::Ignored {
                vec![Change::Arrived { path: path.clone() }]
            } else {
                Vec::new()
            }
        }
        // `Any`/`Other`, or an unexpected number of paths: the planner looks at the disk.
        (_, paths) => {
            paths.iter().filter(|p| class(p) != Class::Ignored).map(|p| Change::Written { path: p.clone() }).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, Flag, MetadataKind};
    use std::path::Path;

    fn rules() -> Rules {
        Rules::new(
            Path::new("/w"),
            &[PathBuf::from("/w")],
            &[(PathBuf::from("/w/logs"), "log")],
            &["*.part".to_string(), "*~".to_string(), "_meta/".to_string()],
        )
        .unwrap()
    }

    fn ev(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    fn json(changes: &[Change]) -> String {
        serde_json::to_string(changes).unwrap()
    }

    #[test]
    fn json_form_is_pinned() {
        let all = vec![
            Change::Written { path: "/w/a".into() },
            Change::Closed { path: "/w/a".into() },
            Change::Arrived { path: "/w/a".into() },
            Change::Moved { from: "/w/a".into(), to: "/w/b".into() },
            Change::Removed { path: "/w/a".into() },
            Change::FolderCreated { path: "/w/d".into() },
            Change::Rescan { reason: "x".into() },
        ];
        assert_eq!(
            json(&all),
            r#"[{"change":"written","path":"/w/a"},{"change":"closed","path":"/w/a"},{"change":"arrived","path":"/w/a"},{"change":"moved","from":"/w/a","to":"/w/b"},{"change":"removed","path":"/w/a"},{"change":"folder_created","path":"/w/d"},{"change":"rescan","reason":"x"}]"#
        );
    }

    /// (event, expected changes as JSON): the small data cases of the translation table.
    #[test]
    fn translation_table() {
        let r = rules();
        let cases: Vec<(Event, &str)> = vec![
            (ev(EventKind::Create(CreateKind::File), &["/w/a.png"]), r#"[{"change":"written","path":"/w/a.png"}]"#),
            (ev(EventKind::Create(CreateKind::Any), &["/w/a.png"]), r#"[{"change":"written","path":"/w/a.png"}]"#),
            (
                ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &["/w/a.png"]),
                r#"[{"change":"written","path":"/w/a.png"}]"#,
            ),
            (
                ev(EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime)), &["/w/a.png"]),
                r#"[{"change":"written","path":"/w/a.png"}]"#,
            ),
            (
                ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), &["/w/a.png"]),
                r#"[{"change":"closed","path":"/w/a.png"}]"#,
            ),
            // Reads (our own hashing opens files) never become changes.
            (ev(EventKind::Access(AccessKind::Close(AccessMode::Read)), &["/w/a.png"]), "[]"),
            (ev(EventKind::Access(AccessKind::Open(AccessMode::Any)), &["/w/a.png"]), "[]"),
            (ev(EventKind::Remove(RemoveKind::File), &["/w/a.png"]), r#"[{"change":"removed","path":"/w/a.png"}]"#),
            (ev(EventKind::Remove(RemoveKind::Folder), &["/w/d"]), r#"[{"change":"removed","path":"/w/d"}]"#),
            (ev(EventKind::Create(CreateKind::Folder), &["/w/d"]), r#"[{"change":"folder_created","path":"/w/d"}]"#),
            (ev(EventKind::Create(CreateKind::Folder), &["/w/x/_meta"]), "[]"),
            // Ignored names produce nothing.
            (ev(EventKind::Create(CreateKind::File), &["/w/dl.zip.part"]), "[]"),
            (ev(EventKind::Create(CreateKind::File), &["/w/.hidden"]), "[]"),
            (ev(EventKind::Create(CreateKind::File), &["/w/logs/hooks/history.jsonl"]), "[]"),
            (ev(EventKind::Create(CreateKind::File), &["/elsewhere/a.png"]), "[]"),
            // Sidecars are watched (a person may edit them).
            (
                ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), &["/w/a.png.asset.json"]),
                r#"[{"change":"closed","path":"/w/a.png.asset.json"}]"#,
            ),
            // The tool's own sidecar write: a hidden temp file renamed over the sidecar.
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/w/.a.png.asset.json.tmp42-0", "/w/a.png.asset.json"],
                ),
                r#"[{"change":"arrived","path":"/w/a.png.asset.json"}]"#,
            ),
            // Renames.
            (
                ev(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &["/w/a.png", "/w/b.png"]),
                r#"[{"change":"moved","from":"/w/a.png","to":"/w/b.png"}]"#,
            ),
            // Editor save, first half: the original renamed to a backup name.
            (
                ev(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &["/w/a.png", "/w/a.png~"]),
                r#"[{"change":"removed","path":"/w/a.png"}]"#,
            ),
            // Editor save, second half / finished download: a temp name renamed over the asset.
            (
                ev(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &["/w/.a.png.swx", "/w/a.png"]),
                r#"[{"change":"arrived","path":"/w/a.png"}]"#,
            ),
            (
                ev(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &["/w/pack.zip.part", "/w/pack.zip"]),
                r#"[{"change":"arrived","path":"/w/pack.zip"}]"#,
            ),
            // A sidecar renamed along with... nothing: split, the planner decides.
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/w/a.png.asset.json", "/w/b.png.asset.json"],
                ),
                r#"[{"change":"removed","path":"/w/a.png.asset.json"},{"change":"arrived","path":"/w/b.png.asset.json"}]"#,
            ),
            // Moved out of / into the watched tree (unpaired halves).
            (
                ev(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &["/w/a.png"]),
                r#"[{"change":"left","path":"/w/a.png"}]"#,
            ),
            (
                ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &["/w/a.png"]),
                r#"[{"change":"arrived","path":"/w/a.png"}]"#,
            ),
            (ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &["/w/a.png~"]), "[]"),
            // Backends that cannot tell: look at the disk.
            (
                ev(EventKind::Modify(ModifyKind::Name(RenameMode::Any)), &["/w/a.png"]),
                r#"[{"change":"written","path":"/w/a.png"}]"#,
            ),
            (ev(EventKind::Other, &["/w/a.png"]), "[]"),
        ];
        for (event, expected) in cases {
            assert_eq!(json(&translate(&event, &r)), expected, "for {event:?}");
        }
    }

    #[test]
    fn overflow_asks_for_a_rescan() {
        let e = Event::new(EventKind::Other).set_flag(Flag::Rescan);
        assert_eq!(translate(&e, &rules()), vec![Change::Rescan { reason: "the event queue overflowed".into() }]);
    }
}
