//! Reading what sandboxed processes write, with bounded memory: a candidate
//! may print gigabytes, or one line of a gigabyte, and the host keeps only
//! a tail of it (and never takes an answer from it).

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Ring {
    buf: VecDeque<u8>,
    total: u64,
    closed: bool,
}

/// The last `cap` bytes written to a pipe, read by a thread until the pipe
/// closes; everything before them is counted and dropped.
#[derive(Debug, Clone)]
pub struct Tail {
    shared: Arc<(Mutex<Ring>, Condvar)>,
    cap: usize,
}

impl Tail {
    /// Starts reading `fd` (the read end of a pipe), keeping the last `cap` bytes.
    pub fn spawn(fd: OwnedFd, cap: usize) -> Tail {
        let shared = Arc::new((Mutex::new(Ring::default()), Condvar::new()));
        let tail = Tail { shared: shared.clone(), cap };
        std::thread::spawn(move || {
            let mut file = std::fs::File::from(fd);
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                let n = match file.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let Ok(mut ring) = shared.0.lock() else { break };
                ring.total += n as u64;
                let data = &chunk[n.saturating_sub(cap)..n];
                ring.buf.extend(data);
                let excess = ring.buf.len().saturating_sub(cap);
                ring.buf.drain(..excess);
            }
            if let Ok(mut ring) = shared.0.lock() {
                ring.closed = true;
            }
            shared.1.notify_all();
        });
        tail
    }

    /// Waits until every writer has closed the pipe, `timeout` at most;
    /// whether it closed.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut ring) = self.shared.0.lock() else { return false };
        while !ring.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.shared.1.wait_timeout(ring, left) {
                Ok((r, _)) => ring = r,
                Err(_) => return false,
            }
        }
        true
    }

    /// The bytes kept (the last `cap` written).
    pub fn bytes(&self) -> Vec<u8> {
        self.shared.0.lock().map(|r| r.buf.iter().copied().collect()).unwrap_or_default()
    }

    /// How many bytes were written in all.
    pub fn total(&self) -> u64 {
        self.shared.0.lock().map(|r| r.total).unwrap_or(0)
    }

    /// The tail as text, the last `max` bytes of it at most, saying how much
    /// came before.
    pub fn text(&self, max: usize) -> String {
        let bytes = self.bytes();
        let total = self.total();
        let keep = &bytes[bytes.len().saturating_sub(max.min(self.cap))..];
        let text = String::from_utf8_lossy(keep).into_owned();
        let dropped = total.saturating_sub(keep.len() as u64);
        if dropped > 0 {
            format!("[... {dropped} bytes of output before this not kept]\n{text}")
        } else {
            text
        }
    }
}

/// What an answer channel delivers.
#[derive(Debug)]
pub enum LineEvent {
    /// One complete line (without the newline).
    Line(String),
    /// A line longer than the limit, dropped (its length).
    TooLong(u64),
}

/// Reads `fd` line by line on a thread and sends each line; lines longer
/// than `max_line` are dropped whole (never buffered past the limit). The
/// channel closes when the pipe does.
pub fn spawn_lines(fd: OwnedFd, max_line: usize) -> Receiver<LineEvent> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || read_lines(fd, max_line, &tx));
    rx
}

fn read_lines(fd: OwnedFd, max_line: usize, tx: &Sender<LineEvent>) {
    let mut file = std::fs::File::from(fd);
    let mut chunk = vec![0u8; 64 << 10];
    let mut line: Vec<u8> = Vec::new();
    // Length of the line being dropped, when it went past the limit.
    let mut dropping: Option<u64> = None;
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let mut rest = &chunk[..n];
        while !rest.is_empty() {
            let (part, newline) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = if newline { &rest[part.len() + 1..] } else { &[] };
            if let Some(len) = dropping.as_mut() {
                *len += part.len() as u64;
            } else if line.len() + part.len() > max_line {
                dropping = Some((line.len() + part.len()) as u64);
                line = Vec::new();
            } else {
                line.extend_from_slice(part);
            }
            if newline {
                let event = match dropping.take() {
                    Some(len) => LineEvent::TooLong(len),
                    None => LineEvent::Line(String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned()),
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_tail_keeps_only_the_last_bytes_of_a_large_output() {
        let (r, w) = crate::sandbox::pipe().expect("pipe");
        let tail = Tail::spawn(r, 1000);
        let mut w = std::fs::File::from(w);
        for i in 0..2000 {
            writeln!(w, "line {i:05}").expect("write");
        }
        drop(w);
        assert!(tail.wait_closed(Duration::from_secs(5)));
        assert_eq!(tail.total(), 2000 * 11);
        assert_eq!(tail.bytes().len(), 1000);
        let text = tail.text(100);
        assert!(text.ends_with("line 01999\n"), "{text}");
        assert!(text.starts_with("[... 21900 bytes"), "{text}");
    }

    #[test]
    fn an_overlong_line_is_dropped_and_the_next_line_still_arrives() {
        let (r, w) = crate::sandbox::pipe().expect("pipe");
        let rx = spawn_lines(r, 1024);
        let mut w = std::fs::File::from(w);
        w.write_all(b"short\n").expect("write");
        for _ in 0..100 {
            w.write_all(&[b'x'; 1000]).expect("write");
        }
        w.write_all(b"\n{\"ok\":true}\n").expect("write");
        drop(w);
        let got: Vec<LineEvent> = rx.iter().collect();
        assert!(matches!(&got[0], LineEvent::Line(l) if l == "short"), "{got:?}");
        assert!(matches!(&got[1], LineEvent::TooLong(100_000)), "{got:?}");
        assert!(matches!(&got[2], LineEvent::Line(l) if l == "{\"ok\":true}"), "{got:?}");
        assert_eq!(got.len(), 3);
    }
}
