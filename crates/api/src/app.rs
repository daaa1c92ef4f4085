//! One running instance with a server of its own ([`Application`]): a [`Newspaper`] served at
//! the root of an actix-web server, plus `/metrics` on an address of its own when asked.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer};

use crate::service::{Newspaper, Routes, StartupError};
use crate::settings::Settings;

/// One running instance: the HTTP server plus its background tasks.
pub struct Application {
    port: u16,
    server: Server,
    /// `/metrics` on an address of its own, when `NEWSPAPER_METRICS_BIND` says so.
    metrics_server: Option<(u16, Server)>,
    handle: ApplicationHandle,
    newspaper: Newspaper,
}

/// Stops an [`Application`] gracefully from elsewhere (signal handler, test).
#[derive(Clone)]
pub struct ApplicationHandle {
    routes: Routes,
    server: ServerHandle,
}

impl ApplicationHandle {
    /// Closes every WebSocket with 1001, then stops accepting and finishes in-flight requests.
    pub async fn shutdown(&self) {
        let state = self.routes.state();
        crate::service::shutdown_streams(&state.realtime, &state.layer).await;
        self.server.stop(true).await;
    }

    /// Stops at once, like a crash would: no close frames, no lease release.
    pub async fn abort(&self) {
        self.server.stop(false).await;
    }
}

impl Application {
    /// Starts a [`Newspaper`], binds its listener (and the metrics one) and serves its routes
    /// at the root. Serve with [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        if settings.debug && !settings.bind.ip().is_loopback() {
            tracing::warn!(
                bind = %settings.bind,
                "debug mode on a public address: password-reset tokens are in responses"
            );
        }
        let newspaper = Newspaper::start(settings.clone()).await?;
        let routes = newspaper.routes();
        let listener = bind_listener(settings.bind)?;
        let port = listener.local_addr()?.port();
        let app_routes = routes.clone();
        let mut server = HttpServer::new(move || App::new().service(app_routes.scope("")))
            // Before `listen`: the listener copies the connect hook when it is added.
            .on_connect({
                let send_buffer = settings.socket_send_buffer_bytes;
                move |connection, _| tune_socket(connection, send_buffer)
            })
            .listen(listener)?
            .max_connections(settings.max_connections_per_worker)
            .disable_signals()
            .shutdown_timeout(5);
        if let Some(workers) = settings.workers {
            server = server.workers(workers.max(1));
        }
        let server = server.run();
        let metrics_server = match settings.metrics_bind {
            Some(address) => {
                let listener = bind_listener(address)?;
                let metrics_port = listener.local_addr()?.port();
                tracing::info!(address = %listener.local_addr()?, "metrics listening");
                let metrics_routes = routes.clone();
                let server =
                    HttpServer::new(move || App::new().service(metrics_routes.metrics_only()))
                        .listen(listener)?
                        .workers(1)
                        .disable_signals()
                        .run();
                Some((metrics_port, server))
            }
            None => None,
        };
        tracing::info!(
            instance = %newspaper.instance(),
            address = %settings.bind.ip(),
            port,
            "listening"
        );
        let handle = ApplicationHandle { routes, server: server.handle() };
        Ok(Self { port, server, metrics_server, handle, newspaper })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port `/metrics` is served on when it has an address of its own.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    /// A handle to stop this instance.
    pub fn handle(&self) -> ApplicationHandle {
        self.handle.clone()
    }

    /// Serves until stopped, then stops the background tasks and the layer.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics_server.map(|(_, server)| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let result = self.server.await;
        if let Some((handle, running)) = metrics {
            handle.stop(true).await;
            let _ = running.await;
        }
        self.newspaper.stop().await;
        result
    }
}

/// Binds with a deep accept queue: the standard library's 128 drops connections when thousands
/// of clients reconnect at once (after a restart, say).
fn bind_listener(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Detects dead or never-reading peers at the TCP level: keepalive for idle connections, and a
/// user timeout so that a client which stops reading cannot pin buffers forever.
fn tune_socket(connection: &dyn std::any::Any, send_buffer: Option<usize>) {
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let socket = socket2::SockRef::from(stream);
        if let Some(bytes) = send_buffer {
            let _ = socket.set_send_buffer_size(bytes);
        }
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(10));
        let _ = socket.set_tcp_keepalive(&keepalive);
        let _ = socket.set_tcp_user_timeout(Some(Duration::from_secs(120)));
        let _ = socket.set_tcp_nodelay(true);
    }
}
