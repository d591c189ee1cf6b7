//! `cargo xtask fetch-data cifar10|cifar100`: download the official binary tarball, check its
//! MD5, extract it safely into a temporary directory beside the target and move it into place
//! with one rename, so the target is either absent or complete.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// What to download and what the extracted directory must contain.
#[derive(Clone, Debug)]
pub struct FetchSpec {
    /// Human name, e.g. "CIFAR-10".
    pub name: &'static str,
    /// URL of the `.tar.gz` (http or https).
    pub url: String,
    /// Published MD5 of the tarball, lowercase hex.
    pub md5: String,
    /// Top-level directory the tarball extracts to; it becomes `<root>/<archive_dir>`.
    pub archive_dir: String,
    /// Files (relative to `archive_dir`) that must exist after extraction, with their sizes.
    pub expected_files: Vec<(String, u64)>,
}

impl FetchSpec {
    /// The official CIFAR-10 binary tarball (checksum as published on the dataset page).
    pub fn cifar10() -> Self {
        let record = 3073 * 10_000;
        let mut files: Vec<(String, u64)> = (1..=5)
            .map(|i| (format!("data_batch_{i}.bin"), record))
            .collect();
        files.push(("test_batch.bin".into(), record));
        Self {
            name: "CIFAR-10",
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz".into(),
            md5: "c32a1d4ab5d03f1284b67883e8d87530".into(),
            archive_dir: explr_data::CIFAR10_DIR.into(),
            expected_files: files,
        }
    }

    /// The official CIFAR-100 binary tarball.
    pub fn cifar100() -> Self {
        Self {
            name: "CIFAR-100",
            url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz".into(),
            md5: "03b5dce01913d631647c71ecec9e9cb8".into(),
            archive_dir: explr_data::CIFAR100_DIR.into(),
            expected_files: vec![
                ("train.bin".into(), 3074 * 50_000),
                ("test.bin".into(), 3074 * 10_000),
            ],
        }
    }
}

/// What [`fetch`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The dataset was already complete at this path; nothing was downloaded.
    AlreadyPresent(PathBuf),
    /// The dataset was downloaded, verified and installed at this path.
    Installed(PathBuf),
}

/// Problems with an installed directory, empty when it is complete.
fn missing_files(spec: &FetchSpec, dir: &Path) -> Vec<String> {
    spec.expected_files
        .iter()
        .filter_map(|(f, size)| match fs::metadata(dir.join(f)) {
            Ok(m) if m.is_file() && m.len() == *size => None,
            Ok(m) => Some(format!("{f} has {} bytes, expected {size}", m.len())),
            Err(_) => Some(format!("{f} is missing")),
        })
        .collect()
}

/// The `fetch-data` task: resolves the data directory (`--data-dir`, `$EXPLR_DATA`, per-user
/// cache), fetches, and says what happened.
pub fn run(spec: &FetchSpec, data_dir: Option<&Path>) -> Result<()> {
    let cache = explr_data::user_cache_dir(
        std::env::var_os("XDG_CACHE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
    );
    let root = explr_data::resolve_data_dir(
        data_dir,
        std::env::var_os("EXPLR_DATA").as_deref(),
        cache.as_deref(),
    )?;
    let prefix = format!(".explr-fetch-{}-", spec.archive_dir);
    if let Ok(entries) = fs::read_dir(&root) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                println!(
                    "removing {}: a partial download left by an interrupted run",
                    e.path().display()
                );
            }
        }
    }
    match fetch(spec, &root)? {
        Outcome::AlreadyPresent(dir) => {
            println!(
                "{} is already complete in {}; nothing to do",
                spec.name,
                dir.display()
            )
        }
        Outcome::Installed(dir) => println!(
            "{} downloaded, MD5 verified and installed in {}",
            spec.name,
            dir.display()
        ),
    }
    Ok(())
}

/// Removes the temporary directory on every exit path (success, error, panic).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Downloads and installs `spec` under `root` (see the module docs). A second call finds the
/// complete directory and does nothing.
pub fn fetch(spec: &FetchSpec, root: &Path) -> Result<Outcome> {
    let target = root.join(&spec.archive_dir);
    if target.exists() {
        let problems = missing_files(spec, &target);
        if problems.is_empty() {
            return Ok(Outcome::AlreadyPresent(target));
        }
        bail!(
            "{} exists but is incomplete ({}); delete it and run `cargo xtask fetch-data` again",
            target.display(),
            problems.join(", ")
        );
    }
    fs::create_dir_all(root)
        .with_context(|| format!("cannot create the data directory {}", root.display()))?;
    // Leftovers of an interrupted run (killed before its cleanup) are ours to remove.
    let prefix = format!(".explr-fetch-{}-", spec.archive_dir);
    for entry in fs::read_dir(root)
        .with_context(|| format!("cannot list {}", root.display()))?
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            fs::remove_dir_all(entry.path()).with_context(|| {
                format!(
                    "cannot remove the stale partial download {}",
                    entry.path().display()
                )
            })?;
        }
    }
    let tmp = TempDir(root.join(format!("{prefix}{}", std::process::id())));
    fs::create_dir(&tmp.0)
        .with_context(|| format!("cannot create the temporary directory {}", tmp.0.display()))?;

    let archive = tmp.0.join("archive.tar.gz");
    let digest = download(&spec.url, &archive).with_context(|| {
        format!(
            "downloading {} from {} failed; nothing was installed",
            spec.name, spec.url
        )
    })?;
    if !digest.eq_ignore_ascii_case(&spec.md5) {
        bail!(
            "MD5 mismatch for {}: got {digest}, expected {}; the download is corrupt or the file \
             changed upstream; nothing was installed (run again to retry)",
            spec.url,
            spec.md5
        );
    }
    let extracted = tmp.0.join("extract");
    fs::create_dir(&extracted)?;
    extract(&archive, &extracted)
        .with_context(|| format!("extracting {} failed; nothing was installed", spec.url))?;
    let staged = extracted.join(&spec.archive_dir);
    let problems = missing_files(spec, &staged);
    if !problems.is_empty() {
        bail!(
            "the archive from {} does not hold the expected {}/ ({}); nothing was installed",
            spec.url,
            spec.archive_dir,
            problems.join(", ")
        );
    }
    fs::rename(&staged, &target).with_context(|| {
        format!(
            "cannot move the extracted files into place at {}",
            target.display()
        )
    })?;
    Ok(Outcome::Installed(target))
}

/// Streams `url` into `dest`, returning the MD5 (lowercase hex) of what was received.
fn download(url: &str, dest: &Path) -> Result<String> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(120))
        .build();
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Status(code, _) => anyhow::anyhow!("the server answered HTTP {code}"),
        other => anyhow::anyhow!(other),
    })?;
    let expected_len: Option<u64> = response
        .header("Content-Length")
        .and_then(|v| v.parse().ok());
    let mut reader = response.into_reader();
    let mut file =
        File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut md5 = md5::Context::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context(format!("the connection broke after {total} bytes")),
        };
        md5.consume(&buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", dest.display()))?;
        total += n as u64;
    }
    file.sync_all()?;
    if let Some(len) = expected_len {
        if total != len {
            bail!(
                "received {total} bytes but the server announced {len}: the download was cut short"
            );
        }
    }
    Ok(format!("{:x}", md5.finalize()))
}

/// The path of an archive entry relative to the extraction root, refusing anything that could
/// land outside it (absolute paths, `..`, drive prefixes).
fn safe_relative(path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                bail!(
                    "refusing archive entry {}: it would land outside the target directory",
                    path.display()
                )
            }
        }
    }
    if out.as_os_str().is_empty() {
        bail!(
            "refusing archive entry {:?}: empty path",
            path.display().to_string()
        );
    }
    Ok(out)
}

/// Extracts a `.tar.gz` into `dest`: regular files and directories only.
fn extract(archive: &Path, dest: &Path) -> Result<()> {
    let gz = flate2::read::GzDecoder::new(
        File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?,
    );
    let mut tar = tar::Archive::new(gz);
    for entry in tar.entries().context("not a readable tar.gz archive")? {
        let mut entry = entry.context("corrupt tar entry")?;
        let raw = entry.path().context("unreadable entry path")?.into_owned();
        let kind = entry.header().entry_type();
        let rel = safe_relative(&raw)?;
        let out = dest.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = out.parent() {
                    fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                let mut f = File::create(&out)
                    .with_context(|| format!("cannot create {}", out.display()))?;
                io::copy(&mut entry, &mut f)
                    .with_context(|| format!("cannot extract {}", raw.display()))?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => bail!(
                "refusing archive entry {} of type {other:?}: only regular files and directories are extracted (links could point outside the target)",
                raw.display()
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// How the test server answers one path.
    #[derive(Clone)]
    enum Reply {
        Ok(Vec<u8>),
        /// Announces the full length, sends half, closes.
        CutShort(Vec<u8>),
        NotFound,
    }

    /// Serves `reply` for every request on 127.0.0.1; returns the base URL and a request counter.
    fn serve(reply: Reply) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut reader = io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = match &reply {
                    Reply::Ok(body) => stream
                        .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes())
                        .and_then(|_| stream.write_all(body)),
                    Reply::CutShort(body) => stream
                        .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes())
                        .and_then(|_| stream.write_all(&body[..body.len() / 2])),
                    Reply::NotFound => stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        (format!("http://{addr}/data.tar.gz"), count)
    }

    /// A tar entry: path, kind, content.
    struct Item(&'static str, tar::EntryType, Vec<u8>);

    /// Builds a .tar.gz, writing each path raw into the header so hostile names survive.
    fn tarball(items: &[Item]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for Item(path, kind, data) in items {
            let mut h = tar::Header::new_gnu();
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                h.set_link_name("/etc/passwd").unwrap();
            }
            h.set_cksum();
            b.append(&h, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn spec(url: &str, archive: &[u8]) -> FetchSpec {
        FetchSpec {
            name: "test set",
            url: url.into(),
            md5: format!("{:x}", md5::compute(archive)),
            archive_dir: "set-bin".into(),
            expected_files: vec![("a.bin".into(), 3), ("b.bin".into(), 5)],
        }
    }

    fn good_items() -> Vec<Item> {
        vec![
            Item("set-bin/", tar::EntryType::Directory, vec![]),
            Item("set-bin/a.bin", tar::EntryType::Regular, b"abc".to_vec()),
            Item("set-bin/b.bin", tar::EntryType::Regular, b"12345".to_vec()),
        ]
    }

    /// Entries of `root`, sorted, to show nothing else was left behind.
    fn listing(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn installs_then_second_run_does_nothing() {
        let archive = tarball(&good_items());
        let (url, hits) = serve(Reply::Ok(archive.clone()));
        let root = tempfile::tempdir().unwrap();
        let spec = spec(&url, &archive);
        let target = root.path().join("set-bin");
        assert_eq!(
            fetch(&spec, root.path()).unwrap(),
            Outcome::Installed(target.clone())
        );
        assert_eq!(fs::read(target.join("a.bin")).unwrap(), b"abc");
        assert_eq!(fs::read(target.join("b.bin")).unwrap(), b"12345");
        assert_eq!(listing(root.path()), ["set-bin"]);
        assert_eq!(
            fetch(&spec, root.path()).unwrap(),
            Outcome::AlreadyPresent(target)
        );
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "the second run must not download"
        );
    }

    /// Every failing download leaves the root exactly as it was (empty) and says why.
    #[test]
    fn failures_leave_nothing_behind() {
        let good = tarball(&good_items());
        let mut corrupt = good.clone();
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0xFF;
        let check = |reply: Reply, archive_for_md5: &[u8], expect: &str| {
            let (url, _) = serve(reply);
            let root = tempfile::tempdir().unwrap();
            let err = fetch(&spec(&url, archive_for_md5), root.path()).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(expect), "{expect:?} not in {msg:?}");
            assert!(msg.contains("nothing was installed"), "{msg}");
            assert_eq!(listing(root.path()), Vec::<String>::new(), "{msg}");
        };
        check(Reply::Ok(corrupt), &good, "MD5 mismatch");
        check(Reply::CutShort(good.clone()), &good, "bytes");
        check(Reply::NotFound, &good, "HTTP 404");
        let hostile = |items: Vec<Item>, expect: &str| {
            let archive = tarball(&items);
            check(Reply::Ok(archive.clone()), &archive, expect);
        };
        let mut dotdot = good_items();
        dotdot.push(Item(
            "set-bin/../../evil.bin",
            tar::EntryType::Regular,
            b"x".to_vec(),
        ));
        hostile(dotdot, "outside the target");
        let mut absolute = good_items();
        absolute.push(Item(
            "/tmp/explr-evil.bin",
            tar::EntryType::Regular,
            b"x".to_vec(),
        ));
        hostile(absolute, "outside the target");
        let mut symlink = good_items();
        symlink.push(Item("set-bin/link", tar::EntryType::Symlink, vec![]));
        hostile(symlink, "Symlink");
        let mut hardlink = good_items();
        hardlink.push(Item("set-bin/hard", tar::EntryType::Link, vec![]));
        hostile(hardlink, "Link");
        hostile(
            good_items()[..2]
                .iter()
                .map(|i| Item(i.0, i.1, i.2.clone()))
                .collect(),
            "b.bin is missing",
        );
    }

    #[test]
    fn stale_partial_download_is_removed_and_incomplete_target_refused() {
        let archive = tarball(&good_items());
        let (url, _) = serve(Reply::Ok(archive.clone()));
        let root = tempfile::tempdir().unwrap();
        let stale = root.path().join(".explr-fetch-set-bin-999999");
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join("archive.tar.gz"), b"half").unwrap();
        fetch(&spec(&url, &archive), root.path()).unwrap();
        assert_eq!(listing(root.path()), ["set-bin"]);
        fs::remove_file(root.path().join("set-bin/b.bin")).unwrap();
        let msg = format!(
            "{:#}",
            fetch(&spec(&url, &archive), root.path()).unwrap_err()
        );
        assert!(
            msg.contains("incomplete") && msg.contains("b.bin is missing"),
            "{msg}"
        );
    }
}
