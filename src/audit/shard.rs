//! `audit --shard K/N`: which part of the tree a shard audits.
//!
//! Assets are assigned by a hash of their folder, so a sidecar always lands in the same shard as its
//! asset, and a folder's shard depends only on its own path and N: adding files elsewhere never
//! moves it. Pure; the scan asks [`Shard::owns`] for each folder it lists.

use std::fmt;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// `K/N` with 1 ≤ K ≤ N.
    pub fn parse(s: &str) -> Result<Shard> {
        let Some((k, n)) = s.split_once('/') else {
            bail!("--shard expects K/N (for example 2/4), found {s:?}");
        };
        let (Ok(index), Ok(count)) = (k.trim().parse::<u32>(), n.trim().parse::<u32>()) else {
            bail!("--shard expects two whole numbers K/N, found {s:?}");
        };
        if count == 0 || index == 0 || index > count {
            bail!("--shard {s}: K must be between 1 and N (shards are numbered from 1)");
        }
        Ok(Shard { index, count })
    }

    /// The shard (1-based) a folder belongs to, out of `count`.
    pub fn of_folder(folder: &str, count: u32) -> u32 {
        // FNV-1a: stable across platforms and releases (a partition must not move on upgrade).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in folder.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % u64::from(count.max(1))) as u32 + 1
    }

    /// True when this shard audits the folder `folder` (relative to the assets root, `""` for the root).
    pub fn owns_folder(&self, folder: &str) -> bool {
        Shard::of_folder(folder, self.count) == self.index
    }

    /// True when this shard reports the entry at `rel` (an asset, a sidecar, a folder that could not
    /// be listed, a skipped link): the one that owns the folder it is in.
    pub fn owns(&self, rel: &str) -> bool {
        self.owns_folder(rel.rsplit_once('/').map_or("", |(dir, _)| dir))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k_of_n() {
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        for bad in ["0/3", "4/3", "1/0", "1", "a/b", "1/2/3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_folder_has_exactly_one_shard_and_it_is_stable() {
        let folders = ["", "a", "a/b", "characters/hero", "bg", "ü/x"];
        for n in [1, 3, 7] {
            for f in folders {
                let owners: Vec<u32> = (1..=n).filter(|&k| Shard { index: k, count: n }.owns_folder(f)).collect();
                assert_eq!(owners.len(), 1, "{f} of {n}");
            }
        }
        // Pinned: a partition must not change between releases.
        assert_eq!(["", "a", "characters", "bg/sky"].map(|f| Shard::of_folder(f, 7)), [3, 6, 6, 3]);
        let s = Shard { index: 1, count: 3 };
        assert_eq!(s.owns("bg/sky.png"), s.owns_folder("bg"));
        assert_eq!(s.owns("bg/sky.png.asset.json"), s.owns("bg/sky.png"));
    }
}
