//! Line-oriented output files (`dedup -o`, `chunk -o`, `--report`),
//! compressed as their name says (`.gz`, `.zst`/`.zstd`, else plain) and
//! written atomically: to `NAME.tmp`, renamed into place only by
//! [`OutputFile::finish`]; dropped unfinished, the temporary file is removed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TokenmillError};
use crate::input::Compression;
use crate::shard::{sync_dir, WriteBack};

enum Sink {
    Plain(BufWriter<WriteBack>),
    Gzip(flate2::write::GzEncoder<BufWriter<WriteBack>>),
    Zstd(zstd::Encoder<'static, BufWriter<WriteBack>>),
}

/// An output file being written.
pub struct OutputFile {
    path: PathBuf,
    tmp: PathBuf,
    sink: Option<Sink>,
}

/// Compression chosen from an output name.
pub fn compression_of(path: &Path) -> Compression {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.ends_with(".gz") {
        Compression::Gzip
    } else if name.ends_with(".zst") || name.ends_with(".zstd") {
        Compression::Zstd
    } else {
        Compression::None
    }
}

impl OutputFile {
    /// Starts `path`; an existing file is an error unless `overwrite`.
    pub fn create(path: &Path, overwrite: bool) -> Result<OutputFile> {
        if path.exists() && !overwrite {
            return Err(TokenmillError::Invalid(format!(
                "{} already exists; pass overwrite=True to replace it",
                path.display()
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| TokenmillError::io(dir, e))?;
        }
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        let tmp = path.with_file_name(name);
        let file = File::create(&tmp).map_err(|e| TokenmillError::io(&tmp, e))?;
        let buf = BufWriter::with_capacity(1 << 20, WriteBack::new(file));
        let sink = match compression_of(path) {
            Compression::None => Sink::Plain(buf),
            Compression::Gzip => Sink::Gzip(flate2::write::GzEncoder::new(
                buf,
                flate2::Compression::default(),
            )),
            Compression::Zstd => {
                Sink::Zstd(zstd::Encoder::new(buf, 3).map_err(|e| TokenmillError::io(&tmp, e))?)
            }
        };
        Ok(OutputFile {
            path: path.to_path_buf(),
            tmp,
            sink: Some(sink),
        })
    }

    /// Appends `line` and a newline.
    pub fn write_line(&mut self, line: &[u8]) -> Result<()> {
        let w: &mut dyn Write = match self.sink.as_mut().expect("not finished") {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w,
            Sink::Zstd(w) => w,
        };
        w.write_all(line)
            .and_then(|_| w.write_all(b"\n"))
            .map_err(|e| TokenmillError::io(&self.tmp, e))
    }

    /// Flushes, fsyncs and renames the file into place.
    pub fn finish(mut self) -> Result<()> {
        let tmp = self.tmp.clone();
        let io = |e| TokenmillError::io(&tmp, e);
        let buf = match self.sink.take().expect("finished once") {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w.finish().map_err(io)?,
            Sink::Zstd(w) => w.finish().map_err(io)?,
        };
        let file = buf
            .into_inner()
            .map_err(|e| io(e.into_error()))?
            .into_file();
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| TokenmillError::io(&self.path, e))?;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")));
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if self.sink.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn compressed_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.jsonl", "a.jsonl.gz", "a.jsonl.zst"] {
            let path = dir.path().join(name);
            let mut f = OutputFile::create(&path, false).unwrap();
            f.write_line(b"{\"text\": \"\xe4\xb8\xad\"}").unwrap();
            assert!(!path.exists());
            f.finish().unwrap();
            let raw = std::fs::read(&path).unwrap();
            let mut text = Vec::new();
            match compression_of(&path) {
                Compression::None => text = raw,
                Compression::Gzip => {
                    flate2::read::GzDecoder::new(&raw[..])
                        .read_to_end(&mut text)
                        .unwrap();
                }
                Compression::Zstd => text = zstd::decode_all(&raw[..]).unwrap(),
            }
            assert_eq!(text, "{\"text\": \"中\"}\n".as_bytes());
            assert!(OutputFile::create(&path, false).is_err());
        }
        let path = dir.path().join("b.jsonl");
        drop(OutputFile::create(&path, false).unwrap());
        assert!(!path.exists() && !dir.path().join("b.jsonl.tmp").exists());
    }
}
