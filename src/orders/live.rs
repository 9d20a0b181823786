//! Live order changes across server processes: a trigger NOTIFYs the venue's channel
//! (`venueql_orders_<venue id hex>`, payload the order id) when an order is inserted or
//! changes, at commit. Each process holds one LISTEN connection; a venue's channel is
//! listened to while a subscriber of that venue is connected or its queue is being asked
//! for. Subscribers get order ids only, and re-read the order under their own venue scope.
//!
//! The same notifications keep the queue snapshots: a venue's open orders as last read in
//! a transaction scoped to that venue, served to that venue's `ordersQueue` only while
//! they cannot be stale: no notification (and no commit by this process) for the venue
//! since the read began, the LISTEN connection up throughout, and younger than the
//! configured maximum age, which bounds staleness should a notification be lost some way
//! the listener cannot see. Another process's change is seen once its notification arrives
//! (the delay of the live subscription, about a millisecond on one host).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use super::Order;
use crate::error::AppError;
use crate::tenancy::{Db, Listener, VenueId, VenueTx};

/// A venue whose queue nobody asked for in this long is no longer watched.
const WATCH_IDLE: Duration = Duration::from_secs(60);

/// Longest a request waits for the listener to LISTEN (it may be reconnecting): the queue
/// is then read without keeping a snapshot, and a subscription is refused.
const LISTEN_WAIT: Duration = Duration::from_secs(2);

/// Waits for the listener's answer to a LISTEN, at most [`LISTEN_WAIT`].
async fn listened(listening: oneshot::Receiver<Result<(), sqlx::Error>>) -> Result<(), AppError> {
    match tokio::time::timeout(LISTEN_WAIT, listening).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err(error.into()),
        Ok(Err(_)) => Err(AppError::internal("orders hub stopped")),
        Err(_) => Err(AppError::Unavailable("live order updates are unavailable right now; retry shortly".into())),
    }
}

/// The channel a venue's order changes are announced on.
pub fn channel(venue: VenueId) -> String {
    format!("venueql_orders_{}", venue.as_uuid().simple())
}

enum Command {
    Listen(String, oneshot::Sender<Result<(), sqlx::Error>>),
    Unlisten(String),
}

/// A venue's open orders as read at one moment. It is dropped (never patched) by any
/// change of the venue's orders and by any change of the listener's connection.
struct Snapshot {
    /// When the read began.
    read_at: Instant,
    orders: Vec<Arc<Order>>,
}

/// A venue whose queue is asked for: its channel is listened to, and every notification
/// for it counts as a change (and drops its snapshot).
struct QueueWatch {
    /// Tells this watch apart from an earlier one of the same venue.
    id: u64,
    /// Whether the LISTEN of its channel has been acknowledged.
    listening: bool,
    /// Changes seen since the watch began.
    changes: u64,
    last_asked: Instant,
    snapshot: Option<Snapshot>,
}

/// What a read must find unchanged for its result to be kept.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ReadBegan {
    watch: u64,
    changes: u64,
    connection: u64,
}

#[derive(Default)]
struct Shared {
    senders: HashMap<VenueId, broadcast::Sender<Uuid>>,
    watches: HashMap<VenueId, QueueWatch>,
    /// Venues whose channel a LISTEN was sent for (and no UNLISTEN since).
    listened: HashSet<VenueId>,
    /// Bumped each time the LISTEN connection is lost and each time it is back: a
    /// notification may have been missed in between.
    connection: u64,
    /// Whether the LISTEN connection is up.
    connected: bool,
    next_watch: u64,
}

impl Shared {
    fn changed(&mut self, venue: VenueId) {
        if let Some(watch) = self.watches.get_mut(&venue) {
            watch.changes += 1;
            watch.snapshot = None;
        }
    }

    fn set_connected(&mut self, connected: bool) {
        self.connected = connected;
        self.connection += 1;
        for watch in self.watches.values_mut() {
            watch.snapshot = None;
        }
    }

    /// The snapshot of `venue` if it may be served (and notes that the queue was asked for).
    fn snapshot(&mut self, venue: VenueId, max_age: Duration) -> Option<Vec<Arc<Order>>> {
        let connected = self.connected;
        let watch = self.watches.get_mut(&venue)?;
        watch.last_asked = Instant::now();
        let snapshot = watch.snapshot.as_ref()?;
        (connected && snapshot.read_at.elapsed() < max_age).then(|| snapshot.orders.clone())
    }

    /// What a read of `venue` beginning now must find unchanged for its result to be
    /// kept; `None` when it may not be kept (not watched, or not listened to yet).
    fn began(&self, venue: VenueId) -> Option<ReadBegan> {
        let watch = self.watches.get(&venue)?;
        (self.connected && watch.listening).then_some(ReadBegan {
            watch: watch.id,
            changes: watch.changes,
            connection: self.connection,
        })
    }

    /// Keeps `orders`, read from `read_at` on, as `venue`'s snapshot if nothing changed
    /// since the read began.
    fn keep(&mut self, venue: VenueId, began: ReadBegan, read_at: Instant, orders: &[Arc<Order>]) {
        if self.began(venue) == Some(began)
            && let Some(watch) = self.watches.get_mut(&venue)
        {
            watch.snapshot = Some(Snapshot { read_at, orders: orders.to_vec() });
        }
    }
}

/// The per-process LISTEN hub: live subscriptions and queue snapshots.
#[derive(Clone)]
pub struct OrdersHub {
    shared: Arc<Mutex<Shared>>,
    commands: mpsc::UnboundedSender<Command>,
    /// Longest a snapshot is served; zero turns snapshots off.
    snapshot_max_age: Duration,
}

impl OrdersHub {
    /// Starts the hub's listener task on a LISTEN connection of the app role.
    pub fn start(db: Db, snapshot_max_age: Duration) -> OrdersHub {
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(db, receiver, shared.clone()));
        OrdersHub { shared, commands, snapshot_max_age }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().expect("orders hub lock")
    }

    /// Asks the listener to LISTEN to `venue`'s channel; sent under the hub's lock, so a
    /// LISTEN and a prune's UNLISTEN of the same channel reach the listener in the order
    /// they were decided.
    fn listen(&self, shared: &mut Shared, venue: VenueId) -> oneshot::Receiver<Result<(), sqlx::Error>> {
        let (done, listening) = oneshot::channel();
        shared.listened.insert(venue);
        // When the listener task has stopped, `listening` reports it.
        let _ = self.commands.send(Command::Listen(channel(venue), done));
        listening
    }

    /// Subscribes to `venue`'s order changes; returns once the channel is being listened to,
    /// so no change committed after this returns is missed.
    pub async fn subscribe(&self, venue: VenueId) -> Result<broadcast::Receiver<Uuid>, AppError> {
        // Every subscriber waits for a LISTEN of its own (idempotent), so none returns
        // before the channel is listened to, even while another subscriber's is in flight.
        let (receiver, listening) = {
            let mut shared = self.lock();
            let receiver = match shared.senders.get(&venue).filter(|s| s.receiver_count() > 0) {
                Some(sender) => sender.subscribe(),
                None => {
                    let (sender, receiver) = broadcast::channel(256);
                    shared.senders.insert(venue, sender);
                    receiver
                }
            };
            (receiver, self.listen(&mut shared, venue))
        };
        listened(listening).await?;
        Ok(receiver)
    }

    /// `venue`'s open orders, oldest first: its snapshot when that cannot be stale,
    /// otherwise read now in a transaction scoped to `venue` (and kept as its snapshot).
    pub async fn queue(&self, db: &Db, venue: VenueId) -> Result<Vec<Arc<Order>>, AppError> {
        if self.snapshot_max_age.is_zero() {
            return read_queue(db, venue).await;
        }
        let (snapshot, began, watched) = {
            let mut shared = self.lock();
            (shared.snapshot(venue, self.snapshot_max_age), shared.began(venue), shared.watches.contains_key(&venue))
        };
        if let Some(orders) = snapshot {
            return Ok(orders);
        }
        let began = if watched { began } else { self.watch(venue).await };
        let read_at = Instant::now();
        let orders = read_queue(db, venue).await?;
        if let Some(began) = began {
            self.lock().keep(venue, began, read_at, &orders);
        }
        Ok(orders)
    }

    /// Starts watching `venue` and waits for its channel to be listened to; returns what
    /// a read beginning now must find unchanged. If the LISTEN fails or takes too long,
    /// the watch is dropped (the next request starts another) and `None` is returned.
    async fn watch(&self, venue: VenueId) -> Option<ReadBegan> {
        let (id, listening) = {
            let mut shared = self.lock();
            shared.next_watch += 1;
            let id = shared.next_watch;
            let watch = QueueWatch { id, listening: false, changes: 0, last_asked: Instant::now(), snapshot: None };
            shared.watches.insert(venue, watch);
            (id, self.listen(&mut shared, venue))
        };
        let answer = listened(listening).await;
        let mut shared = self.lock();
        // Only this watch's own LISTEN vouches for it: a newer watch waits for its own.
        let watch = shared.watches.get_mut(&venue).filter(|watch| watch.id == id)?;
        if answer.is_err() {
            shared.watches.remove(&venue);
            return None;
        }
        watch.listening = true;
        shared.began(venue)
    }

    /// Stops listening to venues nobody is subscribed to or has asked the queue of lately.
    fn prune(&self) {
        let mut shared = self.lock();
        shared.senders.retain(|_, sender| sender.receiver_count() > 0);
        shared.watches.retain(|_, watch| watch.last_asked.elapsed() < WATCH_IDLE);
        let unused: Vec<VenueId> = shared
            .listened
            .iter()
            .copied()
            .filter(|venue| !shared.senders.contains_key(venue) && !shared.watches.contains_key(venue))
            .collect();
        for venue in unused {
            shared.listened.remove(&venue);
            let _ = self.commands.send(Command::Unlisten(channel(venue)));
        }
    }

    /// Prunes every `every` (run by the server).
    pub fn spawn_pruning(&self, every: Duration) {
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

/// Commits a transaction that changed the venue's orders, then drops this process's
/// snapshot of the venue's queue, so that its own next read sees the change without
/// waiting for the notification (other processes drop theirs when it arrives). Besides
/// the notifications, the one place a snapshot is dropped: every change to orders commits
/// through here (`hub` is None only outside the server, e.g. `venueql stripe replay`).
pub async fn commit(tx: VenueTx, hub: Option<&OrdersHub>) -> Result<(), AppError> {
    let venue = tx.venue();
    tx.commit().await?;
    if let Some(hub) = hub {
        hub.lock().changed(venue);
    }
    Ok(())
}

async fn read_queue(db: &Db, venue: VenueId) -> Result<Vec<Arc<Order>>, AppError> {
    let mut tx = db.venue_tx(venue).await?;
    let orders = super::queue(&mut tx).await?;
    tx.commit().await?;
    Ok(orders.into_iter().map(Arc::new).collect())
}

/// Connects a listener and listens to `channels`, retrying until it succeeds (or the
/// pool is closed: `None`).
async fn connect(db: &Db, channels: &HashSet<String>) -> Option<Listener> {
    loop {
        if db.is_closed() {
            return None;
        }
        // A lost connection surfaces as `next` → `Ok(None)` (handled by reconnecting here
        // and dropping every snapshot), never repaired silently.
        let names: Vec<&str> = channels.iter().map(String::as_str).collect();
        match db.listen(&names).await {
            Ok(listener) => return Some(listener),
            Err(error) => {
                tracing::warn!(%error, "orders hub cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn run(db: Db, mut commands: mpsc::UnboundedReceiver<Command>, shared: Arc<Mutex<Shared>>) {
    let lock = || shared.lock().expect("orders hub lock");
    let mut channels: HashSet<String> = HashSet::new();
    let Some(mut listener) = connect(&db, &channels).await else { return };
    lock().set_connected(true);
    loop {
        let lost = tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Listen(channel, done)) => {
                    // Kept even if this LISTEN fails, so that the reconnection listens to it.
                    channels.insert(channel.clone());
                    let listened = listener.listen(&channel).await;
                    let lost = listened.is_err();
                    let _ = done.send(listened);
                    lost
                }
                Some(Command::Unlisten(channel)) => {
                    channels.remove(&channel);
                    listener.unlisten(&channel).await.is_err()
                }
            },
            // `next` is cancel-safe and says when the connection was lost (`None`).
            notification = listener.next() => match notification {
                Ok(Some((channel, payload))) => {
                    let venue_hex = channel.trim_start_matches("venueql_orders_");
                    if let Ok(venue) = Uuid::parse_str(venue_hex).map(VenueId::from_notification) {
                        let mut shared = lock();
                        shared.changed(venue);
                        let order = Uuid::parse_str(&payload);
                        if let (Some(sender), Ok(order)) = (shared.senders.get(&venue), order) {
                            let _ = sender.send(order);
                        }
                    }
                    false
                }
                Ok(None) | Err(_) => true,
            },
        };
        if lost {
            // Notifications sent while the connection is down are gone: no snapshot read
            // before it is back may be trusted.
            lock().set_connected(false);
            tracing::warn!("orders hub lost its LISTEN connection; reconnecting");
            let Some(reconnected) = connect(&db, &channels).await else { return };
            listener = reconnected;
            // Every acknowledged LISTEN's channel is in `channels`, listened to again.
            lock().set_connected(true);
        }
    }
}
