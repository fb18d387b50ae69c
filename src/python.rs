//! Python's ready-made threading servers, under their Python names.

use std::fmt;
use std::net::ToSocketAddrs;
#[cfg(unix)]
use std::path::Path;

use crate::builder::Builder;
use crate::dispatch::Threading;
use crate::error::Result;
use crate::handler::{HandlerResult, RequestHandler};
use crate::request::{DatagramRequest, StreamRequest};
use crate::server::Server;
use crate::transport::{Tcp, Udp};
#[cfg(unix)]
use crate::transport::{UnixDatagram, UnixStream};

macro_rules! threading_server {
    ($(#[$attr:meta])* $name:ident, $python:literal, $transport:ty, $request:ty, $addr:ident: $($bound:tt)+) => {
        #[doc = concat!("Python's `", $python, "`: a server with [`Threading`] dispatch.")]
        ///
        /// `bind` and `builder` return the plain server type with the mode already set;
        /// there is no separate type, as the mode is a value, not a mix-in class.
        $(#[$attr])*
        #[derive(Debug)]
        pub enum $name {}

        impl $name {
            /// Binds with [`Threading`] dispatch; see the plain server's `bind`.
            ///
            /// # Errors
            /// As the plain server's `bind`.
            pub fn bind<A, F>($addr: A, handler: F) -> Result<Server<$transport>>
            where
                A: $($bound)+,
                F: Fn(&mut $request) -> HandlerResult + Send + Sync + 'static,
            {
                Self::builder($addr).bind(handler)
            }

            /// Binds with [`Threading`] dispatch and any [`RequestHandler`]; see the
            /// plain server's `bind_handler`.
            ///
            /// # Errors
            /// As the plain server's `bind`.
            pub fn bind_handler<A, H>($addr: A, handler: H) -> Result<Server<$transport>>
            where
                A: $($bound)+,
                H: RequestHandler<$request>,
            {
                Self::builder($addr).bind_handler(handler)
            }

            /// A builder with [`Threading`] dispatch already set.
            pub fn builder<A: $($bound)+>($addr: A) -> Builder<$transport> {
                Server::<$transport>::builder($addr).dispatch(Threading::new())
            }
        }
    };
}

threading_server!(#[doc(alias = "ThreadingTCPServer")] ThreadingTcpServer, "ThreadingTCPServer", Tcp, StreamRequest, addr: ToSocketAddrs + fmt::Debug);
threading_server!(#[doc(alias = "ThreadingUDPServer")] ThreadingUdpServer, "ThreadingUDPServer", Udp, DatagramRequest, addr: ToSocketAddrs + fmt::Debug);

/// The Unix ones, Unix only.
#[cfg(unix)]
mod unix_servers {
    use super::*;

    threading_server!(#[cfg_attr(docsrs, doc(cfg(unix)))] ThreadingUnixStreamServer, "ThreadingUnixStreamServer", UnixStream, StreamRequest, path: AsRef<Path>);
    threading_server!(#[cfg_attr(docsrs, doc(cfg(unix)))] ThreadingUnixDatagramServer, "ThreadingUnixDatagramServer", UnixDatagram, DatagramRequest, path: AsRef<Path>);
}

#[cfg(unix)]
pub use unix_servers::{ThreadingUnixDatagramServer, ThreadingUnixStreamServer};
