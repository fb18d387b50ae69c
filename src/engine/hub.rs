//! Shared readiness: the server's free serve loops take turns to wait in its one
//! poller, and share the work it reports.
//!
//! The design is the leader/followers pattern of event-driven servers (Schmidt's, as in
//! ACE, and how `polling` expects to be used: one waiter per poller). At most one free
//! loop, the *leader*, waits in the poller; the other free loops, the *followers*, wait
//! on a condition variable for work. When the poller reports parked connections that
//! became readable (or whose idle time ran out), the leader puts them in the ready
//! queue, gives up the lead and wakes as many followers as there are connections; each
//! loop then takes one from the queue and runs its exchange, and the first loop that
//! finds the queue empty and nobody leading becomes the next leader. A new connection
//! the leader accepts it runs itself, after giving up the lead, so that another free
//! loop waits in the poller meanwhile.
//!
//! Why this and not a poller per loop (what parking did first): a loop busy with one
//! exchange then held every connection parked on its poller, so one slow client stalled
//! them all, and their idle deadlines passed while their requests waited. Here a busy
//! loop holds only its own exchange: whatever is ready goes to whichever loop is free.
//! Why not work stealing: with a handful of threads and one poller a single queue under
//! one lock is as fast (it is taken once per event) and far simpler, and the one
//! leader's batches of events already spread connections over the loops.

use std::collections::VecDeque;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::park::{Lot, Parked};

/// The server's poller and what its loops share beside it.
pub(crate) type Home = crate::net::Station<Hub>;

/// What a parked connection taken out of the lot comes back for.
pub(crate) enum Ready {
    /// The poller reported it (its next bytes, its end, or an error), or it yields its
    /// turn with a message already buffered: run its next exchange.
    Exchange(Parked),
    /// Its idle time ran out with nothing to read: end it (`finish`).
    End(Parked),
}

impl Ready {
    pub(crate) fn into_parked(self) -> Parked {
        match self {
            Ready::Exchange(parked) | Ready::End(parked) => parked,
        }
    }
}

/// The parked connections, and the turns of the loops that serve them.
#[derive(Default)]
pub(crate) struct Hub {
    lot: Lot,
    turns: Mutex<Turns>,
    /// Followers wait here for work, or for the lead.
    work: Condvar,
}

#[derive(Default)]
struct Turns {
    ready: VecDeque<Ready>,
    /// A loop waits in the poller, or is about to.
    leading: bool,
    /// An empty buffer for the next leader's batch of events: the queue's own when a
    /// batch became the queue whole (see [`Hub::unlead`]). The two buffers trade
    /// places, and each keeps the capacity of the largest batch it held (72 bytes per
    /// connection reported at once).
    spare: Vec<Ready>,
    /// Loops waiting on `work`.
    followers: usize,
}

/// What a free serve loop does next.
pub(crate) enum Turn {
    /// Run this connection's exchange (or end).
    Run(Ready),
    /// Wait in the poller, and accept: this loop leads until it calls [`Hub::unlead`].
    Lead(Leadership),
    /// Woken with nothing to do (a shutdown, the timer): look at the server's state.
    Woken,
}

/// What a loop that takes the lead is handed.
pub(crate) struct Leadership {
    /// Connections wait in the queue that this loop may not run yet.
    pub(crate) work_waiting: bool,
    /// An empty buffer for what the poller reports, to give to [`Hub::unlead`].
    pub(crate) batch: Vec<Ready>,
}

impl Hub {
    pub(crate) fn lot(&self) -> &Lot {
        &self.lot
    }

    /// The next turn of a free loop: work from the queue if it `may_run` some (asked only
    /// when the queue has some, and then the first is taken: `may_run` says yes by
    /// counting it as running), else the
    /// lead if nobody has it, else a wait on the followers' condition variable (until
    /// work, the lead, a wake, or `until`). `stopping` is looked at under the queue's
    /// lock, which a shutdown takes to wake the followers: a loop either sees the stop
    /// or is already waiting when the wake comes.
    pub(crate) fn turn(&self, may_run: &dyn Fn() -> bool, until: Option<Instant>, stopping: &dyn Fn() -> bool) -> Turn {
        let mut turns = self.turns.lock();
        if stopping() {
            return Turn::Woken;
        }
        // Asked only when there is work: it takes the lock of the running requests.
        let waiting = !turns.ready.is_empty();
        if waiting && may_run() {
            // `may_run` counted the connection as running: it is taken, under the lock
            // that kept the queue from emptying since the look.
            return Turn::Run(turns.ready.pop_front().expect("not empty, under the same lock"));
        }
        if !turns.leading {
            turns.leading = true;
            return Turn::Lead(Leadership { work_waiting: waiting, batch: std::mem::take(&mut turns.spare) });
        }
        turns.followers += 1;
        match until {
            Some(until) => drop(self.work.wait_until(&mut turns, until)),
            None => self.work.wait(&mut turns),
        }
        turns.followers -= 1;
        Turn::Woken
    }

    /// Gives up the lead, queueing what the poller reported, and wakes a follower for
    /// each (or one to lead, when there is nothing). Gives the connections back when the
    /// server has stopped serving: the caller ends them.
    pub(crate) fn unlead(&self, ready: Vec<Ready>) -> Vec<Ready> {
        let mut turns = self.turns.lock();
        turns.leading = false;
        if self.lot.is_closed() {
            return ready;
        }
        let added = ready.len();
        if turns.ready.is_empty() {
            // The batch becomes the queue, and the queue's buffer the next batch's: no
            // copy of a batch (hundreds of connections at a time under load), and no
            // buffer grown again at each lead.
            let empty = std::mem::replace(&mut turns.ready, VecDeque::from(ready));
            turns.spare = Vec::from(empty);
        } else {
            turns.ready.extend(ready);
        }
        let wake = added.max(1).min(turns.followers);
        drop(turns);
        for _ in 0..wake {
            self.work.notify_one();
        }
        Vec::new()
    }

    /// Queues a connection that yields its turn with work left. Gives it back when the
    /// server has stopped serving. `Ok(false)`: no follower was waiting to take it, so
    /// the caller wakes the loop that leads (the only loop of a thread per request
    /// waits in the poller, and would not look at the queue until its next event).
    pub(crate) fn requeue(&self, ready: Ready) -> Result<bool, Ready> {
        let mut turns = self.turns.lock();
        if self.lot.is_closed() {
            return Err(ready);
        }
        turns.ready.push_back(ready);
        let followed = turns.followers > 0;
        drop(turns);
        if followed {
            self.work.notify_one();
        }
        Ok(followed)
    }

    /// Wakes every follower (a shutdown; the lead's holder is woken through the poller).
    pub(crate) fn wake_followers(&self) {
        let _turns = self.turns.lock();
        self.work.notify_all();
    }

    /// Takes every connection out of the queue (first) and the lot (second), and makes
    /// those that try to park from now on end instead: the server stops serving.
    pub(crate) fn close(&self) -> (Vec<Parked>, Vec<Parked>) {
        // Under the queue's lock, so that nothing is queued once the lot is closed.
        let mut turns = self.turns.lock();
        let queued = std::mem::take(&mut turns.ready).into_iter().map(Ready::into_parked).collect();
        (queued, self.lot.close())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{mpsc, Arc};
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::handle::{Control, ServerHandle};
    use crate::net::{tcp_pair, test_client, Connection, Reported};
    use crate::request::StreamRequest;

    const LIMIT: Duration = Duration::from_secs(10);

    /// A parked connection on loopback, named by what its client sent (the client has
    /// left since: its bytes wait to be read, then the end of the stream).
    fn parked(control: &Arc<Control>, name: &str) -> Parked {
        let (server, mut client) = tcp_pair();
        std::io::Write::write_all(&mut client, name.as_bytes()).unwrap();
        let connection = Arc::new(Connection::Tcp(server));
        let request =
            StreamRequest::new(connection, test_client(), ServerHandle::new(control.clone()), 64, 0, (None, None));
        let ticket = control.track(None, None, None).expect("no limit");
        Parked::new(Box::new(request), ticket, None)
    }

    fn name(ready: Ready) -> String {
        let mut parked = ready.into_parked();
        String::from_utf8(std::io::BufRead::fill_buf(parked.request.reader_mut()).unwrap().to_vec()).unwrap()
    }

    /// Runs a follower on a thread until it gets work; what it got.
    fn follower(hub: &Arc<Hub>) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel();
        let hub = hub.clone();
        thread::spawn(move || {
            let until = Instant::now() + LIMIT;
            loop {
                match hub.turn(&|| true, Some(until), &|| false) {
                    Turn::Run(ready) => return tx.send(name(ready)).unwrap(),
                    Turn::Woken if Instant::now() < until => continue,
                    Turn::Woken => return,
                    // Nobody else leads: give it back, as a loop that found nothing would.
                    Turn::Lead(_) => drop(hub.unlead(Vec::new())),
                }
            }
        });
        rx
    }

    #[test]
    fn one_loop_leads_and_the_work_it_finds_goes_to_the_free_followers() {
        let control = Arc::new(Control::detached(test_client()));
        let hub = Arc::new(Hub::default());
        assert!(matches!(hub.turn(&|| true, None, &|| false), Turn::Lead(_)), "the first free loop leads");
        let (a, b) = (follower(&hub), follower(&hub));
        let late = hub.unlead(vec![Ready::Exchange(parked(&control, "one")), Ready::Exchange(parked(&control, "two"))]);
        assert!(late.is_empty());
        let mut got = vec![a.recv_timeout(LIMIT).unwrap(), b.recv_timeout(LIMIT).unwrap()];
        got.sort();
        assert_eq!(got, ["one", "two"], "each follower takes one connection");
    }

    #[test]
    fn a_loop_that_may_not_run_work_leads_instead_of_taking_it() {
        let control = Arc::new(Control::detached(test_client()));
        let hub = Hub::default();
        assert!(hub.requeue(Ready::Exchange(parked(&control, "queued"))).is_ok());
        assert!(
            matches!(hub.turn(&|| false, None, &|| false), Turn::Lead(_)),
            "at its limit, a loop waits in the poller"
        );
        let _ = hub.unlead(Vec::new());
        match hub.turn(&|| true, None, &|| false) {
            Turn::Run(ready) => assert_eq!(name(ready), "queued"),
            _ => panic!("the queued connection is run once the loop may"),
        }
    }

    #[test]
    fn closing_takes_every_connection_and_refuses_more() {
        let control = Arc::new(Control::detached(test_client()));
        let hub = Hub::default();
        hub.requeue(Ready::Exchange(parked(&control, "queued"))).ok().unwrap();
        let key = hub.lot().allocate();
        hub.lot().park(key, parked(&control, "parked"), false, None).ok().unwrap();
        let (queued, parked_ones) = hub.close();
        assert_eq!((queued.len(), parked_ones.len()), (1, 1));
        assert!(hub.requeue(Ready::Exchange(parked(&control, "late"))).is_err(), "nothing queues once closed");
        assert!(matches!(hub.turn(&|| true, None, &|| false), Turn::Lead(_)));
        assert_eq!(hub.unlead(vec![Ready::End(parked(&control, "reported"))]).len(), 1, "given back to end");
    }

    #[test]
    fn a_key_of_an_ended_connection_never_names_its_successor() {
        let control = Arc::new(Control::detached(test_client()));
        let lot = Lot::default();
        let first = lot.allocate();
        lot.park(first, parked(&control, "first"), false, None).ok().unwrap();
        assert!(lot.take(first).is_some());
        lot.release(first);
        let second = lot.allocate();
        assert_ne!(first, second, "the place is reused under a new key");
        lot.park(second, parked(&control, "second"), false, None).ok().unwrap();
        assert!(lot.take(first).is_none(), "a late event for the first connection finds nothing");
        assert!(lot.take(second).is_some());
    }

    #[test]
    fn a_connection_reported_while_it_runs_is_armed_again_when_it_parks() {
        let control = Arc::new(Control::detached(test_client()));
        let lot = Lot::default();
        let key = lot.allocate();
        assert!(lot.park(key, parked(&control, "c"), false, None).ok().expect("open").arm, "not watched yet: armed");
        let running = lot.take(key).expect("parked");
        assert!(
            !lot.park(key, running, true, None).ok().expect("open").arm,
            "watched, nothing reported meanwhile: no arm"
        );
        let mut took = 0;
        lot.take_each([Reported::plain(key)], |_| took += 1);
        assert_eq!(took, 1, "an event for a parked connection takes it out");
        // Its next bytes arrive while it runs: the event finds it running.
        lot.take_each([Reported::plain(key)], |_| took += 1);
        assert_eq!(took, 1, "a running connection is not taken twice");
        let running = parked(&control, "c");
        assert!(
            lot.park(key, running, true, None).ok().expect("open").arm,
            "reported while it ran: armed, so the poller looks again"
        );
        let running = lot.take(key).expect("parked");
        assert!(!lot.park(key, running, true, None).ok().expect("open").arm, "the event is forgotten once armed");
        // An event for a key whose connection ended does not reach its successor.
        let gone = lot.take(key).expect("parked");
        drop(gone);
        lot.release(key);
        lot.take_each([Reported::plain(key)], |_| took += 1);
        let next = lot.allocate();
        assert!(
            !lot.park(next, parked(&control, "d"), true, None).ok().expect("open").arm,
            "a new connection starts with no event"
        );
    }

    #[test]
    fn a_connection_reported_with_urgent_data_is_armed_again_at_its_next_park_only() {
        let control = Arc::new(Control::detached(test_client()));
        let lot = Lot::default();
        let key = lot.allocate();
        lot.park(key, parked(&control, "c"), false, None).ok().expect("open");
        let mut taken = Vec::new();
        lot.take_each([Reported { key, urgent: true }], |parked| taken.push(parked));
        let running = taken.pop().expect("an event for a parked connection takes it out");
        assert!(
            lot.park(key, running, true, None).ok().expect("open").arm,
            "urgent data: a short read may have stopped at its mark, so the park arms"
        );
        lot.take_each([Reported::plain(key)], |parked| taken.push(parked));
        let running = taken.pop().expect("parked");
        assert!(!lot.park(key, running, true, None).ok().expect("open").arm, "no urgent data since: no arm");
    }

    #[test]
    fn an_edge_triggered_arm_is_made_in_place_under_the_lot_lock_and_a_failed_one_takes_the_connection_back() {
        let control = Arc::new(Control::detached(test_client()));
        let lot = Lot::default();
        let key = lot.allocate();
        let arms = std::cell::Cell::new(0);
        let arm_ok = || {
            arms.set(arms.get() + 1);
            Ok(())
        };
        let placed = lot.park(key, parked(&control, "c"), false, Some(&arm_ok)).ok().expect("open");
        assert_eq!((placed.arm, arms.get()), (false, 1), "not watched yet: armed here, nothing left to the caller");
        let running = lot.take(key).expect("parked");
        lot.park(key, running, true, Some(&arm_ok)).ok().expect("open");
        assert_eq!(arms.get(), 1, "watched and nothing reported: no arm");
        let running = lot.take(key).expect("parked");
        lot.take_each([Reported::plain(key)], |_| unreachable!("it runs"));
        let broken = || Err(io::Error::other("modify failed"));
        match lot.park(key, running, true, Some(&broken)) {
            Err((_, Some(e))) => assert_eq!(e.to_string(), "modify failed"),
            _ => panic!("reported while it ran: armed, and the failed arm gives the connection back"),
        }
        assert!(lot.take(key).is_none(), "not left parked, where no event would come for it");
    }

    #[test]
    fn idle_deadlines_expire_in_order_and_taken_connections_never_expire() {
        let control = Arc::new(Control::detached(test_client()));
        let lot = Lot::default();
        let now = Instant::now();
        let keys: Vec<usize> = (0..3).map(|_| lot.allocate()).collect();
        for (n, key) in keys.iter().enumerate() {
            let mut p = parked(&control, &format!("c{n}"));
            p.deadline = Some(now + Duration::from_secs(n as u64 + 1));
            lot.park(*key, p, false, None).ok().unwrap();
        }
        assert_eq!(lot.next_deadline(), Some(now + Duration::from_secs(1)));
        assert!(lot.take(keys[0]).is_some(), "reported readable: taken, so it cannot expire");
        let expired = lot.expired(now + Duration::from_millis(2500));
        assert_eq!(expired.len(), 1, "only the second has passed its deadline");
        assert_eq!(lot.next_deadline(), Some(now + Duration::from_secs(3)));
    }

    #[test]
    fn a_connection_that_parks_again_keeps_one_timer_and_expires_at_its_last_deadline() {
        let control = Arc::new(Control::detached(test_client()));
        let lot = Lot::default();
        let now = Instant::now();
        let at = |secs: u64| now + Duration::from_secs(secs);
        let key = lot.allocate();
        let mut first = parked(&control, "c");
        first.deadline = Some(at(1));
        assert_eq!(
            lot.park(key, first, false, None).map(|p| p.first_deadline).ok(),
            Some(true),
            "the lot's first deadline: the poller's wait learns of it"
        );
        // It runs, and parks again with a later deadline: the timer stays where it was.
        let mut again = lot.take(key).expect("parked");
        again.deadline = Some(at(5));
        assert_eq!(
            lot.park(key, again, false, None).map(|p| p.first_deadline).ok(),
            Some(false),
            "no new timer: the one due at 1 s looks at it in time"
        );
        assert_eq!(lot.next_deadline(), Some(at(1)));
        assert!(lot.expired(at(2)).is_empty(), "its deadline is 5 s now: not ended at 2 s");
        assert_eq!(lot.next_deadline(), Some(at(5)), "the timer is set again at its deadline");
        assert_eq!(lot.expired(at(5)).len(), 1, "ended at its last deadline");
        assert_eq!(lot.next_deadline(), None);
        // A deadline earlier than the timer (a park to send, under a shorter write timeout)
        // moves the timer.
        let mut late = parked(&control, "d");
        late.deadline = Some(at(9));
        let key = lot.allocate();
        lot.park(key, late, false, None).ok().unwrap();
        let mut early = lot.take(key).expect("parked");
        early.deadline = Some(at(7));
        assert_eq!(lot.park(key, early, false, None).map(|p| p.first_deadline).ok(), Some(true));
        assert_eq!(lot.next_deadline(), Some(at(7)));
        // A connection that ends takes its timer with it: nothing wakes the poller.
        assert!(lot.take(key).is_some());
        lot.release(key);
        assert_eq!(lot.next_deadline(), None, "no timer left behind by an ended connection");
    }
}
