//! Connections by token, with tokens that are never reused for another socket.
//!
//! What it is: a vector of slots and a free list (O(1) insert, lookup and remove), where
//! each token is `generation << 32 | index`. Removing a connection bumps its slot's
//! generation, so the next socket in that slot gets a different token.
//!
//! Why: mio may still hold events for a socket we just closed (later in the same batch of
//! events), and a reply handle may name a connection long gone. With plain indexes, those
//! would be delivered to whatever new socket took the slot; with generations they name a
//! token that no longer exists, and the loop ignores them.
//!
//! What it is not: it knows nothing of sockets or mio's registry; the loop registers and
//! deregisters. Invariant: a token names at most one value in the slab's whole life.

use mio::Token;

// A token packs a 32-bit generation above a 32-bit index.
const _: () = assert!(usize::BITS >= 64, "tokens need a 64-bit usize");

/// Tokens at or above this are the loop's own (listener, waker, signals).
pub const FIRST_RESERVED: usize = usize::MAX - 16;

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub fn new() -> Slab<T> {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` and returns its token.
    pub fn insert(&mut self, value: T) -> Token {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.value = Some(value);
        self.len += 1;
        token_of(slot.generation, index)
    }

    pub fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        self.slot(token)?.1.value.as_mut()
    }

    pub fn remove(&mut self, token: Token) -> Option<T> {
        let (index, slot) = self.slot(token)?;
        let value = slot.value.take()?;
        // Skip the generation whose tokens would reach into the reserved range.
        slot.generation = match slot.generation.wrapping_add(1) {
            u32::MAX => 0,
            g => g,
        };
        self.free.push(index as u32);
        self.len -= 1;
        Some(value)
    }

    /// The slot a token names, if the token is still current (not stale, not reserved).
    fn slot(&mut self, token: Token) -> Option<(usize, &mut Slot<T>)> {
        let (generation, index) = split(token)?;
        let slot = self.slots.get_mut(index)?;
        (slot.generation == generation).then_some((index, slot))
    }

    /// The tokens of every stored value (a snapshot, so the caller may remove while
    /// walking it).
    pub fn tokens(&self) -> Vec<Token> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.value.is_some())
            .map(|(index, slot)| token_of(slot.generation, index as u32))
            .collect()
    }
}

fn token_of(generation: u32, index: u32) -> Token {
    Token(((generation as usize) << 32) | index as usize)
}

fn split(token: Token) -> Option<(u32, usize)> {
    if token.0 >= FIRST_RESERVED {
        return None;
    }
    Some(((token.0 >> 32) as u32, token.0 & 0xffff_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_never_reuses_a_token_for_a_new_value() {
        let mut slab = Slab::new();
        let a = slab.insert("a");
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert("b");
        assert_ne!(a, b, "same slot, new generation");
        assert_eq!(slab.get_mut(a), None, "stale token finds nothing");
        assert_eq!(slab.get_mut(b), Some(&mut "b"));
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.len(), 1);
    }

    #[test]
    fn slab_ignores_reserved_tokens() {
        let mut slab: Slab<u8> = Slab::new();
        slab.insert(1);
        assert_eq!(slab.get_mut(Token(usize::MAX)), None);
    }
}
