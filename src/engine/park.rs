//! Parking: a connection between two exchanges waits in the server's poller, with no
//! thread.
//!
//! A handler that calls [`StreamRequest::park`] ends its exchange; the engine then puts
//! the whole request (reader buffer, addresses, state) and its ticket (its place under
//! `max_connections`) in the server's [`Lot`], and arms the socket in the poller (or,
//! where the poller is edge-triggered and the socket was drained, leaves it watched as
//! it is: [`Registration::watches`](crate::net::Registration::watches)). When
//! the poller reports the socket, the loop waiting in it takes the request out and
//! queues it, and whichever serve loop is free runs the next exchange through the
//! dispatch mode, as it runs a new connection ([`super::hub`]).
//!
//! The lot also keeps a timer for the idle deadlines of the parked connections, so that
//! the poller's wait ends at the first one; and it closes when the server stops serving,
//! so that a request which finishes its exchange during a shutdown ends instead of
//! parking where nobody would serve it.
//!
//! The timer is lazy, as Netty's idle handler is: a connection keeps one timer entry,
//! set when it parks with none, and left in place while it runs and parks again. When an
//! entry comes due, the connection is ended if it is still parked past its deadline, set
//! again at its deadline if it is parked with a later one, and dropped if it runs (its
//! next park sets one). A connection that parks thousands of times a minute then costs
//! the ordered set one insert and one removal per idle timeout, not one of each per
//! message, under the lock every loop takes to park; the price is an early wake of the
//! poller now and then: at most once per connection and idle timeout, and once more after
//! a park to send (whose write timeout may be the shorter deadline).

use std::collections::BTreeSet;
use std::io;
use std::time::Instant;

use parking_lot::Mutex;

use crate::handle::Ticket;
use crate::net::Reported;
use crate::request::StreamRequest;

/// The bits of a key that number the place; the rest count its reuses, so that an
/// event of a connection that has ended cannot be taken for its successor's. (On a
/// 64-bit target, 2^32 places and 2^32 reuses; a 32-bit one has 65,536 of each, and a
/// place reused 65,536 times while an event for its first connection is still on its
/// way would be mistaken: not a case met in practice.)
const PLACE_BITS: u32 = usize::BITS / 2;
const PLACE_MASK: usize = (1 << PLACE_BITS) - 1;

/// A parked connection: its request and its place among the running requests.
pub(crate) struct Parked {
    pub(crate) request: Box<StreamRequest>,
    pub(crate) ticket: Ticket,
    pub(super) deadline: Option<Instant>,
    /// When the poller reported it: kept here rather than in the request, so that the
    /// loop that waits in the poller never touches the requests it hands on (each would
    /// be a cache line moved to its core and back to the one that runs it).
    pub(super) ready_at: Option<Instant>,
}

impl Parked {
    pub(crate) fn new(request: Box<StreamRequest>, ticket: Ticket, deadline: Option<Instant>) -> Parked {
        Parked { request, ticket, deadline, ready_at: None }
    }
}

enum Place {
    Free,
    /// A connection that has parked before and is being served now, or is ending.
    Active,
    Parked(Parked),
}

struct Entry {
    /// How many times the place was handed out; part of its key.
    generation: usize,
    place: Place,
    /// When this place's entry in [`Places::idle`] comes due, if it has one: never later
    /// than the idle deadline of the connection while it is parked.
    timer: Option<Instant>,
    /// The poller reported the socket while its connection ran (edge-triggered, it stays
    /// watched): when it parks, the poller is asked to look at the socket again.
    woken: bool,
}

/// A connection in its place in the lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed {
    /// Its idle deadline is the lot's first, which the loop's wait must learn of.
    pub(crate) first_deadline: bool,
    /// The caller must arm the socket in the poller (oneshot, every park; it was not
    /// armed here, under the lot's lock, as an edge-triggered one is).
    pub(crate) arm: bool,
}

/// The server's parked connections.
#[derive(Default)]
pub(crate) struct Lot(Mutex<Places>);

#[derive(Default)]
struct Places {
    entries: Vec<Entry>,
    free: Vec<usize>,
    /// The places' timers, earliest first (see the module's doc: a timer may come due
    /// before its connection's deadline, never after it).
    idle: BTreeSet<(Instant, usize)>,
    /// The loop has stopped and closed its connections: nothing parks until it serves
    /// again.
    closed: bool,
}

impl Places {
    /// The entry a key names, if the key is still its own.
    fn entry(&mut self, key: usize) -> Option<&mut Entry> {
        let entry = self.entries.get_mut(key & PLACE_MASK)?;
        (entry.generation == key >> PLACE_BITS).then_some(entry)
    }

    fn unpark(&mut self, key: usize) -> Option<Parked> {
        let entry = self.entry(key)?;
        if !matches!(entry.place, Place::Parked(_)) {
            return None;
        }
        // Its timer stays: if it parks again by the time the timer comes due, the
        // timer is set again then, at its new deadline.
        let Place::Parked(parked) = std::mem::replace(&mut entry.place, Place::Active) else { unreachable!() };
        Some(parked)
    }
}

impl Lot {
    /// A key for a connection that parks for the first time; it stays the
    /// connection's until [`Lot::release`].
    pub(crate) fn allocate(&self) -> usize {
        let mut places = self.0.lock();
        let index = match places.free.pop() {
            Some(index) => index,
            None => {
                places.entries.push(Entry { generation: 0, place: Place::Free, timer: None, woken: false });
                places.entries.len() - 1
            }
        };
        let entry = &mut places.entries[index];
        entry.generation = (entry.generation + 1) & (usize::MAX >> PLACE_BITS);
        entry.place = Place::Active;
        entry.woken = false;
        index | (entry.generation << PLACE_BITS)
    }

    /// Gives back the key of a connection that has ended.
    pub(crate) fn release(&self, key: usize) {
        let mut places = self.0.lock();
        if let Some(entry) = places.entry(key) {
            entry.place = Place::Free;
            if let Some(timer) = entry.timer.take() {
                places.idle.remove(&(timer, key));
            }
            places.free.push(key & PLACE_MASK);
        }
    }

    /// Parks a connection under its key. Gives the connection back when the loop has
    /// closed, or when `arm_here` failed (with its error).
    ///
    /// `watched`: the poller watches the socket already for what this park waits for,
    /// with nothing left unread ([`Registration::watches`](crate::net::Registration::watches));
    /// the connection must still be armed if the poller reported it while it ran (noted
    /// under this lock, which events are taken under, so that none is lost between).
    ///
    /// Where the socket must be armed: with `arm_here` (an edge-triggered poller), it is
    /// armed here, under this lock, after the connection is in its place. Edge-triggered,
    /// the socket stays watched while the connection runs and parks, so an arm made after
    /// the lock is let go could land after another loop has taken the connection, run
    /// it and armed it for the other direction, and undo that arm; under the lock, no
    /// loop can take it before its arm is made. Without `arm_here` (oneshot), the caller
    /// arms after the lock is let go (`Placed::arm`): a oneshot socket reports nothing
    /// until armed, so nobody takes the connection first, and the lock, which the loop
    /// that waits takes for each batch of events, is not held across a system call per
    /// message.
    pub(crate) fn park(
        &self,
        key: usize,
        parked: Parked,
        watched: bool,
        arm_here: Option<&dyn Fn() -> io::Result<()>>,
    ) -> Result<Placed, (Parked, Option<io::Error>)> {
        let mut places = self.0.lock();
        if places.closed || places.entry(key).is_none() {
            return Err((parked, None));
        }
        let deadline = parked.deadline;
        let entry = places.entry(key).expect("looked at above, under the same lock");
        entry.place = Place::Parked(parked);
        let mut arm = std::mem::take(&mut entry.woken) || !watched;
        if let (true, Some(arm_here)) = (arm, arm_here) {
            if let Err(e) = arm_here() {
                let parked = places.unpark(key).expect("placed above, under the same lock");
                return Err((parked, Some(e)));
            }
            arm = false;
        }
        let Some(deadline) = deadline else { return Ok(Placed { first_deadline: false, arm }) };
        // A timer due by the deadline already: it looks at this connection in time.
        let replaced = match entry.timer {
            Some(timer) if timer <= deadline => return Ok(Placed { first_deadline: false, arm }),
            replaced => replaced,
        };
        entry.timer = Some(deadline);
        if let Some(timer) = replaced {
            places.idle.remove(&(timer, key));
        }
        let first = places.idle.first().is_none_or(|(earliest, _)| deadline < *earliest);
        places.idle.insert((deadline, key));
        Ok(Placed { first_deadline: first, arm })
    }

    /// Takes out a connection, if it is still parked (the socket could not be armed).
    pub(crate) fn take(&self, key: usize) -> Option<Parked> {
        self.0.lock().unpark(key)
    }

    /// Takes out the connections of one wait's events that are still parked, under one
    /// lock (one wait reports hundreds of connections at a time under load, and every
    /// loop that parks takes the same lock). An event for a connection that runs is
    /// noted for its next park, and so is urgent data for one taken out (its next park
    /// arms: [`Reported::urgent`]).
    pub(crate) fn take_each(&self, reported: impl IntoIterator<Item = Reported>, mut f: impl FnMut(Parked)) {
        let mut places = self.0.lock();
        for Reported { key, urgent } in reported {
            match places.unpark(key) {
                Some(parked) => {
                    if urgent {
                        if let Some(entry) = places.entry(key) {
                            entry.woken = true;
                        }
                    }
                    f(parked)
                }
                None => {
                    if let Some(entry) = places.entry(key).filter(|entry| matches!(entry.place, Place::Active)) {
                        entry.woken = true;
                    }
                }
            }
        }
    }

    /// When the first timer comes due: the first idle deadline of a parked connection,
    /// or earlier (a timer left by a connection that has parked again since).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.0.lock().idle.first().map(|(deadline, _)| *deadline)
    }

    /// Takes out the connections whose idle deadline has passed, and sets the timers
    /// that came due for the others again.
    pub(crate) fn expired(&self, now: Instant) -> Vec<Parked> {
        let mut places = self.0.lock();
        let mut out = Vec::new();
        let mut again = Vec::new();
        while let Some(&(timer, key)) = places.idle.first() {
            if timer > now {
                break;
            }
            places.idle.pop_first();
            // Every timer is a live key's: `release` removes a place's timer.
            let Some(entry) = places.entry(key) else { continue };
            entry.timer = None;
            let deadline = match &entry.place {
                Place::Parked(parked) => parked.deadline,
                // Running: its next park sets a timer.
                Place::Active | Place::Free => None,
            };
            match deadline {
                Some(deadline) if deadline <= now => out.extend(places.unpark(key)),
                // Parked again since the timer was set, with a later deadline.
                Some(deadline) => {
                    entry.timer = Some(deadline);
                    again.push((deadline, key));
                }
                None => {}
            }
        }
        places.idle.extend(again);
        out
    }

    /// Whether the server has stopped serving: nothing parks.
    pub(crate) fn is_closed(&self) -> bool {
        self.0.lock().closed
    }

    /// Lets connections park again: the loop serves.
    pub(crate) fn open(&self) {
        self.0.lock().closed = false;
    }

    /// The loop stops: takes out every parked connection, and makes those that try to
    /// park from now on end instead.
    pub(crate) fn close(&self) -> Vec<Parked> {
        let mut places = self.0.lock();
        places.closed = true;
        let keys: Vec<usize> = places
            .entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| matches!(entry.place, Place::Parked(_)))
            .map(|(index, entry)| index | (entry.generation << PLACE_BITS))
            .collect();
        keys.into_iter().filter_map(|key| places.unpark(key)).collect()
    }
}
