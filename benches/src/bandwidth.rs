//! The memory's streaming-read bandwidth, the ceiling of a decode step (which reads every
//! weight once): measured on 2 MiB pages, as a model's map is read, so that the ceiling is
//! not lowered by TLB misses the model does not pay.

use std::time::Instant;

use rayon::prelude::*;

/// A zeroed buffer on 2 MiB pages where the kernel grants them (`MADV_HUGEPAGE`; with
/// transparent huge pages in `madvise` mode nothing else gets them).
pub struct Huge {
    raw: Vec<u64>,
    /// The first word on a 2 MiB boundary.
    at: usize,
    len: usize,
}

impl Huge {
    const PAGE: usize = 2 << 20;

    /// `len` bytes.
    pub fn new(len: usize) -> Huge {
        let mut raw = vec![0u64; (len + Self::PAGE) / 8];
        let at = raw.as_ptr().align_offset(Self::PAGE);
        // SAFETY: the range lies inside `raw`'s allocation; the advice changes no contents,
        // and a refusal only leaves 4 KiB pages.
        unsafe {
            libc::madvise(raw.as_mut_ptr().add(at).cast(), len, libc::MADV_HUGEPAGE);
        }
        Huge { raw, at, len }
    }

    pub fn words(&self) -> &[u64] {
        &self.raw[self.at..self.at + self.len / 8]
    }

    pub fn bytes(&self) -> &[u8] {
        let words = &self.raw[self.at..self.at + self.len.div_ceil(8)];
        // SAFETY: the same words as plain bytes; any byte pattern is a valid `u8`.
        let b = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) };
        &b[..self.len]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let n = self.len.div_ceil(8);
        let words = &mut self.raw[self.at..self.at + n];
        // SAFETY: as in `bytes`, and the borrow of `self` is exclusive.
        let b = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), n * 8) };
        &mut b[..self.len]
    }
}

/// A buffer far larger than the last-level cache, read end to end by each measurement.
pub struct StreamRead {
    buf: Huge,
}

impl StreamRead {
    /// `mib` MiB, written once so that every page is resident before the first timing.
    pub fn new(mib: usize) -> StreamRead {
        let mut buf = Huge::new(mib << 20);
        for (i, w) in buf.bytes_mut().chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&(i as u64).to_le_bytes());
        }
        StreamRead { buf }
    }

    pub fn bytes(&self) -> usize {
        self.buf.len
    }

    /// GB/s of one read of the whole buffer, split in equal parts over `pool`'s threads.
    /// One sample: on a shared host, interleave samples with what they bound and keep the
    /// best of each.
    pub fn gbs(&self, pool: &rayon::ThreadPool) -> f64 {
        let words = self.buf.words();
        let part = words.len().div_ceil(pool.current_num_threads());
        let t = Instant::now();
        let sum = pool.install(|| {
            words
                .par_chunks(part)
                .map(sum4)
                .reduce(|| 0, u64::wrapping_add)
        });
        std::hint::black_box(sum);
        self.buf.len as f64 / t.elapsed().as_secs_f64() / 1e9
    }
}

/// The wrapping sum of `words` in four independent chains: bound by the loads alone.
fn sum4(words: &[u64]) -> u64 {
    let mut s = [0u64; 4];
    for c in words.chunks_exact(4) {
        for (a, &v) in s.iter_mut().zip(c) {
            *a = a.wrapping_add(v);
        }
    }
    s.iter().fold(0, |a, &b| a.wrapping_add(b))
}
