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
use crate::server::{BackgroundServer, Server};
use crate::transport::{Tcp, Udp};
#[cfg(unix)]
use crate::transport::{UnixDatagram, UnixStream};

macro_rules! threading_server {
    ($(#[$attr:meta])* $name:ident, $python:literal, $transport:ty, $request:ty, $addr:ident: $($bound:tt)+) => {
        #[doc = concat!("Python's `", $python, "`: a server with [`Threading`] dispatch.")]
        ///
        /// A type, so `-> Result<Self, socketserver::Error>` can name it: it is the plain
        /// server with the mode set, and dereferences to it for every method
        /// (`serve_forever`, `local_addr`, `shutdown`, ...). `builder` returns the plain
        /// server's builder with the mode set, whose `bind` returns the plain server
        /// ([`into_inner`](Self::into_inner) converts this one).
        $(#[$attr])*
        #[derive(Debug)]
        pub struct $name(Server<$transport>);

        impl std::ops::Deref for $name {
            type Target = Server<$transport>;

            fn deref(&self) -> &Server<$transport> {
                &self.0
            }
        }

        impl From<$name> for Server<$transport> {
            fn from(server: $name) -> Server<$transport> {
                server.0
            }
        }

        impl $name {
            /// The plain server.
            pub fn into_inner(self) -> Server<$transport> {
                self.0
            }

            /// Serves on a thread of its own; see
            /// [`Server::serve_in_background`].
            ///
            /// # Errors
            /// As [`Server::serve_in_background`].
            pub fn serve_in_background(self) -> Result<BackgroundServer<$transport>> {
                self.0.serve_in_background()
            }

            /// Binds with [`Threading`] dispatch; see the plain server's `bind`.
            ///
            /// # Errors
            /// As the plain server's `bind`.
            pub fn bind<A, F>($addr: A, handler: F) -> Result<Self>
            where
                A: $($bound)+,
                F: Fn(&mut $request) -> HandlerResult + Send + Sync + 'static,
            {
                Self::builder($addr).bind(handler).map($name)
            }

            /// Binds with [`Threading`] dispatch and any [`RequestHandler`]; see the
            /// plain server's `bind_handler`.
            ///
            /// # Errors
            /// As the plain server's `bind`.
            pub fn bind_handler<A, H>($addr: A, handler: H) -> Result<Self>
            where
                A: $($bound)+,
                H: RequestHandler<$request>,
            {
                Self::builder($addr).bind_handler(handler).map($name)
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
