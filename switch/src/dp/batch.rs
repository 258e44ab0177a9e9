//! A batch of frames received from one port, processed together.

use crate::wire::VnetHdr;

/// Frames per batch: large enough to amortise syscalls, small enough to stay in cache.
pub const BATCH_SIZE: usize = 64;
/// Free bytes in front of every frame, so a tag (or, later, a tunnel header) can be
/// pushed without moving the payload.
pub const HEADROOM: usize = 128;
/// Largest frame a buffer holds: a 64 KB GSO super-frame plus its L2 header.
pub const FRAME_CAP: usize = 65536 + 64;

#[derive(Debug, Clone, Copy, Default)]
struct Desc {
    off: u32,
    len: u32,
    vnet: VnetHdr,
}

/// Up to [`BATCH_SIZE`] frames, each in its own preallocated buffer. Allocated once
/// per worker; receiving and processing never allocate.
pub struct Batch {
    bufs: Vec<Box<[u8]>>,
    desc: [Desc; BATCH_SIZE],
    len: usize,
    /// Per-frame ingress port, when one receive call serves several ports (a VXLAN
    /// socket shared by the remote VTEPs of one port); `None`: the polled port.
    origin: [Option<u32>; BATCH_SIZE],
    mixed: bool,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            bufs: (0..BATCH_SIZE)
                .map(|_| vec![0u8; HEADROOM + FRAME_CAP].into_boxed_slice())
                .collect(),
            desc: [Desc::default(); BATCH_SIZE],
            len: 0,
            origin: [None; BATCH_SIZE],
            mixed: false,
        }
    }

    #[inline]
    pub fn clear(&mut self) {
        if self.mixed {
            self.origin = [None; BATCH_SIZE];
            self.mixed = false;
        }
        self.len = 0;
    }

    /// Attribute frame `i` to port `port` rather than the polled one.
    #[inline]
    pub fn set_origin(&mut self, i: usize, port: u32) {
        if i < BATCH_SIZE {
            self.origin[i] = Some(port);
            self.mixed = true;
        }
    }

    /// The port frame `i` came from, if not the polled one.
    #[inline]
    pub fn origin(&self, i: usize) -> Option<u32> {
        if self.mixed {
            self.origin[i]
        } else {
            None
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == BATCH_SIZE
    }

    /// The bytes of frame `i`.
    #[inline]
    pub fn frame(&self, i: usize) -> &[u8] {
        let d = self.desc[i];
        &self.bufs[i][d.off as usize..(d.off + d.len) as usize]
    }

    /// The bytes of frame `i`, writable (in-place rewrites: MACs, TTL, NAT).
    #[inline]
    pub fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        let d = self.desc[i];
        &mut self.bufs[i][d.off as usize..(d.off + d.len) as usize]
    }

    /// Offload state of frame `i` (GSO, partial checksum).
    #[inline]
    pub fn vnet(&self, i: usize) -> VnetHdr {
        self.desc[i].vnet
    }

    /// Copy `frame` into the next free slot. False when the batch is full or the frame
    /// is larger than [`FRAME_CAP`].
    pub fn push_copy(&mut self, frame: &[u8]) -> bool {
        if self.is_full() || frame.len() > FRAME_CAP {
            return false;
        }
        let i = self.len;
        self.bufs[i][HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        self.desc[i] = Desc {
            off: HEADROOM as u32,
            len: frame.len() as u32,
            vnet: VnetHdr::default(),
        };
        self.len += 1;
        true
    }

    /// The whole buffers of the free slots, for ports that receive several frames in
    /// one call. Fill them from [`HEADROOM`] on, then call [`Batch::commit`] once per
    /// filled slot, in order.
    #[inline]
    pub fn free_bufs(&mut self) -> &mut [Box<[u8]>] {
        &mut self.bufs[self.len..]
    }

    /// Drop the first `n` bytes of frame `i` (a header the receive path consumed); the
    /// offload offsets move with the frame's start.
    pub fn strip_front(&mut self, i: usize, n: usize) {
        if i >= self.len || n > self.desc[i].len as usize {
            return;
        }
        let d = &mut self.desc[i];
        d.off += n as u32;
        d.len -= n as u32;
        d.vnet = d.vnet.shifted(-(n as i32));
    }

    /// Replace the offload state of frame `i`.
    pub fn set_vnet(&mut self, i: usize, vnet: VnetHdr) {
        if i < self.len {
            self.desc[i].vnet = vnet;
        }
    }

    /// Remove frame `i`; the frames after it move down (buffers swapped, not copied).
    pub fn remove(&mut self, i: usize) {
        if i >= self.len {
            return;
        }
        for j in i..self.len - 1 {
            self.bufs.swap(j, j + 1);
            self.desc[j] = self.desc[j + 1];
            self.origin[j] = self.origin[j + 1];
        }
        self.len -= 1;
        self.origin[self.len] = None;
    }

    /// Commit the next free slot as a frame at `off..off + len` of its buffer.
    #[inline]
    pub fn commit(&mut self, off: usize, len: usize, vnet: VnetHdr) {
        debug_assert!(off + len <= HEADROOM + FRAME_CAP);
        if self.is_full() {
            return;
        }
        self.desc[self.len] = Desc {
            off: off as u32,
            len: len as u32,
            vnet,
        };
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_read_back() {
        let mut b = Batch::new();
        assert!(b.push_copy(&[1, 2, 3]));
        assert_eq!(b.frame(0), &[1, 2, 3]);
        assert!(!b.push_copy(&vec![0u8; FRAME_CAP + 1]));
        for _ in 1..BATCH_SIZE {
            assert!(b.push_copy(&[9]));
        }
        assert!(b.is_full());
        assert!(!b.push_copy(&[9]));
        b.clear();
        assert!(b.is_empty());
    }
}
