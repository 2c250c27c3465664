//! The downloader against a real HTTP/1.1 server on loopback that the tests
//! start: plain downloads, wrong checksums, a connection cut mid-file (then
//! resumed with `Range`), a server that ignores `Range`, fallback URLs, and
//! no network at all.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nas_host::fetch::{fetch_all, missing_files, part_path, FetchError, FetchOptions, FetchStatus};
use nas_plugin_api::SourceFile;
use sha2::{Digest, Sha256};

/// The body every path serves.
fn payload() -> Vec<u8> {
    (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `(path, range header)` of every request, in order.
type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct Server {
    base: String,
    /// `(path, range header)` of every request, in order.
    requests: RequestLog,
}

/// Serves `payload()` at `/file.bin` (honours `Range: bytes=N-`),
/// `/cut/file.bin` (the first answer stops half-way and closes),
/// `/norange/file.bin` (ignores `Range`), anything else: 404.
fn serve() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds loopback");
    let base = format!("http://{}", listener.local_addr().expect("has an address"));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let cuts = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            let cuts = cuts.clone();
            std::thread::spawn(move || {
                let _ = handle(stream, &seen, &cuts);
            });
        }
    });
    Server { base, requests }
}

fn handle(
    mut stream: TcpStream,
    seen: &Mutex<Vec<(String, Option<String>)>>,
    cuts: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    seen.lock().expect("not poisoned").push((path.clone(), range.clone()));
    let body = payload();
    let start: usize = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or(0);
    match path.as_str() {
        "/file.bin" | "/cut/file.bin" => {
            if start >= body.len() && range.is_some() {
                write!(stream, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
                return Ok(());
            }
            let rest = &body[start..];
            if range.is_some() {
                write!(
                    stream,
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                    rest.len(),
                    body.len() - 1,
                    body.len()
                )?;
            } else {
                write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", rest.len())?;
            }
            if path.starts_with("/cut") && cuts.fetch_add(1, Ordering::SeqCst) == 0 {
                // Promise the whole file, send half, hang up.
                stream.write_all(&rest[..rest.len() / 2])?;
                stream.flush()?;
                return stream.shutdown(std::net::Shutdown::Write);
            }
            stream.write_all(rest)
        }
        "/norange/file.bin" => {
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
            stream.write_all(&body)
        }
        _ => write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    }
}

fn source(urls: Vec<String>, sha256: Option<String>) -> SourceFile {
    SourceFile { name: "sub/file.bin".into(), urls, sha256, size: Some(payload().len() as u64), required: true }
}

fn opts() -> FetchOptions {
    FetchOptions {
        retries: 2,
        backoff_ms: 10,
        connect_timeout_s: 5,
        read_timeout_s: 10,
        progress: false,
        ..Default::default()
    }
}

#[test]
fn downloads_and_verifies_the_checksum() {
    let server = serve();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(vec![format!("{}/file.bin", server.base)], Some(sha(&payload())));
    let got = fetch_all(&[src], dir.path(), &opts()).expect("downloads");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].status, FetchStatus::Downloaded);
    assert_eq!(got[0].checksum_matches, Some(true));
    assert_eq!(got[0].sha256, sha(&payload()));
    let path = dir.path().join("sub/file.bin");
    assert_eq!(std::fs::read(&path).expect("file is there"), payload());
    assert!(!part_path(&path).exists(), "no .part file is left behind");
}

#[test]
fn wrong_checksum_deletes_the_file_and_names_both_hashes() {
    let server = serve();
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = "0".repeat(64);
    let src = source(vec![format!("{}/file.bin", server.base)], Some(wrong.clone()));
    let err = fetch_all(&[src], dir.path(), &opts()).expect_err("a wrong checksum is an error");
    let msg = err.to_string();
    assert!(matches!(err, FetchError::ChecksumMismatch { .. }), "{msg}");
    assert!(msg.contains("sub/file.bin") && msg.contains(&wrong) && msg.contains(&sha(&payload())), "{msg}");
    let path = dir.path().join("sub/file.bin");
    assert!(!path.exists() && !part_path(&path).exists(), "the bad file is deleted");
}

#[test]
fn a_connection_cut_mid_file_is_resumed_with_a_range_request() {
    let server = serve();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(vec![format!("{}/cut/file.bin", server.base)], Some(sha(&payload())));
    let got = fetch_all(&[src], dir.path(), &opts()).expect("resumes and completes");
    assert_eq!(got[0].status, FetchStatus::Resumed);
    assert_eq!(std::fs::read(dir.path().join("sub/file.bin")).expect("file"), payload());
    let requests = server.requests.lock().expect("not poisoned").clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].1, None);
    let resumed_from: usize = requests[1]
        .1
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .expect("the second request asks for a range");
    assert!(resumed_from > 0 && resumed_from <= payload().len() / 2, "resumed from {resumed_from}");
}

#[test]
fn a_server_that_ignores_range_restarts_the_file_cleanly() {
    let server = serve();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub/file.bin");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(part_path(&path), b"stale garbage from an earlier run").expect("write part");
    let src = source(vec![format!("{}/norange/file.bin", server.base)], Some(sha(&payload())));
    let got = fetch_all(&[src], dir.path(), &opts()).expect("downloads");
    assert_eq!(got[0].status, FetchStatus::Downloaded);
    assert_eq!(std::fs::read(&path).expect("file"), payload());
    let requests = server.requests.lock().expect("not poisoned").clone();
    assert!(requests[0].1.is_some(), "a resume was asked for: {requests:?}");
}

#[test]
fn a_missing_url_falls_back_to_the_next_one() {
    let server = serve();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(vec![format!("{}/gone.bin", server.base), format!("{}/file.bin", server.base)], None);
    let got = fetch_all(&[src], dir.path(), &opts()).expect("second URL works");
    assert_eq!(got[0].url.as_deref(), Some(format!("{}/file.bin", server.base).as_str()));
    assert_eq!(got[0].checksum_matches, None);
    let requests = server.requests.lock().expect("not poisoned").clone();
    assert_eq!(requests.iter().filter(|r| r.0 == "/gone.bin").count(), 1, "a 404 is not retried");
}

#[test]
fn without_a_network_the_error_says_which_file_to_put_where() {
    let port = TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port();
    // The listener is dropped: nothing answers on that port now.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://127.0.0.1:{port}/file.bin");
    let mut second = source(vec!["http://127.0.0.1:9/other.bin".into()], None);
    second.name = "other.bin".into();
    let err = fetch_all(&[source(vec![url.clone()], None), second], dir.path(), &FetchOptions { retries: 1, ..opts() })
        .expect_err("nothing can be downloaded");
    let msg = err.to_string();
    let FetchError::Manual { files, .. } = &err else { panic!("expected a manual-download error, got {msg}") };
    assert_eq!(files.len(), 2, "both files are listed: {msg}");
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains(&dir.path().join("sub/file.bin").display().to_string()), "{msg}");
    assert!(msg.contains(&dir.path().join("other.bin").display().to_string()), "{msg}");
}

#[test]
fn files_already_present_are_kept_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub/file.bin");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, b"a repackaged copy").expect("write");
    // No server: nothing may be downloaded.
    let src = source(vec!["http://127.0.0.1:9/file.bin".into()], Some(sha(&payload())));
    let got = fetch_all(&[src], dir.path(), &opts()).expect("present files need no network");
    assert_eq!(got[0].status, FetchStatus::AlreadyPresent);
    assert_eq!(got[0].checksum_matches, Some(false));
    assert_eq!(std::fs::read(&path).expect("kept"), b"a repackaged copy");
}

#[test]
fn optional_files_are_skipped_unless_asked_for() {
    let server = serve();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut src = source(vec![format!("{}/file.bin", server.base)], None);
    src.required = false;
    let got = fetch_all(std::slice::from_ref(&src), dir.path(), &opts()).expect("nothing to do");
    assert!(got.is_empty());
    let got = fetch_all(&[src], dir.path(), &FetchOptions { include_optional: true, ..opts() }).expect("downloads");
    assert_eq!(got.len(), 1);
}

#[test]
fn missing_files_lists_what_is_not_there_yet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut optional = source(vec!["http://example.invalid/o.bin".into()], None);
    optional.name = "o.bin".into();
    optional.required = false;
    let mut present = source(vec![], None);
    present.name = "here.bin".into();
    std::fs::write(dir.path().join("here.bin"), b"x").expect("write");
    let sources = [source(vec!["http://example.invalid/f.bin".into()], None), optional, present];
    let missing = missing_files(&sources, dir.path(), false);
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].path, dir.path().join("sub/file.bin"));
    assert_eq!(missing_files(&sources, dir.path(), true).len(), 2);
}
