//! `comfyvn-obs assets …`

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub enum AssetsCommand {
    /// List registered assets in path order (filters combine; tags must all be present).
    List(ListArgs),
    /// Show one asset's record and sidecar as JSON.
    Show(ShowArgs),
    /// Register a file: write its sidecar and emit the registration hooks.
    Register(RegisterArgs),
    /// Add tags to an asset (case-insensitive de-duplication, first spelling kept).
    Tag(TagArgs),
    /// Remove tags from an asset (case-insensitive).
    Untag(TagArgs),
    /// Set (or with "" clear) an asset's license, an SPDX expression.
    SetLicense(SetLicenseArgs),
    /// Take an asset out of the registry: its file and sidecar move to logs/trash/.
    Remove(ShowArgs),
    /// Print the credits (a NOTICE) from the sidecars: title, author, source, license, attribution.
    Credits(CreditsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CreditsFormat {
    Md,
    Txt,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CreditsGroup {
    License,
    Type,
    Author,
}

#[derive(Debug, Args)]
pub struct CreditsArgs {
    /// Output format: Markdown, plain text or JSON.
    #[arg(long, value_enum, default_value_t = CreditsFormat::Md)]
    pub format: CreditsFormat,
    /// Group the assets by license, type or author.
    #[arg(long, value_enum, default_value_t = CreditsGroup::License)]
    pub group_by: CreditsGroup,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only assets of this type (case-insensitive).
    #[arg(long = "type", value_name = "T")]
    pub asset_type: Option<String>,
    /// Only assets with this tag (repeat for several; all must match).
    #[arg(long = "tag", value_name = "X")]
    pub tags: Vec<String>,
    /// Only assets with this license (repeat for any of several).
    #[arg(long = "license", value_name = "L")]
    pub licenses: Vec<String>,
    /// Only assets whose path or top-level metadata text contains this (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Print `{"items": [records], "total": N}` instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The asset's uid, or its path (relative to the assets root, or a path to the file).
    #[arg(value_name = "UID|PATH")]
    pub asset: String,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The file to register. Outside the assets root it needs --copy.
    pub path: PathBuf,
    /// The asset type (default: the first folder under the assets root, else from the extension).
    #[arg(long = "type", value_name = "T")]
    pub asset_type: Option<String>,
    /// A tag (repeat for several).
    #[arg(long = "tag", value_name = "X")]
    pub tags: Vec<String>,
    /// The license, an SPDX expression (e.g. CC-BY-4.0, "MIT OR Apache-2.0").
    #[arg(long, value_name = "L")]
    pub license: Option<String>,
    /// Where the file came from (a URL or a note), recorded as the sidecar's `provenance.source`.
    #[arg(long, value_name = "TEXT")]
    pub provenance_source: Option<String>,
    /// Metadata, a JSON object read as the API's `metadata`: `tags`, `license` and `provenance` go
    /// to those sidecar fields, other keys into `meta`.
    #[arg(long, value_name = "JSON")]
    pub meta: Option<String>,
    /// Copy a file from outside the assets root in (to --dest, default TYPE/FILENAME).
    #[arg(long)]
    pub copy: bool,
    /// With --copy: where to put it, relative to the assets root.
    #[arg(long, value_name = "REL", requires = "copy")]
    pub dest: Option<String>,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    #[arg(value_name = "UID|PATH")]
    pub asset: String,
    #[arg(required = true, value_name = "TAG")]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SetLicenseArgs {
    #[arg(value_name = "UID|PATH")]
    pub asset: String,
    /// An SPDX expression; "" clears the license.
    #[arg(value_name = "LICENSE")]
    pub license: String,
}
