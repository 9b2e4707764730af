//! A multiset of small numbers (ClusterIP offsets, node ports, load-balancer frontend offsets) that
//! answers "the lowest number nobody holds" without looking at every holder: a bitmap of held
//! numbers with a summary bit per full word, so a search reads at most a few dozen words whatever
//! the number of holders.

use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Occupancy {
    size: u32,
    /// How many holders each held number has (a number may be held twice when a write got it past
    /// the checks; it is free again only once every holder let go).
    counts: HashMap<u32, u32>,
    /// Bit `n % 64` of word `n / 64` is set while `n` is held.
    words: Vec<u64>,
    /// Bit `w % 64` of summary word `w / 64` is set while word `w` is full.
    full: Vec<u64>,
}

impl Occupancy {
    /// Numbers `0..size`; numbers outside are counted but never handed out.
    pub fn new(size: u32) -> Self {
        let words = size.div_ceil(64) as usize;
        Occupancy {
            size,
            counts: HashMap::new(),
            words: vec![0; words],
            full: vec![0; words.div_ceil(64)],
        }
    }

    /// How many holders `n` has.
    pub fn count(&self, n: u32) -> u32 {
        self.counts.get(&n).copied().unwrap_or(0)
    }

    pub fn insert(&mut self, n: u32) {
        let count = self.counts.entry(n).or_insert(0);
        *count += 1;
        if *count == 1 && n < self.size {
            self.set(n, true);
        }
    }

    pub fn remove(&mut self, n: u32) {
        let Some(count) = self.counts.get_mut(&n) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.counts.remove(&n);
            if n < self.size {
                self.set(n, false);
            }
        }
    }

    fn set(&mut self, n: u32, held: bool) {
        let w = (n / 64) as usize;
        let bit = 1u64 << (n % 64);
        if held {
            self.words[w] |= bit;
        } else {
            self.words[w] &= !bit;
        }
        let summary_bit = 1u64 << (w % 64);
        if self.words[w] == u64::MAX {
            self.full[w / 64] |= summary_bit;
        } else {
            self.full[w / 64] &= !summary_bit;
        }
    }

    /// The lowest number in `from..=to` that nobody holds.
    pub fn first_free(&self, from: u32, to: u32) -> Option<u32> {
        let to = to.min(self.size.checked_sub(1)?);
        if from > to {
            return None;
        }
        let mut w = (from / 64) as usize;
        // Bits below `from` in its word count as held.
        let mut word = self.words[w] | ((1u64 << (from % 64)) - 1);
        loop {
            if word != u64::MAX {
                let n = w as u32 * 64 + (!word).trailing_zeros();
                return (n <= to).then_some(n);
            }
            w = self.next_not_full(w + 1)?;
            if w as u32 * 64 > to {
                return None;
            }
            word = self.words[w];
        }
    }

    /// The first word at or after `w` that is not full.
    fn next_not_full(&self, w: usize) -> Option<usize> {
        if w >= self.words.len() {
            return None;
        }
        let mut s = w / 64;
        let mut summary = self.full[s] | ((1u64 << (w % 64)) - 1);
        loop {
            if summary != u64::MAX {
                let found = s * 64 + (!summary).trailing_zeros() as usize;
                return (found < self.words.len()).then_some(found);
            }
            s += 1;
            summary = *self.full.get(s)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_lowest_free_number_in_range() {
        let mut o = Occupancy::new(10_000);
        assert_eq!(o.first_free(10, 20), Some(10));
        for n in 0..5_000 {
            o.insert(n);
        }
        assert_eq!(o.first_free(10, 9_999), Some(5_000));
        assert_eq!(o.first_free(10, 4_999), None);
        o.remove(4_000);
        assert_eq!(o.first_free(10, 9_999), Some(4_000));
        assert_eq!(o.first_free(4_001, 9_999), Some(5_000));
        assert_eq!(o.first_free(9_999, 20_000), Some(9_999));
        assert_eq!(o.first_free(10_000, 20_000), None);
    }

    #[test]
    fn a_number_held_twice_is_free_once_both_let_go() {
        let mut o = Occupancy::new(128);
        o.insert(0);
        o.insert(0);
        o.remove(0);
        assert_eq!((o.count(0), o.first_free(0, 127)), (1, Some(1)));
        o.remove(0);
        assert_eq!((o.count(0), o.first_free(0, 127)), (0, Some(0)));
        o.remove(0);
        assert_eq!(o.count(0), 0);
    }

    #[test]
    fn full_words_are_skipped_and_the_end_of_the_space_is_respected() {
        let mut o = Occupancy::new(64 * 64 * 3 + 5);
        for n in 0..64 * 64 * 3 + 4 {
            o.insert(n);
        }
        assert_eq!(o.first_free(0, u32::MAX), Some(64 * 64 * 3 + 4));
        o.insert(64 * 64 * 3 + 4);
        assert_eq!(o.first_free(0, u32::MAX), None);
        o.remove(64 * 65 + 7);
        assert_eq!(o.first_free(0, u32::MAX), Some(64 * 65 + 7));
        assert_eq!(o.first_free(64 * 65 + 8, u32::MAX), None);
        // Numbers outside the space are counted, never handed out.
        o.insert(1 << 20);
        assert_eq!(o.count(1 << 20), 1);
    }
}
