//! A copy-on-write view of a database file for redb: reads come from the file, writes stay in
//! memory and vanish with the view.
//!
//! redb cannot open a file read-only after an unclean shutdown, because the file first needs a
//! repair that writes to it. Opening the file through this view runs that repair in memory, so
//! akstore can read the schema version of such a file and reject it without changing a byte.
//! The view takes none of redb's locks, and instead holds a shared lock on the whole file while
//! it is open, which keeps a writer that takes file locks (another akstore or redb process) from
//! opening the file meanwhile.

use std::collections::HashMap;
use std::io;
use std::ops::Bound;
use std::sync::Mutex;

use redb::StorageBackend;

/// Size of the blocks a write copies out of the file. redb writes whole pages of 4 KiB or more,
/// so one block per page keeps the copies small.
const BLOCK_BYTES: u64 = 4096;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct ScratchView<B> {
    file: B,
    state: Mutex<ViewState>,
}

#[derive(Debug)]
struct ViewState {
    /// Length of the storage as redb has set it.
    len: u64,
    /// Bytes of the file at or past this offset read as zeros, because the view was shortened
    /// below it and grown again since.
    file_visible_len: u64,
    /// Blocks written through the view, by block index.
    blocks: HashMap<u64, Box<[u8]>>,
}

impl<B: StorageBackend> ScratchView<B> {
    /// Wraps `file`, which the view only reads, and takes a shared lock on all of it. Returns
    /// `Ok(None)` when another process holds a conflicting lock.
    pub(crate) fn new(file: B) -> io::Result<Option<ScratchView<B>>> {
        let len = file.len().map_err(backend_io_error)?;
        match file.try_lock_shared_range(Bound::Unbounded, Bound::Unbounded) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            // A backend without locks is still read correctly by this process.
            Err(redb::BackendError::Unsupported) => {}
            Err(error) => return Err(backend_io_error(error)),
        }
        Ok(Some(ScratchView {
            file,
            state: Mutex::new(ViewState {
                len,
                file_visible_len: len,
                blocks: HashMap::new(),
            }),
        }))
    }
}

impl<B: StorageBackend> StorageBackend for ScratchView<B> {
    fn len(&self) -> Result<u64, redb::BackendError> {
        Ok(self.state()?.len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), redb::BackendError> {
        let state = self.state()?;
        let end = offset + out.len() as u64;
        if end > state.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {offset}..{end} past the end at {}", state.len),
            )
            .into());
        }
        let mut position = offset;
        while position < end {
            let block = position / BLOCK_BYTES;
            let block_end = ((block + 1) * BLOCK_BYTES).min(end);
            let target = &mut out[(position - offset) as usize..(block_end - offset) as usize];
            match state.blocks.get(&block) {
                Some(bytes) => {
                    let start = (position - block * BLOCK_BYTES) as usize;
                    target.copy_from_slice(&bytes[start..start + target.len()]);
                }
                None => self.read_file(&state, position, target)?,
            }
            position = block_end;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), redb::BackendError> {
        let mut state = self.state()?;
        if len < state.len {
            state.file_visible_len = state.file_visible_len.min(len);
            state.blocks.retain(|&block, _| block * BLOCK_BYTES < len);
            // Bytes past the new end in the last kept block must read as zeros once the view
            // grows again.
            let tail_block = len / BLOCK_BYTES;
            let tail_start = (len - tail_block * BLOCK_BYTES) as usize;
            if let Some(bytes) = state.blocks.get_mut(&tail_block) {
                bytes[tail_start..].fill(0);
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), redb::BackendError> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), redb::BackendError> {
        let mut state = self.state()?;
        let end = offset + data.len() as u64;
        let mut position = offset;
        while position < end {
            let block = position / BLOCK_BYTES;
            let block_end = ((block + 1) * BLOCK_BYTES).min(end);
            if !state.blocks.contains_key(&block) {
                let mut bytes = vec![0; BLOCK_BYTES as usize].into_boxed_slice();
                let readable_end = ((block + 1) * BLOCK_BYTES).min(state.len);
                let readable = readable_end.saturating_sub(block * BLOCK_BYTES) as usize;
                self.read_file(&state, block * BLOCK_BYTES, &mut bytes[..readable])?;
                state.blocks.insert(block, bytes);
            }
            let bytes = state
                .blocks
                .get_mut(&block)
                .expect("the block was inserted above");
            let start = (position - block * BLOCK_BYTES) as usize;
            let source = &data[(position - offset) as usize..(block_end - offset) as usize];
            bytes[start..start + source.len()].copy_from_slice(source);
            position = block_end;
        }
        state.len = state.len.max(end);
        Ok(())
    }

    fn close(&self) -> Result<(), redb::BackendError> {
        self.file.close()
    }
}

impl<B: StorageBackend> ScratchView<B> {
    fn state(&self) -> Result<std::sync::MutexGuard<'_, ViewState>, redb::BackendError> {
        self.state
            .lock()
            .map_err(|_| io::Error::other("a thread panicked while using the scratch view").into())
    }

    /// Reads `out` from the file at `offset`, with zeros for the bytes the file does not show.
    fn read_file(
        &self,
        state: &ViewState,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), redb::BackendError> {
        let from_file = state
            .file_visible_len
            .saturating_sub(offset)
            .min(out.len() as u64) as usize;
        if from_file > 0 {
            self.file.read(offset, &mut out[..from_file])?;
        }
        out[from_file..].fill(0);
        Ok(())
    }
}

fn backend_io_error(error: redb::BackendError) -> io::Error {
    match error {
        redb::BackendError::Io(error) => error,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use redb::backends::FileBackend;

    fn view_of(content: &[u8]) -> (tempfile::TempDir, ScratchView<FileBackend>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, content).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let view = ScratchView::new(FileBackend::new(file)).unwrap().unwrap();
        (dir, view)
    }

    fn read_all(view: &ScratchView<FileBackend>) -> Vec<u8> {
        let mut out = vec![0; view.len().unwrap() as usize];
        view.read(0, &mut out).unwrap();
        out
    }

    #[test]
    fn writes_stay_in_memory() {
        let original: Vec<u8> = (0..3 * BLOCK_BYTES).map(|i| (i % 251) as u8).collect();
        let (dir, view) = view_of(&original);

        view.write(BLOCK_BYTES - 2, &[9; 4]).unwrap();
        let mut expected = original.clone();
        expected[BLOCK_BYTES as usize - 2..BLOCK_BYTES as usize + 2].fill(9);
        assert_eq!(read_all(&view), expected);

        view.close().unwrap();
        assert_eq!(std::fs::read(dir.path().join("file")).unwrap(), original);
    }

    #[test]
    fn shrink_then_grow_reads_zeros() {
        let original = vec![7u8; 2 * BLOCK_BYTES as usize];
        let (_dir, view) = view_of(&original);
        view.write(10, &[1, 2, 3]).unwrap();

        view.set_len(11).unwrap();
        view.set_len(2 * BLOCK_BYTES + 5).unwrap();
        let content = read_all(&view);
        assert_eq!(&content[..10], &[7; 10]);
        assert_eq!(content[10], 1);
        assert!(content[11..].iter().all(|&byte| byte == 0));
    }

    #[test]
    fn write_past_the_end_extends() {
        let (_dir, view) = view_of(&[5; 10]);
        view.write(BLOCK_BYTES + 1, &[8]).unwrap();
        assert_eq!(view.len().unwrap(), BLOCK_BYTES + 2);
        let content = read_all(&view);
        assert_eq!(&content[..10], &[5; 10]);
        assert!(
            content[10..BLOCK_BYTES as usize + 1]
                .iter()
                .all(|&byte| byte == 0)
        );
        assert_eq!(content[BLOCK_BYTES as usize + 1], 8);

        let mut past_end = [0; 2];
        assert!(view.read(BLOCK_BYTES + 1, &mut past_end).is_err());
    }
}
