//! StorageActor: answers reads of the state machine on a `SyncArbiter` pool, so sled scans
//! never run on an async thread. Accepts [`Query`]: a closure over one consistent
//! [`GraphView`], or over the [`GraphReader`] for whole-state work (the digest).

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};

use super::reads::{GraphReader, GraphView};
use crate::error::Result;

type ViewFn<T> = Box<dyn FnOnce(&GraphView) -> Result<T> + Send>;
type ReaderFn<T> = Box<dyn FnOnce(&GraphReader) -> Result<T> + Send>;

/// Runs one read against the state machine and answers its result.
pub enum Query<T> {
    View(ViewFn<T>),
    Reader(ReaderFn<T>),
}

impl<T: 'static> Query<T> {
    /// A read of one consistent view.
    pub fn new(read: impl FnOnce(&GraphView) -> Result<T> + Send + 'static) -> Self {
        Query::View(Box::new(read))
    }

    /// Work over the whole state that opens its own point-in-time view (it must not run
    /// inside a read view: it waits for the apply lock, which waits for the read gate).
    pub fn whole(work: impl FnOnce(&GraphReader) -> Result<T> + Send + 'static) -> Self {
        Query::Reader(Box::new(work))
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
        match query {
            Query::View(read) => self.reader.with(read),
            Query::Reader(work) => work(&self.reader),
        }
    }
}
