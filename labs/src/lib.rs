//! The course's labs (see `labs/README.md`): each module is one lab, and the file in
//! `src/` is yours to complete. `cargo test -p labs --test lab_NAME` grades it over
//! real sockets.
//!
//! With the `solution` feature, the reference solutions in `solutions/` are built in
//! place of the files in `src/` (CI grades them; a student never turns it on).

#[cfg(not(feature = "solution"))]
pub mod web;
#[cfg(feature = "solution")]
#[path = "../solutions/web.rs"]
pub mod web;

#[cfg(not(feature = "solution"))]
pub mod pinger;
#[cfg(feature = "solution")]
#[path = "../solutions/pinger.rs"]
pub mod pinger;

#[cfg(not(feature = "solution"))]
pub mod chat;
#[cfg(feature = "solution")]
#[path = "../solutions/chat.rs"]
pub mod chat;

#[cfg(not(feature = "solution"))]
pub mod kv;
#[cfg(feature = "solution")]
#[path = "../solutions/kv.rs"]
pub mod kv;
