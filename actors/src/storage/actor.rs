//! StorageActor: answers reads of the state machine on a `SyncArbiter` pool, so sled scans
//! never run on an async thread. Accepts [`Query`]: a closure over one consistent
//! [`GraphView`]. (Whole-state work, the digest, runs elsewhere: it would hold a pool thread
//! for seconds.)

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};

use super::reads::{GraphReader, GraphView};
use crate::error::Result;

type ViewFn<T> = Box<dyn FnOnce(&GraphView) -> Result<T> + Send>;

/// Runs one read of one consistent view against the state machine and answers its result.
pub struct Query<T>(ViewFn<T>);

impl<T: 'static> Query<T> {
    pub fn new(read: impl FnOnce(&GraphView) -> Result<T> + Send + 'static) -> Self {
        Query(Box::new(read))
    }
}

impl<T: 'static> Message for Query<T> {
    type Result = Result<T>;
}

/// Reads the state machine; one instance per pool thread.
pub struct StorageActor {
    reader: GraphReader,
}

impl StorageActor {
    /// Starts `threads` readers.
    pub fn start_pool(reader: GraphReader, threads: usize) -> Addr<StorageActor> {
        SyncArbiter::start(threads.max(1), move || StorageActor { reader: reader.clone() })
    }
}

impl Actor for StorageActor {
    type Context = SyncContext<Self>;
}

impl<T: 'static> Handler<Query<T>> for StorageActor {
    type Result = Result<T>;

    fn handle(&mut self, query: Query<T>, _: &mut SyncContext<Self>) -> Result<T> {
        self.reader.with(query.0)
    }
}
