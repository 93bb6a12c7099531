//! Writes that bypass the page cache (`O_DIRECT`), for the files of a cache fill.
//!
//! A cache fill writes a whole study (a gigabyte and more) once, and the retrieve that fills
//! it passes each instance on from memory: nothing reads the files back soon. Written
//! through the page cache, every byte is copied into freshly allocated cache pages, and on
//! this project's 2-vCPU machines that copy was a quarter of a gateway's CPU on a remote
//! fetch (`copy_folio_from_iter_atomic` 25 % of both gateways' samples in `benches/xca.sh`,
//! 2026-12-06). Written with `O_DIRECT` the disk takes the bytes from our buffer: 2,000
//! files of 0.5 MB cost 0.31-0.32 s of system CPU against 0.91-1.02 s buffered, in no more
//! wall time (docs/performance.md). The one-pass sync at the end of the fetch
//! (`BlobStore::sync_blocking`) then has only metadata left to flush.
//!
//! `O_DIRECT` wants the buffer address, the file offset and the length aligned to the
//! device's logical block size; [`ALIGN`] (4096) covers every disk in use. The pieces of
//! an instance are gathered in one aligned buffer of [`BUFFER`] bytes, written whenever it
//! is full; the last block is padded with zeros and the file cut back to its length. A
//! file system that refuses `O_DIRECT` (at the open, or at the first write) gets ordinary
//! writes instead.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;

/// Alignment of buffer address, offset and length for `O_DIRECT`.
pub const ALIGN: usize = 4096;
/// Bytes gathered before a write: a whole typical CT or MR instance in one write.
pub const BUFFER: usize = 1 << 20;

thread_local! {
    /// One spare buffer per thread: the fill's thread writes one instance after another
    /// and reuses it, instead of faulting in a fresh megabyte per instance.
    static SPARE: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The open flag to add for direct writes (0 where the platform has none).
pub fn open_flag() -> i32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        rustix::fs::OFlags::DIRECT.bits() as i32
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        0
    }
}

/// The gathering buffer of one file opened with `O_DIRECT`.
#[derive(Debug)]
pub struct DirectWrites {
    /// [`BUFFER`] + [`ALIGN`] bytes; the aligned window starts at `start`.
    buf: Vec<u8>,
    start: usize,
    /// Bytes gathered in the window.
    filled: usize,
    /// Bytes written to the file so far (a multiple of [`ALIGN`]).
    written: u64,
}

/// What became of a write: still direct, or the file system refused `O_DIRECT` and the
/// file now takes ordinary writes at its cursor (everything gathered is written).
#[derive(Debug, PartialEq, Eq)]
pub enum Direct {
    Still,
    FellBack,
}

impl DirectWrites {
    pub fn new() -> Self {
        let buf = SPARE
            .with(|spare| spare.borrow_mut().take())
            .unwrap_or_else(|| vec![0u8; BUFFER + ALIGN]);
        let start = buf.as_ptr().align_offset(ALIGN);
        debug_assert!(start + BUFFER <= buf.len());
        Self {
            buf,
            start,
            filled: 0,
            written: 0,
        }
    }

    /// Append `bytes`, writing each full window.
    pub fn write(&mut self, file: &File, mut bytes: &[u8]) -> std::io::Result<Direct> {
        while !bytes.is_empty() {
            let take = (BUFFER - self.filled).min(bytes.len());
            let at = self.start + self.filled;
            self.buf[at..at + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == BUFFER && self.write_window(file, BUFFER)? == Direct::FellBack {
                // The rest goes to the file's cursor, after what was just written.
                use std::io::Write;
                let mut f = file;
                f.write_all(bytes)?;
                return Ok(Direct::FellBack);
            }
        }
        Ok(Direct::Still)
    }

    /// Write what is gathered, the last block padded with zeros, and cut the file to
    /// `len` (every byte appended).
    pub fn finish(mut self, file: &File, len: u64) -> std::io::Result<()> {
        if self.filled > 0 {
            let padded = self.filled.div_ceil(ALIGN) * ALIGN;
            let at = self.start + self.filled;
            self.buf[at..self.start + padded].fill(0);
            if self.write_window(file, padded)? == Direct::FellBack {
                // Written without padding: the length is right already.
                return Ok(());
            }
        }
        if self.written != len {
            file.set_len(len)?;
        }
        Ok(())
    }

    /// Write the first `n` bytes of the window at the file's end so far. On `EINVAL`
    /// (`O_DIRECT` refused, or an alignment this file system does not take), clear
    /// `O_DIRECT`, write the gathered bytes (unpadded) and move the cursor after them.
    fn write_window(&mut self, file: &File, n: usize) -> std::io::Result<Direct> {
        let window = &self.buf[self.start..self.start + n];
        match file.write_all_at(window, self.written) {
            Ok(()) => {
                self.written += n as u64;
                self.filled = 0;
                Ok(Direct::Still)
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                clear_direct(file)?;
                let gathered = &self.buf[self.start..self.start + self.filled];
                file.write_all_at(gathered, self.written)?;
                self.written += self.filled as u64;
                self.filled = 0;
                let mut f = file;
                f.seek(SeekFrom::Start(self.written))?;
                Ok(Direct::FellBack)
            }
            Err(e) => Err(e),
        }
    }
}

impl Default for DirectWrites {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for DirectWrites {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if !buf.is_empty() {
            SPARE.with(|spare| *spare.borrow_mut() = Some(buf));
        }
    }
}

/// Ordinary writes from now on for `file`.
fn clear_direct(file: &File) -> std::io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let flags = rustix::fs::fcntl_getfl(file)?;
        rustix::fs::fcntl_setfl(file, flags - rustix::fs::OFlags::DIRECT)?;
    }
    let _ = file;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    fn open(path: &std::path::Path, direct: bool) -> File {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(if direct { open_flag() } else { 0 })
            .open(path)
            .unwrap()
    }

    /// Every length around the block and window edges comes back byte for byte, whether
    /// the file takes `O_DIRECT` or not (the fallback writes the same bytes).
    #[test]
    fn direct_files_hold_exactly_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * BUFFER + 5000).map(|i| (i * 7 % 251) as u8).collect();
        let lengths = [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            BUFFER - 1,
            BUFFER,
            BUFFER + 1,
            2 * BUFFER + 4097,
            data.len(),
        ];
        for (n, len) in lengths.into_iter().enumerate() {
            for direct in [true, false] {
                let path = dir.path().join(format!("{n}-{direct}"));
                let file = open(&path, direct);
                let mut writes = DirectWrites::new();
                let mut fell_back = false;
                // Pieces of uneven sizes, as PDVs and MTOM chunks come.
                for piece in data[..len].chunks(12_345) {
                    if fell_back {
                        use std::io::Write;
                        (&file).write_all(piece).unwrap();
                    } else if writes.write(&file, piece).unwrap() == Direct::FellBack {
                        fell_back = true;
                    }
                }
                if !fell_back {
                    writes.finish(&file, len as u64).unwrap();
                }
                drop(file);
                assert_eq!(std::fs::read(&path).unwrap(), &data[..len], "{len} {direct}");
            }
        }
    }
}
