//! The data plane's event loops: `--threads N` single-threaded runtimes, one per OS thread.
//!
//! Worker 0 is the runtime `main` runs on (it also serves signals, stats and the listeners'
//! accept loops); [`start`] adds workers 1..N, each a `current_thread` tokio runtime on its own
//! thread. Nothing is stolen between them: a task stays on the worker it was spawned on, so a
//! request whose client and backend connection live on the same worker never wakes another
//! thread. `proxy::pool` places connection `i` of every server of a pool on worker
//! `(pool's first worker + i) mod N`, and the listener hands each client to a worker that owns
//! connections of its pool.
//!
//! Without [`start`] (one thread, or a library user's own runtime) there is one worker: the
//! current runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;

/// The started workers' runtimes, index = worker number.
static WORKERS: OnceLock<Vec<Handle>> = OnceLock::new();

thread_local! {
    /// The worker this thread runs; 0 on every thread that is not a worker.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Starts workers 1..`threads` (the calling runtime is worker 0). Call once, from inside the
/// main runtime, before any pool starts. Their threads run until the process exits.
pub fn start(threads: usize) -> std::io::Result<()> {
    let mut handles = vec![Handle::current()];
    for index in 1..threads.max(1) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("walnut-worker-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = tx.send(Err(err));
                        return;
                    }
                };
                CURRENT.with(|c| c.set(index));
                let _ = tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(std::future::pending::<()>());
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("a worker thread died while starting"))??;
        handles.push(handle);
    }
    WORKERS
        .set(handles)
        .map_err(|_| std::io::Error::other("the workers were already started"))
}

/// How many workers there are (1 until [`start`] ran).
pub fn count() -> usize {
    WORKERS.get().map_or(1, Vec::len)
}

/// The worker the calling thread runs (0 outside the workers).
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// Runs `task` on worker `index % count()`; on the current runtime when there is one worker.
pub fn spawn_on<F>(index: usize, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match WORKERS.get() {
        Some(handles) if handles.len() > 1 => {
            handles[index % handles.len()].spawn(task);
        }
        _ => {
            tokio::spawn(task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_start_there_is_one_worker_the_current_runtime() {
        assert_eq!(count(), 1);
        assert_eq!(current(), 0);
        let (tx, rx) = tokio::sync::oneshot::channel();
        spawn_on(7, async move {
            let _ = tx.send(current());
        });
        assert_eq!(rx.await.ok(), Some(0));
    }
}
