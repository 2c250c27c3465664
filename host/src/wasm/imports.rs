//! The host side of the WIT imports: `host.log`, `http.post` (allowed hosts
//! only, API key added by the host) and `files` (granted directories only).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component as PathPart, Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::Digest;

use super::bindings::dataset::nas::plugin::files::{self, FileError, FileErrorKind};
use super::bindings::llm::nas::plugin::http::{self, HttpError, HttpErrorKind, HttpResponse};
use super::bindings::memory::nas::plugin::host;
use super::bindings::LogLevel;
use super::runtime::GuestState;

/// Largest HTTP response body a guest is given.
const MAX_BODY_BYTES: usize = 32 << 20;
/// Largest single `files.read` a guest may ask for.
const MAX_READ_BYTES: u32 = 64 << 20;

impl GuestState {
    /// Runs a host import, counting its wall time as host time (not guest
    /// time, for the deadline).
    fn timed<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let start = Instant::now();
        let r = f(self);
        self.host_time += start.elapsed();
        r
    }

    fn deny(&mut self, what: String) -> String {
        let msg = format!("plugin `{}` was denied: {what}", self.plugin_id);
        self.denials.push(msg.clone());
        msg
    }
}

impl host::Host for GuestState {
    fn log(&mut self, level: LogLevel, message: String) {
        let level = match level {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        let line = nas_plugin_api::text::truncate_chars(&message, 4000);
        if self.log_to_stderr {
            eprintln!("[{}] {level}: {line}", self.plugin_id);
        }
        self.log.push(format!("{level}: {line}"));
        if self.log.len() > 1000 {
            self.log.remove(0);
        }
    }
}

impl http::Host for GuestState {
    fn post(
        &mut self,
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<HttpResponse, HttpError> {
        self.timed(|s| s.post_inner(url, headers, body, timeout_ms))
    }
}

impl GuestState {
    fn post_inner(
        &mut self,
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<HttpResponse, HttpError> {
        let err = |kind, message: String| HttpError { kind, message };
        let parsed = reqwest::Url::parse(&url).map_err(|e| err(HttpErrorKind::BadUrl, format!("`{url}`: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(err(HttpErrorKind::BadUrl, format!("`{url}`: only http and https are supported")));
        }
        let host = parsed.host_str().unwrap_or_default().to_string();
        let port = parsed.port_or_known_default().unwrap_or(0);
        if !self.allowed_hosts.iter().any(|r| r.allows(&host, port)) {
            let msg = self.deny(format!(
                "HTTP to `{host}:{port}` ({url}) is not allowed; its manifest's allowed_hosts is {:?}",
                self.allowed_host_names
            ));
            return Err(err(HttpErrorKind::Denied, msg));
        }
        let client = match &self.http {
            Some(c) => c.clone(),
            None => {
                let c = reqwest::blocking::Client::builder()
                    .build()
                    .map_err(|e| err(HttpErrorKind::Unreachable, format!("cannot start an HTTP client: {e}")))?;
                self.http = Some(c.clone());
                c
            }
        };
        let mut req = client.post(parsed).body(body).timeout(Duration::from_millis(u64::from(timeout_ms.max(1))));
        for (name, value) in headers {
            // The key is the host's to add; a guest cannot set or read it.
            if name.eq_ignore_ascii_case("authorization")
                || Some(name.to_ascii_lowercase()) == self.api_key_header_lower()
            {
                continue;
            }
            req = req.header(name, value);
        }
        if let Some((name, value)) = &self.api_key {
            req = req.header(name.as_str(), value.as_str());
        }
        let resp = req.send().map_err(|e| {
            let kind = if e.is_timeout() { HttpErrorKind::Timeout } else { HttpErrorKind::Unreachable };
            err(kind, format!("POST {url}: {}", error_chain(&e)))
        })?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let mut body = Vec::new();
        resp.take(MAX_BODY_BYTES as u64 + 1).read_to_end(&mut body).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::TimedOut {
                HttpErrorKind::Timeout
            } else {
                HttpErrorKind::Unreachable
            };
            err(kind, format!("POST {url}: reading the body: {e}"))
        })?;
        if body.len() > MAX_BODY_BYTES {
            return Err(err(HttpErrorKind::TooLarge, format!("POST {url}: body larger than {MAX_BODY_BYTES} bytes")));
        }
        Ok(HttpResponse { status, headers, body })
    }

    fn api_key_header_lower(&self) -> Option<String> {
        self.api_key.as_ref().map(|(n, _)| n.to_ascii_lowercase())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn ferr(kind: FileErrorKind, message: String) -> FileError {
    FileError { kind, message }
}

fn io_err(path: &Path, e: std::io::Error) -> FileError {
    let kind = if e.kind() == std::io::ErrorKind::NotFound { FileErrorKind::NotFound } else { FileErrorKind::Io };
    ferr(kind, format!("{}: {e}", path.display()))
}

impl GuestState {
    /// Resolves `path` for reading: absolute, no `..`, inside a granted
    /// directory after symlinks are resolved.
    fn readable(&mut self, path: &str) -> Result<PathBuf, FileError> {
        let p = self.plain_absolute(path)?;
        let real = p.canonicalize().map_err(|e| io_err(&p, e))?;
        let granted = self.read_dirs.iter().chain(self.write_dir.iter()).any(|d| real.starts_with(d));
        if !granted {
            let msg = self.deny(format!(
                "reading `{path}` is not allowed; its manifest's allowed_dirs is {:?}",
                self.allowed_dir_names
            ));
            return Err(ferr(FileErrorKind::Denied, msg));
        }
        Ok(real)
    }

    /// Resolves `path` for writing: its parent must be inside the current
    /// prepare request's cache directory.
    fn writable(&mut self, path: &str) -> Result<PathBuf, FileError> {
        let p = self.plain_absolute(path)?;
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return Err(ferr(FileErrorKind::Io, format!("`{path}` names no file")));
        };
        let real_parent = parent.canonicalize().map_err(|e| io_err(parent, e))?;
        let ok = self.write_dir.as_ref().is_some_and(|d| real_parent.starts_with(d));
        if !ok {
            let msg = self.deny(format!(
                "writing `{path}` is not allowed; a dataset loader writes only under the cache directory of the current prepare request{}",
                self.write_dir.as_ref().map(|d| format!(" (`{}`)", d.display())).unwrap_or_default()
            ));
            return Err(ferr(FileErrorKind::Denied, msg));
        }
        let target = real_parent.join(name);
        if target.is_symlink() {
            let msg = self.deny(format!("writing `{path}`: it is a symbolic link"));
            return Err(ferr(FileErrorKind::Denied, msg));
        }
        Ok(target)
    }

    fn plain_absolute(&mut self, path: &str) -> Result<PathBuf, FileError> {
        let p = PathBuf::from(path);
        if !p.is_absolute() || p.components().any(|c| matches!(c, PathPart::ParentDir)) {
            let msg = self.deny(format!("path `{path}` must be absolute and contain no `..`"));
            return Err(ferr(FileErrorKind::Denied, msg));
        }
        Ok(p)
    }
}

impl files::Host for GuestState {
    fn size(&mut self, path: String) -> Result<u64, FileError> {
        self.timed(|s| {
            let p = s.readable(&path)?;
            Ok(std::fs::metadata(&p).map_err(|e| io_err(&p, e))?.len())
        })
    }

    fn read(&mut self, path: String, offset: u64, len: u32) -> Result<Vec<u8>, FileError> {
        self.timed(|s| {
            let p = s.readable(&path)?;
            if len > MAX_READ_BYTES {
                return Err(ferr(
                    FileErrorKind::Io,
                    format!("read of {len} bytes is over the {MAX_READ_BYTES}-byte limit per call"),
                ));
            }
            let mut f = std::fs::File::open(&p).map_err(|e| io_err(&p, e))?;
            f.seek(SeekFrom::Start(offset)).map_err(|e| io_err(&p, e))?;
            let mut buf = Vec::with_capacity(len as usize);
            f.take(u64::from(len)).read_to_end(&mut buf).map_err(|e| io_err(&p, e))?;
            Ok(buf)
        })
    }

    fn list_dir(&mut self, path: String) -> Result<Vec<String>, FileError> {
        self.timed(|s| {
            let p = s.readable(&path)?;
            let mut names = Vec::new();
            for e in std::fs::read_dir(&p).map_err(|e| io_err(&p, e))? {
                names.push(e.map_err(|e| io_err(&p, e))?.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(names)
        })
    }

    fn sha256(&mut self, path: String) -> Result<String, FileError> {
        self.timed(|s| {
            let p = s.readable(&path)?;
            let mut f = std::fs::File::open(&p).map_err(|e| io_err(&p, e))?;
            let mut h = sha2::Sha256::new();
            std::io::copy(&mut f, &mut h).map_err(|e| io_err(&p, e))?;
            Ok(hex::encode(h.finalize()))
        })
    }

    fn append(&mut self, path: String, data: Vec<u8>) -> Result<(), FileError> {
        self.timed(|s| {
            let p = s.writable(&path)?;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).map_err(|e| io_err(&p, e))?;
            f.write_all(&data).map_err(|e| io_err(&p, e))
        })
    }
}

impl super::bindings::t::Host for GuestState {}
