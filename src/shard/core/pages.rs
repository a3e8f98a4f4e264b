//! Per-client storage of a shard that grows one page at a time and never moves what it holds:
//! the clients (`Slab`, in `State`) and the event loop's sockets (`Table`).
//!
//! A `Vec` that doubles holds up to twice the room its elements need, and the buffers it leaves
//! behind at each doubling may stay resident in the allocator: at 10,000 clients on mimalloc,
//! a doubling slab of clients and a doubling table of sockets held about 330 bytes per client
//! more than the clients themselves. Pages of [`PAGE`] entries leave at most one page per table
//! unused, and are never copied.
//!
//! # Invariants
//!
//! - Every page holds exactly [`PAGE`] entries, so index `i` lives at `pages[i / PAGE][i % PAGE]`.
//! - `Slab`: every vacant index is on the free list exactly once, and `len` counts the
//!   occupied ones.

/// Entries per page: at most one page is unused per table (55 KiB of clients per shard).
pub(crate) const PAGE: usize = 256;

/// A page of `PAGE` entries, each made by `fill`.
fn page<E>(fill: impl FnMut(usize) -> E) -> Box<[E]> {
    (0..PAGE).map(fill).collect()
}

/// Values by index, absent where empty; grows a page at a time to reach an index.
#[derive(Debug)]
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) struct Table<T> {
    /// The pages, in index order.
    pages: Vec<Box<[Option<T>]>>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table { pages: Vec::new() }
    }
}

#[cfg_attr(not(unix), allow(dead_code))]
impl<T> Table<T> {
    /// The value at `i`.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.pages.get_mut(i / PAGE)?.get_mut(i % PAGE)?.as_mut()
    }

    /// Puts `value` at `i`, growing to reach it; returns what was there.
    pub(crate) fn insert(&mut self, i: usize, value: T) -> Option<T> {
        while self.pages.len() <= i / PAGE {
            self.pages.push(page(|_| None));
        }
        self.pages
            .get_mut(i / PAGE)
            .and_then(|p| p.get_mut(i % PAGE))
            .and_then(|entry| entry.replace(value))
    }

    /// Takes the value at `i`.
    pub(crate) fn remove(&mut self, i: usize) -> Option<T> {
        self.pages.get_mut(i / PAGE)?.get_mut(i % PAGE)?.take()
    }

    /// The indices that hold a value, in order (a walk over every page).
    pub(crate) fn indices(&self) -> Vec<usize> {
        self.pages
            .iter()
            .flat_map(|p| p.iter())
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|_| i))
            .collect()
    }
}

/// One entry of a [`Slab`].
#[derive(Debug)]
enum Entry<T> {
    /// Free; the next free index (or `NONE`).
    Vacant(usize),
    /// Holds a value.
    Occupied(T),
}

/// The end of the free list.
const NONE: usize = usize::MAX;

/// A slab: each value gets an index, free again once it is removed (the last freed first).
#[derive(Debug)]
pub(crate) struct Slab<T> {
    /// The pages, in index order.
    pages: Vec<Box<[Entry<T>]>>,
    /// The first free index, or `NONE`.
    free: usize,
    /// Occupied entries.
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            pages: Vec::new(),
            free: NONE,
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores `value`; returns its index.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        if self.free == NONE {
            // A new page, its entries on the free list in index order, before the old list.
            let base = self.pages.len() * PAGE;
            let rest = self.free;
            self.pages.push(page(|k| {
                Entry::Vacant(if k + 1 < PAGE { base + k + 1 } else { rest })
            }));
            self.free = base;
        }
        let i = self.free;
        let Some(entry) = self.entry_mut(i) else {
            // Unreachable by the invariants: the free list names only existing entries.
            return i;
        };
        if let Entry::Vacant(next) = *entry {
            *entry = Entry::Occupied(value);
            self.free = next;
            self.len += 1;
        }
        i
    }

    /// The value at `i`.
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        match self.pages.get(i / PAGE)?.get(i % PAGE)? {
            Entry::Occupied(value) => Some(value),
            Entry::Vacant(_) => None,
        }
    }

    /// The value at `i`.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        match self.entry_mut(i)? {
            Entry::Occupied(value) => Some(value),
            Entry::Vacant(_) => None,
        }
    }

    /// Removes and returns the value at `i`, if there is one.
    pub(crate) fn try_remove(&mut self, i: usize) -> Option<T> {
        let free = self.free;
        let entry = self.entry_mut(i)?;
        if matches!(entry, Entry::Vacant(_)) {
            return None;
        }
        match std::mem::replace(entry, Entry::Vacant(free)) {
            Entry::Occupied(value) => {
                self.free = i;
                self.len -= 1;
                Some(value)
            }
            Entry::Vacant(_) => None,
        }
    }

    /// Occupied entries.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// The values with their indices, in index order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.pages
            .iter()
            .flat_map(|p| p.iter())
            .enumerate()
            .filter_map(|(i, e)| match e {
                Entry::Occupied(value) => Some((i, value)),
                Entry::Vacant(_) => None,
            })
    }

    /// The values with their indices, in index order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.pages
            .iter_mut()
            .flat_map(|p| p.iter_mut())
            .enumerate()
            .filter_map(|(i, e)| match e {
                Entry::Occupied(value) => Some((i, value)),
                Entry::Vacant(_) => None,
            })
    }

    fn entry_mut(&mut self, i: usize) -> Option<&mut Entry<T>> {
        self.pages.get_mut(i / PAGE)?.get_mut(i % PAGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    proptest::proptest! {
        /// The slab behaves as a map from the indices it hands out, never hands out an index
        /// in use, and reuses freed ones before it grows.
        #[test]
        fn the_slab_is_a_map_of_the_indices_it_hands_out(
            ops in proptest::collection::vec((proptest::bool::ANY, 0usize..600), 1..2000),
        ) {
            let mut slab = Slab::default();
            let mut model = BTreeMap::new();
            let mut peak = 0;
            for (n, (insert, pick)) in ops.into_iter().enumerate() {
                if insert || model.is_empty() {
                    let i = slab.insert(n);
                    proptest::prop_assert!(model.insert(i, n).is_none(), "index {i} in use");
                } else {
                    let i = *model.keys().nth(pick % model.len()).unwrap_or(&0);
                    proptest::prop_assert_eq!(slab.try_remove(i), model.remove(&i));
                    proptest::prop_assert_eq!(slab.try_remove(i), None);
                }
                peak = peak.max(model.len());
                proptest::prop_assert_eq!(slab.len(), model.len());
                // A page is added only when every entry is taken: never one more than needed.
                proptest::prop_assert!(slab.pages.len() * PAGE < peak + PAGE);
            }
            let held: Vec<(usize, usize)> = slab.iter().map(|(i, &v)| (i, v)).collect();
            let expected: Vec<(usize, usize)> = model.iter().map(|(&i, &v)| (i, v)).collect();
            proptest::prop_assert_eq!(&held, &expected);
            for (i, v) in slab.iter_mut() {
                proptest::prop_assert_eq!(model.get(&i), Some(&*v));
            }
            for (&i, &v) in &model {
                proptest::prop_assert_eq!(slab.get(i), Some(&v));
                proptest::prop_assert_eq!(slab.get_mut(i).map(|v| *v), Some(v));
            }
        }
    }

    #[test]
    fn a_table_grows_to_reach_an_index_and_gives_values_back() {
        let mut table = Table::default();
        assert_eq!(table.insert(3 * PAGE + 5, "a"), None);
        assert_eq!(table.pages.len(), 4);
        assert_eq!(table.get_mut(3 * PAGE + 5), Some(&mut "a"));
        assert_eq!(table.get_mut(5), None);
        assert_eq!(table.insert(3 * PAGE + 5, "b"), Some("a"));
        assert_eq!(table.remove(3 * PAGE + 5), Some("b"));
        assert_eq!(table.remove(3 * PAGE + 5), None);
        assert_eq!(table.remove(99 * PAGE), None);
    }
}
