//! Live order changes across server processes: a trigger NOTIFYs the venue's channel
//! (`venueql_orders_<venue id hex>`, payload the order id) when an order is inserted or
//! changes, at commit. Each process holds one LISTEN connection; a venue's channel is
//! listened to while at least one subscriber of that venue is connected. Subscribers get
//! order ids only, and re-read the order under their own venue scope.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use crate::error::AppError;
use crate::tenancy::VenueId;

/// The channel a venue's order changes are announced on.
pub fn channel(venue: VenueId) -> String {
    format!("venueql_orders_{}", venue.as_uuid().simple())
}

enum Command {
    Listen(String, oneshot::Sender<Result<(), sqlx::Error>>),
    Unlisten(String),
}

/// The per-process LISTEN hub.
#[derive(Clone)]
pub struct OrdersHub {
    senders: Arc<Mutex<HashMap<VenueId, broadcast::Sender<Uuid>>>>,
    commands: mpsc::UnboundedSender<Command>,
}

impl OrdersHub {
    /// Starts the hub's listener task on a connection of `pool` (the app role).
    pub fn start(pool: PgPool) -> OrdersHub {
        let senders: Arc<Mutex<HashMap<VenueId, broadcast::Sender<Uuid>>>> = Arc::default();
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, receiver, senders.clone()));
        OrdersHub { senders, commands }
    }

    /// Subscribes to `venue`'s order changes; returns once the channel is being listened to,
    /// so no change committed after this returns is missed.
    pub async fn subscribe(&self, venue: VenueId) -> Result<broadcast::Receiver<Uuid>, AppError> {
        // Commands are sent under the lock, so a LISTEN and a prune's UNLISTEN of the same
        // channel reach the listener in the order they were decided.
        // Every subscriber waits for a LISTEN of its own (idempotent), so none returns
        // before the channel is listened to, even while another subscriber's is in flight.
        let (receiver, listening) = {
            let mut senders = self.senders.lock().expect("orders hub lock");
            let receiver = match senders.get(&venue).filter(|s| s.receiver_count() > 0) {
                Some(sender) => sender.subscribe(),
                None => {
                    let (sender, receiver) = broadcast::channel(256);
                    senders.insert(venue, sender);
                    receiver
                }
            };
            let (done, listening) = oneshot::channel();
            self.commands
                .send(Command::Listen(channel(venue), done))
                .map_err(|_| AppError::internal("orders hub stopped"))?;
            (receiver, listening)
        };
        listening.await.map_err(|_| AppError::internal("orders hub stopped"))??;
        Ok(receiver)
    }

    /// Stops listening to venues nobody is subscribed to any more.
    fn prune(&self) {
        let mut senders = self.senders.lock().expect("orders hub lock");
        senders.retain(|venue, sender| {
            let keep = sender.receiver_count() > 0;
            if !keep {
                let _ = self.commands.send(Command::Unlisten(channel(*venue)));
            }
            keep
        });
    }

    /// Prunes every `every` (run by the server).
    pub fn spawn_pruning(&self, every: std::time::Duration) {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                hub.prune();
            }
        });
    }
}

async fn run(
    pool: PgPool,
    mut commands: mpsc::UnboundedReceiver<Command>,
    senders: Arc<Mutex<HashMap<VenueId, broadcast::Sender<Uuid>>>>,
) {
    let mut listener = loop {
        match PgListener::connect_with(&pool).await {
            Ok(listener) => break listener,
            Err(error) => {
                tracing::warn!(%error, "orders hub cannot connect; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Listen(channel, done)) => {
                    let _ = done.send(listener.listen(&channel).await);
                }
                Some(Command::Unlisten(channel)) => {
                    if let Err(error) = listener.unlisten(&channel).await {
                        tracing::warn!(%error, "UNLISTEN failed");
                    }
                }
            },
            // `recv` is cancel-safe and reconnects (re-listening) after a lost connection.
            notification = listener.recv() => match notification {
                Ok(notification) => {
                    let venue_hex = notification.channel().trim_start_matches("venueql_orders_");
                    let (Ok(venue), Ok(order)) = (Uuid::parse_str(venue_hex), Uuid::parse_str(notification.payload())) else {
                        continue;
                    };
                    if let Some(sender) = senders.lock().expect("orders hub lock").get(&VenueId::from_uuid(venue)) {
                        let _ = sender.send(order);
                    }
                }
                Err(_) if pool.is_closed() => return,
                Err(error) => {
                    tracing::warn!(%error, "orders hub receive failed");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            },
        }
    }
}
