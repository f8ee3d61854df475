//! The in-memory index of registered assets: uid → asset, path → uid, hash → uids, plus the list
//! query behind `assets list` and `GET /assets`.
//!
//! Derived from the sidecars on disk ([`Index::build`]) and kept current by feeding it the registry
//! events ([`Index::apply`]). It never reads or writes files after the build. Each entry keeps its
//! sidecar as compact JSON (checked once to decode to the same value, else kept parsed) and decodes
//! it only for the results a caller asks for, so 100,000 assets fit in about 100 MB; hashes are kept
//! as 32 bytes. Entries carry lower-cased copies of the filterable fields so a query is one cheap
//! scan in path order; the text
//! `q` searches is kept apart, lower-cased and contiguous ([`SearchText`]), so a substring query over
//! 100,000 assets is one pass over a few MB instead of a walk through 300,000 small allocations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::OnceLock;

use anyhow::Result;
use memchr::memmem;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use super::events::RegistryEvent;
use super::sidecar::{self, Sidecar, SUFFIX};
use super::{Registry, RelPath};

/// Something the build found that keeps a file out of the index (or is worth telling).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum Problem {
    /// The sidecar does not parse or violates the schema; `message` names the field.
    InvalidSidecar { sidecar: String, message: String },
    /// A sidecar whose asset file is missing (or ignored).
    OrphanSidecar { sidecar: String },
    /// A second sidecar claims a uid the index already holds for `kept`.
    DuplicateUid { uid: String, path: String, kept: String },
    /// An asset without a sidecar.
    Unregistered { path: String },
    /// A file or folder that could not be read, or a name that is not UTF-8.
    Unreadable { path: String, message: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::InvalidSidecar { sidecar, message } => write!(f, "{sidecar}: invalid sidecar: {message}"),
            Problem::OrphanSidecar { sidecar } => write!(f, "{sidecar}: sidecar without an asset"),
            Problem::DuplicateUid { uid, path, kept } => write!(f, "{path}: uid {uid} is already used by {kept}"),
            Problem::Unregistered { path } => write!(f, "{path}: no sidecar"),
            Problem::Unreadable { path, message } => write!(f, "{path}: {message}"),
        }
    }
}

/// An indexed asset: the sidecar kept as its compact JSON (about a third of the parsed form's
/// memory), decoded again when a caller asks for it, plus the lower-cased fields the filters read.
#[derive(Debug, Clone)]
struct Entry {
    stored: Stored,
    type_lc: Box<str>,
    tags_lc: Box<[Box<str>]>,
    license_lc: Option<Box<str>>,
}

impl Entry {
    fn new(asset: Sidecar) -> Entry {
        Entry {
            type_lc: asset.asset_type.to_lowercase().into(),
            tags_lc: asset.tags.iter().map(|t| t.to_lowercase().into_boxed_str()).collect(),
            license_lc: asset.license.as_ref().map(|l| l.trim().to_lowercase().into_boxed_str()),
            stored: Stored::pack(asset),
        }
    }

    fn asset(&self) -> Sidecar {
        self.stored.unpack()
    }
}

/// A content hash as a key: the 32 bytes of a SHA-256 in hex (every valid sidecar's), else the text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HashKey {
    Sha256([u8; 32]),
    Text(Box<str>),
}

impl HashKey {
    fn of(hash: &str) -> HashKey {
        let b = hash.as_bytes();
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        if b.len() == 64 {
            let mut out = [0u8; 32];
            if out.iter_mut().enumerate().all(|(i, o)| match (nibble(b[2 * i]), nibble(b[2 * i + 1])) {
                (Some(h), Some(l)) => {
                    *o = h << 4 | l;
                    true
                }
                _ => false,
            }) {
                return HashKey::Sha256(out);
            }
        }
        HashKey::Text(hash.into())
    }
}

/// A sidecar as the index holds it.
#[derive(Debug, Clone)]
enum Stored {
    /// Its compact JSON, which [`sidecar::parse`] turns back into the same value.
    Packed(Box<[u8]>),
    /// Kept parsed: the rare sidecar whose JSON would not read back as the same value.
    Whole(Box<Sidecar>),
}

impl Stored {
    fn pack(asset: Sidecar) -> Stored {
        let Ok(bytes) = serde_json::to_vec(&asset) else { return Stored::Whole(Box::new(asset)) };
        // Checked once here, so `unpack` can never lose or change a field.
        match decode(&bytes) {
            Some(back) if back == asset => Stored::Packed(bytes.into_boxed_slice()),
            _ => Stored::Whole(Box::new(asset)),
        }
    }

    fn unpack(&self) -> Sidecar {
        match self {
            Stored::Whole(asset) => (**asset).clone(),
            Stored::Packed(bytes) => decode(bytes).expect("packed sidecars were checked to decode"),
        }
    }

    /// The path, license, origin and top-level metadata strings [`searched`] reads, without
    /// decoding the whole sidecar.
    fn searched(&self) -> Vec<String> {
        #[derive(serde::Deserialize)]
        struct Fields {
            path: String,
            license: Option<String>,
            origin: Option<String>,
            #[serde(default)]
            meta: serde_json::Map<String, Value>,
        }
        match self {
            Stored::Whole(asset) => searched(asset).map(str::to_string).collect(),
            Stored::Packed(bytes) => match serde_json::from_slice::<Fields>(bytes) {
                Ok(f) => [Some(f.path), f.license, f.origin]
                    .into_iter()
                    .flatten()
                    .chain(f.meta.into_iter().filter_map(|(_, v)| match v {
                        Value::String(s) => Some(s),
                        _ => None,
                    }))
                    .collect(),
                Err(_) => searched(&self.unpack()).map(str::to_string).collect(),
            },
        }
    }
}

/// A packed sidecar back to its value ([`Stored::pack`] checks every packed one round-trips).
fn decode(bytes: &[u8]) -> Option<Sidecar> {
    decode_known(bytes).or_else(|| decode_any(bytes))
}

/// The common case, straight into the fields without the generic parse's `Value` tree (a page of
/// 200 results decodes 200 sidecars); `None` for a sidecar with top-level keys this tool does not
/// know, which [`decode_any`] reads.
fn decode_known(bytes: &[u8]) -> Option<Sidecar> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Packed {
        schema: u64,
        uid: String,
        #[serde(rename = "type")]
        asset_type: String,
        path: String,
        hash: String,
        bytes: u64,
        tags: Vec<String>,
        license: Option<String>,
        #[serde(default)]
        author: Option<String>,
        #[serde(default)]
        source_url: Option<String>,
        #[serde(default)]
        attribution: Option<String>,
        #[serde(default)]
        license_status: Option<sidecar::LicenseStatus>,
        origin: Option<String>,
        version: u64,
        created_at: Option<String>,
        updated_at: Option<String>,
        meta: serde_json::Map<String, Value>,
        provenance: serde_json::Map<String, Value>,
    }
    let p: Packed = serde_json::from_slice(bytes).ok()?;
    Some(Sidecar {
        schema: p.schema,
        uid: p.uid,
        asset_type: p.asset_type,
        path: p.path,
        hash: p.hash,
        bytes: p.bytes,
        tags: p.tags,
        license: p.license,
        credits: sidecar::Credits {
            author: p.author,
            source_url: p.source_url,
            attribution: p.attribution,
            license_status: p.license_status,
        },
        origin: p.origin,
        version: p.version,
        created_at: p.created_at,
        updated_at: p.updated_at,
        meta: p.meta,
        provenance: p.provenance,
        extra: serde_json::Map::new(),
    })
}

/// Any packed sidecar, through the parse every sidecar read from disk goes through.
fn decode_any(bytes: &[u8]) -> Option<Sidecar> {
    // The path alone first (the other fields are skipped, not built): the parse needs it.
    #[derive(serde::Deserialize)]
    struct PathOf<'a> {
        #[serde(borrow)]
        path: std::borrow::Cow<'a, str>,
    }
    let of: PathOf = serde_json::from_slice(bytes).ok()?;
    let rel = RelPath::parse(&of.path).ok()?;
    let mut s = sidecar::parse(bytes, &rel).ok()?.sidecar;
    s.path = rel.to_string();
    Some(s)
}

/// The fields `q` searches: the path, the license, the origin and the top-level string metadata.
fn searched(asset: &Sidecar) -> impl Iterator<Item = &str> {
    [Some(asset.path.as_str()), asset.license.as_deref(), asset.origin.as_deref()]
        .into_iter()
        .flatten()
        .chain(asset.meta.values().filter_map(Value::as_str))
}

/// Whether a lower-cased `needle` is a substring of one of the asset's searched fields, lower-cased.
/// The reference [`SearchText`] must agree with; used where building it does not pay (a hash query's
/// few candidates) or cannot be exact (a needle holding the separator).
fn matches_q(asset: &Sidecar, needle: &str) -> bool {
    searched(asset).any(|f| f.to_lowercase().contains(needle))
}

/// Every entry's searched fields, lower-cased, in path order, each field followed by `\0`, in one
/// string. A needle without `\0` cannot match across two fields or two entries, so a substring of
/// this text is exactly a substring of one field (as [`matches_q`] finds it). Built on the first `q`
/// query after a change and dropped by every change: a rebuild is one pass over the index, far
/// cheaper than what it saves a query, and changes are rare next to reads.
#[derive(Debug, Clone, Default)]
struct SearchText {
    text: String,
    /// Where each entry's text starts, in path order, then `text.len()`.
    starts: Vec<usize>,
    /// The path of every 64th entry (0, 64, …): where each word of a [`SearchText::matching`] bitset
    /// starts in `by_path`, so a query walks only the blocks that hold a match.
    block_starts: Vec<String>,
}

impl SearchText {
    fn build<'a>(slots: impl Iterator<Item = &'a Slot>) -> SearchText {
        let mut t = SearchText::default();
        for (i, slot) in slots.enumerate() {
            let fields = slot.stored.searched();
            if i % 64 == 0 {
                t.block_starts.push(fields[0].clone());
            }
            t.starts.push(t.text.len());
            for field in &fields {
                if field.is_ascii() {
                    // The common case, without the temporary `to_lowercase` allocates.
                    t.text.extend(field.bytes().map(|b| char::from(b.to_ascii_lowercase())));
                } else {
                    t.text.push_str(&field.to_lowercase());
                }
                t.text.push('\0');
            }
        }
        t.starts.push(t.text.len());
        t.text.shrink_to_fit();
        t.starts.shrink_to_fit();
        t
    }

    /// A bit per entry (in path order): set when one of its fields contains `needle` (lower-cased,
    /// non-empty, without `\0`).
    fn matching(&self, needle: &str) -> Vec<u64> {
        let entries = self.starts.len() - 1;
        let mut bits = vec![0u64; entries.div_ceil(64)];
        // memchr's vectorised search, built once: `str::find` sets up a searcher per call, and a
        // common needle hits thousands of entries.
        let finder = memmem::Finder::new(needle.as_bytes());
        let (mut pos, mut entry) = (0, 0);
        while let Some(found) = finder.find(&self.text.as_bytes()[pos..]) {
            let at = pos + found;
            // The entry holding `at`: the last one starting at or before it (`starts[entry] <= pos`).
            entry += self.starts[entry..].partition_point(|&s| s <= at) - 1;
            bits[entry / 64] |= 1 << (entry % 64);
            pos = self.starts[entry + 1]; // one hit decides the entry; search on from the next
        }
        bits
    }
}

/// Sidecars read in parallel per step of [`Index::build`].
const BUILD_CHUNK: usize = 2048;

/// An index entry with a 64-bit summary of its tags ([`tag_bits`]) kept beside the pointer.
#[derive(Debug, Clone)]
struct Slot {
    tags: u64,
    entry: Box<Entry>,
}

impl Slot {
    fn new(entry: Entry) -> Slot {
        Slot { tags: entry.tags_lc.iter().fold(0, |bits, t| bits | tag_bits(t)), entry: Box::new(entry) }
    }
}

impl std::ops::Deref for Slot {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.entry
    }
}

/// Two of 64 bits chosen by a hash of a lower-cased tag (FNV-1a). An asset whose summary lacks
/// any bit of a wanted tag cannot have that tag; one that has them all is checked for real.
fn tag_bits(tag_lc: &str) -> u64 {
    let h = tag_lc.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (1 << (h & 63)) | (1 << ((h >> 6) & 63))
}

/// A list query (`GET /assets` parameters). All filters are case-insensitive and combine with AND.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub asset_type: Option<String>,
    /// Every tag must be present.
    pub tags: Vec<String>,
    /// Any of these licenses.
    pub licenses: Vec<String>,
    pub hash: Option<String>,
    /// Substring of the path or of a top-level string in the metadata.
    pub q: Option<String>,
    /// `None`: no limit.
    pub limit: Option<usize>,
    pub offset: usize,
}

/// One page of results in path order; `total` counts every match before offset and limit.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Sidecar>,
    pub total: usize,
}

/// Registered assets by uid, path and hash.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// Boxed: B-tree nodes hold 11 values inline and are often half full; a ~560-byte `Entry` inline
    /// would waste more than the box costs. Each slot carries its tag bits inline, so a tag filter
    /// skips non-matching assets without following the box.
    by_path: BTreeMap<String, Slot>,
    by_uid: HashMap<Box<str>, Box<str>>,
    /// Sorted uids per hash. A `Vec`, not a `BTreeSet`: almost every hash has one uid, and a B-tree
    /// leaf for one string is ~290 bytes (about 5 MB over 20,000 assets).
    by_hash: HashMap<HashKey, Vec<Box<str>>>,
    /// Derived from `by_path` when a `q` query needs it; emptied by every change.
    search: OnceLock<SearchText>,
}

impl Index {
    /// Read every sidecar under the root (in parallel) and index the valid ones. Only an unreadable
    /// root is an error; everything else is a [`Problem`], sorted by path.
    pub fn build(registry: &Registry) -> Result<(Index, Vec<Problem>)> {
        let found = registry.discover(None)?;
        let mut problems: Vec<Problem> = found
            .troubles
            .iter()
            .map(|t| Problem::Unreadable { path: t.path.clone(), message: t.message.clone() })
            .collect();
        // Which sidecar has its asset, and which asset has no sidecar, are settled first, so the
        // asset list (~60 bytes an asset) is freed before the index fills: the build's peak is then
        // the index alone plus one chunk of parsed sidecars.
        let (sidecars, has_asset) = {
            let assets: HashSet<&str> = found.assets.iter().map(|f| f.rel.as_str()).collect();
            let has_asset: Vec<bool> = found
                .sidecars
                .iter()
                .map(|f| f.rel.asset_of_sidecar().is_some_and(|r| assets.contains(r.as_str())))
                .collect();
            let sidecars: HashSet<&str> = found.sidecars.iter().map(|s| s.rel.as_str()).collect();
            let mut name = String::new();
            for f in &found.assets {
                name.clear();
                name.push_str(f.rel.as_str());
                name.push_str(SUFFIX);
                if !sidecars.contains(name.as_str()) {
                    problems.push(Problem::Unregistered { path: f.rel.to_string() });
                }
            }
            (found.sidecars, has_asset)
        };
        drop(found.assets);
        let mut index = Index::default();
        index.by_uid.reserve(sidecars.len());
        index.by_hash.reserve(sidecars.len());
        // Read in parallel a chunk at a time and index each chunk before reading the next: the parsed
        // sidecars waiting to be indexed (~500 bytes each) never pile up for the whole tree.
        for (chunk, assets) in sidecars.chunks(BUILD_CHUNK).zip(has_asset.chunks(BUILD_CHUNK)) {
            let read: Vec<Result<Sidecar, Problem>> = chunk
                .par_iter()
                .zip(assets)
                .map(|(f, &has_asset)| match f.rel.asset_of_sidecar().filter(|_| has_asset) {
                    Some(rel) => read_one(registry, &rel),
                    None => Err(Problem::OrphanSidecar { sidecar: f.rel.to_string() }),
                })
                .collect();
            index.add_read(read, &mut problems);
        }
        problems.sort_by(|a, b| problem_path(a).cmp(problem_path(b)));
        Ok((index, problems))
    }

    /// Index what a build read, in order; the first sidecar to claim a uid keeps it.
    fn add_read(&mut self, read: Vec<Result<Sidecar, Problem>>, problems: &mut Vec<Problem>) {
        for r in read {
            match r {
                Ok(asset) => {
                    if let Some(kept) = self.by_uid.get(asset.uid.as_str()) {
                        problems.push(Problem::DuplicateUid {
                            uid: asset.uid.clone(),
                            path: asset.path.clone(),
                            kept: kept.to_string(),
                        });
                        continue;
                    }
                    self.upsert(asset);
                }
                Err(p) => problems.push(p),
            }
        }
    }

    /// Build what a `q` query searches now rather than in the first such request.
    pub fn prepare_search(&self) {
        self.search_text();
    }

    fn search_text(&self) -> &SearchText {
        self.search.get_or_init(|| SearchText::build(self.by_path.values()))
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    pub fn get(&self, uid: &str) -> Option<Sidecar> {
        self.by_uid.get(uid).and_then(|p| self.by_path.get(&**p)).map(|e| e.asset())
    }

    pub fn get_by_path(&self, path: &str) -> Option<Sidecar> {
        self.by_path.get(path).map(|e| e.asset())
    }

    pub fn contains_uid(&self, uid: &str) -> bool {
        self.by_uid.contains_key(uid)
    }

    /// The uids of assets with this content hash, sorted.
    pub fn uids_with_hash(&self, hash: &str) -> Vec<&str> {
        self.by_hash
            .get(&HashKey::of(&hash.to_ascii_lowercase()))
            .map(|s| s.iter().map(|u| &**u).collect())
            .unwrap_or_default()
    }

    /// All assets in path order.
    pub fn iter(&self) -> impl Iterator<Item = Sidecar> + '_ {
        self.by_path.values().map(|e| e.asset())
    }

    /// Insert or replace by uid (a changed path or hash moves the entry); returns the previous value.
    pub fn upsert(&mut self, asset: Sidecar) -> Option<Sidecar> {
        self.search.take();
        let previous = self.remove(&asset.uid);
        // Another uid at the same path is replaced too: the path holds one asset.
        if let Some(other) = self.by_path.get(asset.path.as_str()).map(|e| e.asset().uid) {
            self.remove(&other);
        }
        self.by_uid.insert(asset.uid.as_str().into(), asset.path.as_str().into());
        // Capacity 1, not the 4 a first push gives: almost every hash has one uid.
        let uids = self.by_hash.entry(HashKey::of(&asset.hash)).or_insert_with(|| Vec::with_capacity(1));
        if let Err(at) = uids.binary_search_by(|u| (**u).cmp(asset.uid.as_str())) {
            uids.insert(at, asset.uid.as_str().into());
        }
        self.by_path.insert(asset.path.clone(), Slot::new(Entry::new(asset)));
        previous
    }

    pub fn remove(&mut self, uid: &str) -> Option<Sidecar> {
        self.search.take();
        let path = self.by_uid.remove(uid)?;
        let asset = self.by_path.remove(&*path)?.entry.asset();
        let key = HashKey::of(&asset.hash);
        if let Some(set) = self.by_hash.get_mut(&key) {
            set.retain(|u| &**u != uid);
            if set.is_empty() {
                self.by_hash.remove(&key);
            }
        }
        Some(asset)
    }

    /// Keep the index current with what a registry operation did.
    pub fn apply(&mut self, event: &RegistryEvent) {
        match event {
            RegistryEvent::AssetRemoved { asset, .. } => {
                self.remove(&asset.uid);
            }
            other => {
                self.upsert(other.asset().clone());
            }
        }
    }

    /// Filter, then page, in path order.
    pub fn query(&self, q: &Query) -> Page {
        let type_lc = q.asset_type.as_ref().map(|t| t.trim().to_lowercase()).filter(|t| !t.is_empty());
        let tags_lc: Vec<String> = q.tags.iter().map(|t| t.trim().to_lowercase()).filter(|t| !t.is_empty()).collect();
        let licenses_lc: Vec<String> =
            q.licenses.iter().map(|l| l.trim().to_lowercase()).filter(|l| !l.is_empty()).collect();
        let hash_lc = q.hash.as_ref().map(|h| h.trim().to_lowercase()).filter(|h| !h.is_empty());
        let needle = q.q.as_ref().map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty());
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut total = 0;
        // Over the whole index, `q` is decided up front by one scan of the search text, and only the
        // 64-entry blocks of `by_path` that hold a match are walked.
        let search = match &needle {
            Some(n) if hash_lc.is_none() && !n.contains('\0') => {
                let text = self.search_text();
                Some((text, text.matching(n)))
            }
            _ => None,
        };
        let candidates: Box<dyn Iterator<Item = &Slot>> = match (&hash_lc, &search) {
            (Some(h), _) => Box::new(
                self.uids_with_hash(h)
                    .into_iter()
                    .filter_map(|u| self.by_uid.get(u))
                    .filter_map(|p| self.by_path.get(&**p)),
            ),
            (None, Some((text, bits))) => {
                Box::new(bits.iter().enumerate().filter(|(_, w)| **w != 0).flat_map(|(b, &word)| {
                    let from = (Bound::Included(text.block_starts[b].as_str()), Bound::Unbounded);
                    self.by_path
                        .range::<str, _>(from)
                        .take(64)
                        .enumerate()
                        .filter(move |(j, _)| word & (1 << j) != 0)
                        .map(|(_, (_, slot))| slot)
                }))
            }
            (None, None) => Box::new(self.by_path.values()),
        };
        let wanted_tags = tags_lc.iter().fold(0, |bits, t| bits | tag_bits(t));
        let mut matches: Vec<Sidecar> = Vec::new();
        for slot in candidates {
            if slot.tags & wanted_tags != wanted_tags {
                continue; // lacks a wanted tag: decided without touching the entry
            }
            let e: &Entry = slot;
            if type_lc.as_deref().is_some_and(|t| &*e.type_lc != t) {
                continue;
            }
            if !tags_lc.iter().all(|t| e.tags_lc.iter().any(|have| **have == **t)) {
                continue;
            }
            if !licenses_lc.is_empty() && !e.license_lc.as_deref().is_some_and(|l| licenses_lc.iter().any(|w| w == l)) {
                continue;
            }
            if let Some(n) = needle.as_deref().filter(|_| search.is_none()) {
                // A hash query's few candidates: decoding them beats building the search text.
                if !matches_q(&e.asset(), n) {
                    continue;
                }
            }
            if hash_lc.is_some() {
                matches.push(e.asset());
                continue;
            }
            if total >= q.offset && items.len() < limit {
                items.push(e.asset());
            }
            total += 1;
        }
        if hash_lc.is_some() {
            matches.sort_by(|a, b| a.path.cmp(&b.path));
            total = matches.len();
            items = matches.into_iter().skip(q.offset).take(limit).collect();
        }
        Page { items, total }
    }
}

fn read_one(registry: &Registry, rel: &RelPath) -> Result<Sidecar, Problem> {
    let sidecar_rel = rel.sidecar().to_string();
    let path = registry.sidecar_abs(rel);
    let bytes = std::fs::read(&path)
        .map_err(|e| Problem::Unreadable { path: sidecar_rel.clone(), message: super::discover::vanished_or(&e) })?;
    match sidecar::parse(&bytes, rel) {
        Ok(p) if p.missing.iter().any(|m| matches!(*m, "uid" | "hash")) => Err(Problem::InvalidSidecar {
            sidecar: sidecar_rel,
            message: p.fixable.join("; ") + " (run `comfyvn-obs audit --fix`)",
        }),
        Ok(p) => {
            let mut s = p.sidecar;
            // The index describes where the file is, whatever a moved sidecar still records.
            s.path = rel.to_string();
            Ok(s)
        }
        Err(e) => Err(Problem::InvalidSidecar { sidecar: sidecar_rel, message: e.to_string() }),
    }
}

fn problem_path(p: &Problem) -> &str {
    match p {
        Problem::InvalidSidecar { sidecar, .. } | Problem::OrphanSidecar { sidecar } => {
            sidecar.strip_suffix(SUFFIX).unwrap_or(sidecar)
        }
        Problem::DuplicateUid { path, .. } | Problem::Unregistered { path } | Problem::Unreadable { path, .. } => path,
    }
}

/// The API record of an asset (`GET /assets`, `assets list --json`): `uid`, `type`, `hash`, `bytes`,
/// `path`, `sidecar`, `meta` {`tags`, `license`, …}, `links` {`file`, `sidecar`}, `created_at`.
pub fn record(asset: &Sidecar) -> Value {
    let sidecar = format!("{}{SUFFIX}", asset.path);
    json!({
        "uid": asset.uid,
        "type": asset.asset_type,
        "hash": asset.hash,
        "bytes": asset.bytes,
        "path": asset.path,
        "sidecar": sidecar,
        "meta": asset.record_meta(),
        "links": {"file": asset.path, "sidecar": sidecar},
        "created_at": asset.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(path: &str, uid: &str, hash_byte: &str, tags: &[&str], license: Option<&str>) -> Sidecar {
        let rel = RelPath::parse(path).unwrap();
        let mut s = sidecar::parse(b"{}", &rel).unwrap().sidecar;
        s.uid = uid.into();
        s.hash = hash_byte.repeat(64);
        s.tags = tags.iter().map(|t| t.to_string()).collect();
        s.license = license.map(str::to_string);
        s
    }

    #[test]
    fn assets_come_back_exactly_as_indexed_and_are_kept_packed() {
        let mut rich = asset("scenes/intro.json", "u9", "c", &["Intro", "ch1"], Some("CC-BY-4.0 OR MIT"));
        rich.meta =
            serde_json::from_value(json!({"title": "Intro \"quoted\" ünïcode", "n": 1.5, "list": [1, {"a": null}]}))
                .unwrap();
        rich.provenance = serde_json::from_value(json!({"source": "comfyui", "inputs": {"seed": 7}})).unwrap();
        rich.extra = serde_json::from_value(json!({"x_studio": {"reviewed": true}})).unwrap();
        rich.credits.author = Some("A. Artist".into());
        rich.credits.attribution = Some("Art by A. Artist".into());
        rich.origin = Some("watch".into());
        rich.created_at = Some("2026-01-01T00:00:00.000000Z".into());
        let plain = asset("bg/a.png", "u8", "d", &[], None);
        for (a, known) in [(rich, false), (plain, true)] {
            let entry = Entry::new(a.clone());
            let Stored::Packed(bytes) = &entry.stored else { panic!("{} not packed", a.path) };
            // The fast decoder takes sidecars without unknown keys, and gives what the parse gives.
            assert_eq!(decode_known(bytes).is_some(), known, "{}", a.path);
            assert_eq!(decode_any(bytes).as_ref(), Some(&a));
            assert_eq!(entry.asset(), a);
            let mut i = Index::default();
            i.upsert(a.clone());
            assert_eq!(i.get(&a.uid).as_ref(), Some(&a));
            assert_eq!(i.get_by_path(&a.path).as_ref(), Some(&a));
            assert_eq!(i.iter().collect::<Vec<_>>(), std::slice::from_ref(&a));
            assert_eq!(i.remove(&a.uid), Some(a));
        }
    }

    #[test]
    fn the_search_text_of_a_packed_entry_is_the_fields_q_searches() {
        let mut a = asset("scenes/Intro.json", "u9", "c", &[], Some("MIT"));
        a.meta = serde_json::from_value(json!({"title": "The Gate", "n": 3, "nested": {"t": "hidden"}})).unwrap();
        a.origin = Some("upload".into());
        let packed = Entry::new(a.clone()).stored;
        let whole = Stored::Whole(Box::new(a.clone()));
        assert_eq!(packed.searched(), ["scenes/Intro.json", "MIT", "upload", "The Gate"]);
        assert_eq!(packed.searched(), whole.searched());
        let mut i = Index::default();
        i.upsert(a);
        let q = |s: &str| i.query(&Query { q: Some(s.into()), ..Query::default() }).total;
        assert_eq!((q("gate"), q("intro"), q("upload"), q("hidden")), (1, 1, 1, 0));
    }

    fn sample() -> Index {
        let mut i = Index::default();
        i.upsert(asset("characters/hero.png", "u1", "a", &["Hero", "Main"], Some("CC-BY-4.0")));
        i.upsert(asset("characters/villain.png", "u2", "b", &["villain"], Some("MIT")));
        i.upsert(asset("audio/theme.ogg", "u3", "a", &["music", "main"], None));
        i
    }

    #[test]
    fn lookups_and_incremental_updates() {
        let mut i = sample();
        assert_eq!(i.get("u2").unwrap().path, "characters/villain.png");
        assert_eq!(i.uids_with_hash(&"a".repeat(64)), ["u1", "u3"]);
        let mut moved = i.get("u1").unwrap().clone();
        moved.path = "characters/hero2.png".into();
        moved.hash = "c".repeat(64);
        i.upsert(moved);
        assert!(i.get_by_path("characters/hero.png").is_none());
        assert_eq!(i.uids_with_hash(&"a".repeat(64)), ["u3"]);
        assert_eq!(i.len(), 3);
        i.remove("u3");
        assert!(i.uids_with_hash(&"a".repeat(64)).is_empty());
    }

    #[test]
    fn tag_queries_match_a_plain_scan() {
        // 300 assets with pseudo-random subsets of 40 tags (many share summary bits), after
        // updates that change tags: the tag summaries must never hide a match or admit a wrong one.
        let tags: Vec<String> = (0..40).map(|i| format!("Tag{i}")).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut i = Index::default();
        for n in 0..300 {
            let mine: Vec<&str> = tags.iter().filter(|_| rand() % 8 == 0).map(String::as_str).collect();
            i.upsert(asset(&format!("bg/a{n:03}.png"), &format!("u{n}"), "a", &mine, None));
        }
        for n in (0..300).step_by(7) {
            let mut changed = i.get(&format!("u{n}")).unwrap().clone();
            changed.tags = vec!["Tag3".into(), "late".into()];
            i.upsert(changed);
        }
        for wanted in [vec!["tag3"], vec!["TAG3", "tag17"], vec!["late"], vec!["tag39", "tag0", "tag21"], vec!["nope"]]
        {
            let q = Query { tags: wanted.iter().map(|t| t.to_string()).collect(), ..Default::default() };
            let got: Vec<String> = i.query(&q).items.into_iter().map(|a| a.path).collect();
            let expected: Vec<String> = i
                .iter()
                .filter(|a| wanted.iter().all(|w| a.tags.iter().any(|t| t.eq_ignore_ascii_case(w))))
                .map(|a| a.path)
                .collect();
            assert_eq!(got, expected, "tags {wanted:?}");
        }
    }

    #[test]
    fn q_queries_match_a_plain_scan() {
        // The contiguous search text must find exactly what a field-by-field scan finds: no match
        // across two fields or two assets, non-ASCII lower-casing, a needle holding the separator,
        // and no stale text after updates and removals.
        let mut i = Index::default();
        for n in 0..200 {
            let mut a = asset(&format!("bg/Ab{n:03}.png"), &format!("u{n}"), "a", &[], Some("MIT"));
            a.origin = Some(if n % 3 == 0 { "ΣΟΦΙΑ".into() } else { "Watch".into() });
            a.meta.insert("title".into(), Value::from(format!("Scene {n}\0end")));
            a.meta.insert("n".into(), Value::from(n));
            i.upsert(a);
        }
        let check = |i: &Index, needles: &[&str]| {
            for needle in needles {
                let q = Query { q: Some(needle.to_string()), ..Default::default() };
                let got: Vec<String> = i.query(&q).items.into_iter().map(|a| a.path).collect();
                let n = needle.trim().to_lowercase();
                let expected: Vec<String> = i.iter().filter(|a| matches_q(a, &n)).map(|a| a.path).collect();
                assert_eq!(got, expected, "q {needle:?}");
            }
        };
        let needles =
            ["ab01", "PNG", "pngmit", "png\0mit", "mit", "σοφια", "ς", "scene 1", "1\0e", "end", "Ab199", "zz"];
        check(&i, &needles);
        assert_eq!(i.query(&Query { q: Some("ab19".into()), ..Default::default() }).total, 10);
        for n in (0..200).step_by(9) {
            let mut changed = i.get(&format!("u{n}")).unwrap().clone();
            changed.path = format!("late/zz{n}.png");
            i.upsert(changed);
        }
        for n in (1..200).step_by(13) {
            i.remove(&format!("u{n}"));
        }
        check(&i, &needles);
        assert_eq!(i.query(&Query { q: Some("zz".into()), ..Default::default() }).total, 21);
        // 23 moved, u27 and u144 then removed
    }

    #[test]
    fn query_filters_pages_and_counts() {
        let i = sample();
        let paths = |p: Page| p.items.iter().map(|a| a.path.clone()).collect::<Vec<_>>();
        assert_eq!(i.query(&Query::default()).total, 3);
        let main = i.query(&Query { tags: vec!["MAIN".into()], ..Default::default() });
        assert_eq!(paths(main), ["audio/theme.ogg", "characters/hero.png"]);
        let typed = i.query(&Query { asset_type: Some("Characters".into()), limit: Some(1), ..Default::default() });
        assert_eq!(typed.total, 2);
        assert_eq!(paths(typed), ["characters/hero.png"]);
        let second = i.query(&Query { asset_type: Some("characters".into()), offset: 1, ..Default::default() });
        assert_eq!(paths(second), ["characters/villain.png"]);
        let lic = i.query(&Query { licenses: vec!["mit".into(), "cc-by-4.0".into()], ..Default::default() });
        assert_eq!(lic.total, 2);
        let q = i.query(&Query { q: Some("VILL".into()), ..Default::default() });
        assert_eq!(paths(q), ["characters/villain.png"]);
        let h = i.query(&Query { hash: Some("A".repeat(64)), tags: vec!["hero".into()], ..Default::default() });
        assert_eq!(paths(h), ["characters/hero.png"]);
    }

    #[test]
    fn record_shape() {
        let i = sample();
        let r = record(&i.get("u1").unwrap());
        let keys: Vec<_> = r.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["uid", "type", "hash", "bytes", "path", "sidecar", "meta", "links", "created_at"]);
        assert_eq!(r["sidecar"], "characters/hero.png.asset.json");
        assert_eq!(r["links"]["file"], "characters/hero.png");
        assert_eq!(r["meta"]["license"], "CC-BY-4.0");
    }
}
