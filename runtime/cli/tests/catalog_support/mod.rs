//! Test support for the catalog: a fake PEP 503 index served over HTTP on 127.0.0.1, and
//! wheels built on the spot with the `zip` crate.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// What the server answers for one path.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body.
    Ok(Vec<u8>),
    /// Announces the whole body in Content-Length, sends only `sent` bytes, then closes the
    /// connection: a download dropped midway.
    CutShort { body: Vec<u8>, sent: usize },
    /// As `CutShort` the first time this path is asked for, then as `Ok`: a download that
    /// fails once and succeeds when tried again.
    CutShortOnce { body: Vec<u8>, sent: usize },
}

/// A one-connection-at-a-time HTTP/1.1 server on 127.0.0.1; stops when dropped.
pub struct FakeIndex {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeIndex {
    /// Serves the routes (path → reply) that `make` builds from the server's base URL (pages
    /// link to the server itself); any other path gets 404.
    pub fn start(make: impl FnOnce(&str) -> HashMap<String, Reply>) -> FakeIndex {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let routes = make(&format!("http://{addr}"));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            let requests = Arc::clone(&requests);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(mut stream) = conn {
                        serve(&mut stream, &routes, &requests);
                    }
                }
            })
        };
        FakeIndex {
            addr,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The index root to hand to the catalog.
    pub fn index_url(&self) -> String {
        format!("{}/simple", self.base())
    }

    /// Paths requested so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeIndex {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: &mut TcpStream, routes: &HashMap<String, Reply>, log: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock().unwrap().push(path.clone());
    let header = |status: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let _ = match routes.get(&path) {
        Some(Reply::Ok(body)) => stream
            .write_all(header("200 OK", body.len()).as_bytes())
            .and_then(|_| stream.write_all(body)),
        Some(Reply::CutShort { body, sent }) => stream
            .write_all(header("200 OK", body.len()).as_bytes())
            .and_then(|_| stream.write_all(&body[..*sent])),
        Some(Reply::CutShortOnce { body, sent }) => {
            let asked = log.lock().unwrap().iter().filter(|p| **p == path).count();
            let sent = if asked == 1 { *sent } else { body.len() };
            stream
                .write_all(header("200 OK", body.len()).as_bytes())
                .and_then(|_| stream.write_all(&body[..sent]))
        }
        None => stream.write_all(header("404 Not Found", 0).as_bytes()),
    };
    let _ = stream.flush();
}

/// A wheel (zip archive, deflated) holding `members`.
pub fn wheel(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// `len` bytes that are neither constant nor random (so deflate has work to do), varying
/// with `seed`.
pub fn model_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if i % 3 == 0 {
                b'a' + (x % 4) as u8
            } else {
                x as u8
            }
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A simple-index page linking to `(href, sha256)` pairs, the way PyPI writes them.
pub fn index_page(links: &[(String, String)]) -> Vec<u8> {
    let mut html = String::from("<!DOCTYPE html>\n<html>\n  <body>\n");
    for (href, sha) in links {
        let file = href.rsplit('/').next().unwrap();
        html.push_str(&format!(
            "    <a href=\"{href}#sha256={sha}\" data-requires-python=\"&gt;=3.9\">{file}</a><br />\n"
        ));
    }
    html.push_str("  </body>\n</html>\n");
    html.into_bytes()
}

/// File names in `dir` (empty if it does not exist), sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
