//! The HTTP listeners of the commands: the public receiver (when the process receives), the
//! admin listener and the console (when enabled), bound, announced and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use callhook_ingest::{AdminState, Receiver};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Running listeners.
pub struct Listeners {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Listeners {
    /// Binds the receiver on `public` (if any), the admin listener and the console (if any),
    /// prints the machine-readable line `callhook listening [public=ADDR ]admin=ADDR
    /// [console=ADDR]` (for scripts and tests that bind port 0), and serves until
    /// [`Listeners::stop`].
    pub async fn start(
        public: Option<(SocketAddr, Arc<Receiver>)>,
        admin_listen: SocketAddr,
        admin: Arc<AdminState>,
        console: Option<(SocketAddr, Arc<crate::console::Console>)>,
    ) -> anyhow::Result<Listeners> {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut line = String::from("callhook listening");
        if let Some((listen, receiver)) = public {
            let listener = bind(listen, RECEIVER_BACKLOG)
                .with_context(|| format!("cannot listen on {listen}"))?;
            let addr = listener.local_addr()?;
            tracing::info!(public_addr = %addr, sources = ?receiver.source_names(), "receiver listening");
            line.push_str(&format!(" public={addr}"));
            tasks.push(tokio::spawn(callhook_ingest::run(
                listener,
                receiver,
                stopped(stop_rx.clone()),
            )));
        }
        let admin_listener = TcpListener::bind(admin_listen)
            .await
            .with_context(|| format!("cannot listen on {admin_listen} (admin)"))?;
        let admin_addr = admin_listener.local_addr()?;
        tracing::info!(%admin_addr, "admin listening");
        line.push_str(&format!(" admin={admin_addr}"));
        tasks.push(tokio::spawn(callhook_ingest::run_admin(
            admin_listener,
            admin,
            stopped(stop_rx.clone()),
        )));
        if let Some((listen, console)) = console {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen} (console)"))?;
            let addr = listener.local_addr()?;
            tracing::info!(console_addr = %addr, "console listening");
            line.push_str(&format!(" console={addr}"));
            let handler = move |request, peer| {
                let console = Arc::clone(&console);
                async move { console.handle(request, peer).await }
            };
            tasks.push(tokio::spawn(callhook_ingest::run_service(
                listener,
                handler,
                stopped(stop_rx),
            )));
        }
        println!("{line}");
        Ok(Listeners { stop, tasks })
    }

    /// Stops accepting, lets in-flight requests finish, and returns once both are closed.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Connections the kernel queues for the receiver before `accept` (capped by
/// `net.core.somaxconn`). tokio's `TcpListener::bind` asks for 128: under a connection flood the
/// queue filled and a well-behaved client's connects were dropped and retried after a second.
/// The receiver's own limits decide who is served once accepted; the queue only has to hold
/// the connects that arrive between two accepts.
const RECEIVER_BACKLOG: u32 = 1024;

/// Binds `addr` with `SO_REUSEADDR` (as `TcpListener::bind` does) and a listen queue of
/// `backlog`.
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
