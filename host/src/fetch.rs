//! Resumable, checksum-verified downloads of dataset and model files.
//!
//! [`fetch_all`] puts every file of a list of [`SourceFile`]s into a
//! directory: files already there are kept (and checked against the
//! published sha256 when one is known); missing ones are downloaded, trying
//! each URL in turn with retries and exponential backoff. A transfer goes to
//! `<file>.part` and resumes from where it stopped with an HTTP `Range`
//! request (restarting cleanly when the server ignores `Range`); the
//! finished file is checked for size and sha256 before it is renamed into
//! place, and a file with the wrong checksum is deleted and reported with the
//! expected and actual hash. When no server can be reached the error lists
//! which file to put where (URL → path), so the user can copy them by hand.
//!
//! This module stands alone: it uses only `nas-plugin-api`'s [`SourceFile`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nas_plugin_api::SourceFile;
use sha2::{Digest, Sha256};

/// How [`fetch_all`] downloads.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Retries per URL after the first attempt (connection errors, cut
    /// transfers, 5xx, 408 and 429 answers).
    pub retries: u32,
    /// The wait before the first retry; doubled on each further retry.
    pub backoff_ms: u64,
    /// Limit for establishing a connection.
    pub connect_timeout_s: u64,
    /// Limit for each read or write on an open connection.
    pub read_timeout_s: u64,
    /// Show a progress bar (it is hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Also download files marked `required: false`.
    pub include_optional: bool,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 3,
            backoff_ms: 1000,
            connect_timeout_s: 20,
            read_timeout_s: 60,
            progress: true,
            include_optional: false,
            user_agent: format!("nas/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// How a file came to be in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchStatus {
    /// It was already there; nothing was downloaded.
    AlreadyPresent,
    /// It was downloaded from the start.
    Downloaded,
    /// A partial download (`.part`) was resumed.
    Resumed,
}

/// A file that is in place after [`fetch_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    /// Name relative to the destination directory.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its sha256 (lower-case hex).
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// How it came to be there.
    pub status: FetchStatus,
    /// The URL it came from (`None` when already present).
    pub url: Option<String>,
    /// Whether it matches the published sha256: `None` when none is
    /// published. A file already present that differs is kept (it may be a
    /// repackaged copy) and reported `Some(false)`; a downloaded one that
    /// differs is an error.
    pub checksum_matches: Option<bool>,
}

/// A file that has to be put in place by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualFile {
    /// Name relative to the destination directory.
    pub name: String,
    /// Where to put it.
    pub path: PathBuf,
    /// Where it can be obtained (may be empty).
    pub urls: Vec<String>,
}

/// Why [`fetch_all`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A downloaded file does not have the published sha256; it was deleted.
    #[error("{name}: checksum mismatch for the file downloaded from {url}: expected sha256 {expected}, got {actual}; the bad file was deleted")]
    ChecksumMismatch {
        /// File name.
        name: String,
        /// Where it came from.
        url: String,
        /// Published sha256.
        expected: String,
        /// sha256 of what arrived.
        actual: String,
    },
    /// A downloaded file does not have the published size; it was deleted.
    #[error("{name}: size mismatch for the file downloaded from {url}: expected {expected} bytes, got {actual}; the bad file was deleted")]
    SizeMismatch {
        /// File name.
        name: String,
        /// Where it came from.
        url: String,
        /// Published size.
        expected: u64,
        /// Size of what arrived.
        actual: u64,
    },
    /// Files could not be downloaded (no network, no URL, servers refusing):
    /// the message lists each with where to put it.
    #[error("{reason}\n{}", manual_instructions(.files))]
    Manual {
        /// What went wrong for the first file that failed.
        reason: String,
        /// Every file still missing, with where to put it.
        files: Vec<ManualFile>,
    },
    /// Reading or writing a local file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot start the HTTP client: {0}")]
    Client(String),
}

/// The lines telling a user which file to put where (`URL -> path`).
pub fn manual_instructions(files: &[ManualFile]) -> String {
    let mut out = String::from("Put these files in place by hand:");
    for f in files {
        match f.urls.first() {
            Some(url) => out.push_str(&format!("\n  {url}\n    -> {}", f.path.display())),
            None => out.push_str(&format!("\n  {} (no public URL; see the dataset's notes)", f.path.display())),
        }
    }
    out
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io { path: path.to_path_buf(), source }
}

/// The sha256 (lower-case hex) and size of a file.
pub fn sha256_file(path: &Path) -> Result<(String, u64), FetchError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Where `source` goes under `dest_dir`; `None` for a name that would leave
/// it (absolute, or with `..`).
pub fn destination(dest_dir: &Path, source: &SourceFile) -> Option<PathBuf> {
    let rel = Path::new(&source.name);
    let safe = !source.name.is_empty() && rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    safe.then(|| dest_dir.join(rel))
}

/// The files of `sources` (required ones, or all with `include_optional`)
/// that are not yet in `dest_dir`, with where each goes: what
/// `nas data list` shows and what [`manual_instructions`] prints.
pub fn missing_files(sources: &[SourceFile], dest_dir: &Path, include_optional: bool) -> Vec<ManualFile> {
    sources
        .iter()
        .filter(|s| s.required || include_optional)
        .filter_map(|s| destination(dest_dir, s).map(|p| (s, p)))
        .filter(|(_, p)| !p.is_file())
        .map(|(s, p)| ManualFile { name: s.name.clone(), path: p, urls: s.urls.clone() })
        .collect()
}

/// Puts every (required, or all with `include_optional`) file of `sources`
/// into `dest_dir`, downloading those that are missing. See the module docs.
pub fn fetch_all(sources: &[SourceFile], dest_dir: &Path, opts: &FetchOptions) -> Result<Vec<FetchedFile>, FetchError> {
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(opts.connect_timeout_s))
        .timeout(Duration::from_secs(opts.read_timeout_s))
        .user_agent(opts.user_agent.clone())
        .build()
        .map_err(|e| FetchError::Client(e.to_string()))?;
    let wanted: Vec<&SourceFile> = sources.iter().filter(|s| s.required || opts.include_optional).collect();
    let mut done = Vec::new();
    for (i, source) in wanted.iter().enumerate() {
        let path = destination(dest_dir, source).ok_or_else(|| FetchError::Io {
            path: dest_dir.join(&source.name),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "file name leaves the destination directory"),
        })?;
        if path.is_file() {
            let (sha256, size) = sha256_file(&path)?;
            let checksum_matches = source.sha256.as_ref().map(|e| e.eq_ignore_ascii_case(&sha256));
            done.push(FetchedFile {
                name: source.name.clone(),
                path,
                sha256,
                size,
                status: FetchStatus::AlreadyPresent,
                url: None,
                checksum_matches,
            });
            continue;
        }
        match download(&client, source, &path, opts)? {
            Ok(file) => done.push(file),
            Err(reason) => {
                let rest: Vec<SourceFile> = wanted[i..].iter().map(|s| (*s).clone()).collect();
                return Err(FetchError::Manual { reason, files: missing_files(&rest, dest_dir, true) });
            }
        }
    }
    Ok(done)
}

/// What one attempt at one URL came to.
enum Attempt {
    /// The whole file is in the `.part` file.
    Complete { resumed: bool },
    /// Worth another try (cut transfer, connection error, 5xx).
    Retry(String),
    /// Not worth retrying this URL (404, 403, ...).
    GiveUp(String),
}

/// Downloads one file: `Ok(Ok(file))` when in place, `Ok(Err(reason))` when
/// no URL worked, `Err` for checksum mismatches and local I/O errors.
fn download(
    client: &reqwest::blocking::Client,
    source: &SourceFile,
    path: &Path,
    opts: &FetchOptions,
) -> Result<Result<FetchedFile, String>, FetchError> {
    if source.urls.is_empty() {
        return Ok(Err(format!("{}: no download URL is known", source.name)));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let part = part_path(path);
    let mut reasons = Vec::new();
    for url in &source.urls {
        let mut resumed_any = false;
        for attempt in 0..=opts.retries {
            if attempt > 0 {
                let wait = opts.backoff_ms.saturating_mul(1u64 << (attempt - 1).min(16));
                std::thread::sleep(Duration::from_millis(wait));
            }
            match try_once(client, url, &part, source, opts)? {
                Attempt::Complete { resumed } => {
                    let (sha256, size) = sha256_file(&part)?;
                    if let Some(expected) = source.size.filter(|&e| e != size) {
                        let _ = std::fs::remove_file(&part);
                        return Err(FetchError::SizeMismatch {
                            name: source.name.clone(),
                            url: url.clone(),
                            expected,
                            actual: size,
                        });
                    }
                    if let Some(expected) = source.sha256.as_ref().filter(|e| !e.eq_ignore_ascii_case(&sha256)) {
                        let _ = std::fs::remove_file(&part);
                        return Err(FetchError::ChecksumMismatch {
                            name: source.name.clone(),
                            url: url.clone(),
                            expected: expected.to_ascii_lowercase(),
                            actual: sha256,
                        });
                    }
                    std::fs::rename(&part, path).map_err(io_err(path))?;
                    return Ok(Ok(FetchedFile {
                        name: source.name.clone(),
                        path: path.to_path_buf(),
                        sha256,
                        size,
                        status: if resumed || resumed_any { FetchStatus::Resumed } else { FetchStatus::Downloaded },
                        url: Some(url.clone()),
                        checksum_matches: source.sha256.as_ref().map(|_| true),
                    }));
                }
                Attempt::Retry(why) => {
                    resumed_any |= part.is_file();
                    reasons.push(format!("{url}: {why}"));
                }
                Attempt::GiveUp(why) => {
                    reasons.push(format!("{url}: {why}"));
                    break;
                }
            }
        }
    }
    Ok(Err(format!("{}: download failed ({})", source.name, reasons.last().cloned().unwrap_or_default())))
}

/// `<file>.part`.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    path.with_file_name(name)
}

fn try_once(
    client: &reqwest::blocking::Client,
    url: &str,
    part: &Path,
    source: &SourceFile,
    opts: &FetchOptions,
) -> Result<Attempt, FetchError> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if have > 0 && source.size == Some(have) {
        return Ok(Attempt::Complete { resumed: true });
    }
    let mut request = client.get(url);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut response = match request.send() {
        Ok(r) => r,
        Err(e) => return Ok(Attempt::Retry(error_chain(&e))),
    };
    let status = response.status();
    let (mut file, offset) = if status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0 {
        let start = response
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok());
        if start != Some(have) {
            // An answer for another range than asked: start over.
            let _ = std::fs::remove_file(part);
            return Ok(Attempt::Retry(format!("server answered range {start:?}, asked for {have}-")));
        }
        let mut f = OpenOptions::new().append(true).open(part).map_err(io_err(part))?;
        f.seek(SeekFrom::End(0)).map_err(io_err(part))?;
        (f, have)
    } else if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
        // The part file is already whole (or longer than the file): check it.
        return Ok(Attempt::Complete { resumed: true });
    } else if status.is_success() {
        // A full answer (the server ignored Range, or none was asked): restart.
        (File::create(part).map_err(io_err(part))?, 0)
    } else if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        return Ok(Attempt::Retry(format!("HTTP {status}")));
    } else {
        return Ok(Attempt::GiveUp(format!("HTTP {status}")));
    };
    let total = response.content_length().map(|l| l + offset).or(source.size);
    let bar = progress_bar(&source.name, total, offset, opts.progress);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                bar.abandon();
                let _ = file.flush();
                return Ok(Attempt::Retry(format!("transfer cut: {e}")));
            }
        };
        file.write_all(&buf[..n]).map_err(io_err(part))?;
        bar.inc(n as u64);
    }
    file.flush().map_err(io_err(part))?;
    bar.finish_and_clear();
    let got = file.metadata().map_err(io_err(part))?.len();
    if let Some(expected) = response.content_length().map(|l| l + offset) {
        if got < expected {
            return Ok(Attempt::Retry(format!("transfer cut at {got} of {expected} bytes")));
        }
    }
    Ok(Attempt::Complete { resumed: offset > 0 })
}

fn progress_bar(name: &str, total: Option<u64>, start: u64, show: bool) -> ProgressBar {
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    if !show {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_string());
    bar.set_position(start);
    bar
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
