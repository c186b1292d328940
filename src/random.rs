//! Random bytes from the operating system's generator, read 4 KiB at a time per thread.
//!
//! Every nonce, session id, DelegationID and bootstrap token comes from here. Asking the
//! kernel for each one cost a `getrandom` system call per value, about 30 per delegation in
//! the lab (strace -c, `demo --devices 1000`); handing out bytes from a per-thread buffer the
//! kernel filled keeps the same source and makes that one call per 4 KiB. Bytes are handed
//! out once: each is zeroed in the buffer as it leaves.

use std::cell::RefCell;

const BUFFER: usize = 4096;

struct Pool {
    bytes: Box<[u8; BUFFER]>,
    /// Bytes not yet handed out start here; `BUFFER` when the pool is spent.
    next: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool {
        bytes: Box::new([0; BUFFER]),
        next: BUFFER,
    });
}

/// Fills `out` with random bytes. Fails only when the operating system's generator does.
pub fn fill(out: &mut [u8]) -> Result<(), getrandom::Error> {
    if out.len() > BUFFER / 4 {
        return getrandom::fill(out);
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if BUFFER - pool.next < out.len() {
            getrandom::fill(&mut pool.bytes[..])?;
            pool.next = 0;
        }
        let from = pool.next;
        let taken = &mut pool.bytes[from..from + out.len()];
        out.copy_from_slice(taken);
        taken.fill(0);
        pool.next = from + out.len();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_differ_and_cross_refills() {
        let mut seen = std::collections::HashSet::new();
        // 1,000 values of 16 bytes: four refills of the pool.
        for _ in 0..1000 {
            let mut b = [0u8; 16];
            fill(&mut b).unwrap();
            assert!(seen.insert(b), "a 16-byte value came out twice");
        }
        let mut big = vec![0u8; BUFFER];
        fill(&mut big).unwrap();
        assert!(big.iter().any(|&b| b != 0));
    }

    #[test]
    fn threads_get_different_bytes() {
        let a = std::thread::spawn(|| {
            let mut b = [0u8; 32];
            fill(&mut b).unwrap();
            b
        })
        .join()
        .unwrap();
        let mut b = [0u8; 32];
        fill(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
