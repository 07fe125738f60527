//! A worker thread that serves a queue in batches.
//!
//! Callers submit jobs with a tag; the worker takes every job waiting (up to a batch
//! size), runs them together and leaves the results, with their tags, for the owner
//! to take. When results start waiting, one byte goes out on a socket: an event loop
//! watches the other end, so it never blocks on the worker and the worker never
//! waits for it.
//!
//! Why a batch: a forward pass over several short texts reads the model's weights
//! once, so texts that arrive while one batch runs cost little extra in the next.

use std::any::Any;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

struct State<J, R, T> {
    waiting: VecDeque<(T, J)>,
    done: Vec<(T, R)>,
    /// A byte is on the socket that no `take` has consumed yet.
    signaled: bool,
    closed: bool,
}

struct Shared<J, R, T> {
    state: Mutex<State<J, R, T>>,
    wake: Condvar,
    signal: UnixStream,
}

impl<J, R, T> Shared<J, R, T> {
    fn lock(&self) -> MutexGuard<'_, State<J, R, T>> {
        // A panic in `run` is caught before it could poison the lock; recover anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct BatchWorker<J, R, T> {
    shared: Arc<Shared<J, R, T>>,
    /// The owner's end of the socket: readable while results wait.
    ready: UnixStream,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<J, R, T> BatchWorker<J, R, T>
where
    J: Send + 'static,
    R: Send + 'static,
    T: Send + 'static,
{
    /// Starts the worker thread `name`: `run` gets up to `max_batch` jobs, oldest
    /// first, and returns one result per job, in order. If it panics, or returns
    /// another number of results, every job of the batch gets `failed(why)` and the
    /// worker goes on with the next batch: no caller waits forever.
    pub fn start<F, E>(name: &str, max_batch: usize, mut run: F, failed: E) -> Result<Self>
    where
        F: FnMut(Vec<J>) -> Vec<R> + Send + 'static,
        E: Fn(String) -> R + Send + 'static,
    {
        if max_batch == 0 {
            return Err(Error::invalid("max_batch", "must be at least 1"));
        }
        let (ready, signal) = UnixStream::pair()?;
        ready.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                done: Vec::new(),
                signaled: false,
                closed: false,
            }),
            wake: Condvar::new(),
            signal,
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(&worker, max_batch, &mut run, &failed))?;
        Ok(BatchWorker {
            shared,
            ready,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `job`; refused once `close` has begun.
    pub fn submit(&self, tag: T, job: J) -> Result<()> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(Error::ResourceExhausted("the worker is closed".into()));
        }
        state.waiting.push_back((tag, job));
        drop(state);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Every result waiting, in the order the worker finished them; never blocks.
    pub fn take(&self) -> Vec<(T, R)> {
        // Consume the signal first: a byte written after this read announces results
        // that the lock below may or may not catch; either way none is missed.
        let mut sink = [0u8; 64];
        while matches!((&self.ready).read(&mut sink), Ok(n) if n > 0) {}
        let mut state = self.shared.lock();
        state.signaled = false;
        std::mem::take(&mut state.done)
    }

    /// The descriptor to watch: readable while results wait for `take`.
    pub fn ready_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }
}

impl<J, R, T> BatchWorker<J, R, T> {
    /// Refuses new jobs, lets the worker finish the queued ones, and joins it. Their
    /// results stay for `take`. Idempotent.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            // `serve` catches panics of `run`, so the thread ends only when closed.
            let _ = thread.join();
        }
    }
}

impl<J, R, T> Drop for BatchWorker<J, R, T> {
    fn drop(&mut self) {
        self.close();
    }
}

fn serve<J, R, T>(
    shared: &Shared<J, R, T>,
    max_batch: usize,
    run: &mut impl FnMut(Vec<J>) -> Vec<R>,
    failed: &impl Fn(String) -> R,
) {
    loop {
        let mut state = shared.lock();
        while state.waiting.is_empty() && !state.closed {
            state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.waiting.is_empty() {
            return; // closed and drained
        }
        let n = state.waiting.len().min(max_batch);
        let (tags, jobs): (Vec<T>, Vec<J>) = state.waiting.drain(..n).unzip();
        drop(state);
        let results = match panic::catch_unwind(AssertUnwindSafe(|| run(jobs))) {
            Ok(results) if results.len() == tags.len() => results,
            Ok(results) => {
                let why = format!("{} results for {} jobs", results.len(), tags.len());
                tags.iter().map(|_| failed(why.clone())).collect()
            }
            Err(payload) => {
                let why = panic_message(payload.as_ref());
                tags.iter().map(|_| failed(why.clone())).collect()
            }
        };
        let mut state = shared.lock();
        state.done.extend(tags.into_iter().zip(results));
        if !state.signaled {
            state.signaled = true;
            drop(state);
            signal(&shared.signal);
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    format!("the worker panicked: {what}")
}

/// One byte to the owner. The socket holds far more than one byte per `take`, so a
/// full buffer (never expected) only means a byte is already there to be read.
fn signal(mut socket: &UnixStream) {
    loop {
        match socket.write(&[1]) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    fn no_failure<R>(why: String) -> R {
        panic!("no batch was meant to fail: {why}")
    }

    fn wait_for<J, R, T>(worker: &BatchWorker<J, R, T>, n: usize) -> Vec<(T, R)>
    where
        J: Send + 'static,
        R: Send + 'static,
        T: Send + 'static,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            got.extend(worker.take());
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    #[test]
    fn jobs_queued_while_a_batch_runs_go_together_into_the_next() {
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let worker = BatchWorker::start(
            "test",
            8,
            move |jobs: Vec<u32>| {
                seen.lock().unwrap().push(jobs.len());
                if seen.lock().unwrap().len() == 1 {
                    started_tx.send(()).unwrap();
                    gate_rx.recv().unwrap();
                }
                jobs.iter().map(|j| j * 10).collect()
            },
            no_failure,
        )
        .unwrap();
        worker.submit("a", 1).unwrap();
        started_rx.recv().unwrap();
        for (tag, job) in [("b", 2), ("c", 3), ("d", 4)] {
            worker.submit(tag, job).unwrap();
        }
        gate_tx.send(()).unwrap();
        let got = wait_for(&worker, 4);
        assert_eq!(got, vec![("a", 10), ("b", 20), ("c", 30), ("d", 40)]);
        assert_eq!(*sizes.lock().unwrap(), vec![1, 3]);
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_jobs() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let worker = BatchWorker::start(
            "test",
            2,
            move |jobs: Vec<u32>| {
                if seen.lock().unwrap().is_empty() {
                    gate_rx.recv().unwrap();
                }
                seen.lock().unwrap().push(jobs.len());
                jobs
            },
            no_failure,
        )
        .unwrap();
        for j in 0..5 {
            worker.submit(j, j).unwrap();
        }
        gate_tx.send(()).unwrap();
        assert_eq!(wait_for(&worker, 5).len(), 5);
        assert!(sizes.lock().unwrap().iter().all(|&n| n <= 2));
    }

    fn would_block(worker: &BatchWorker<u8, u8, ()>) -> bool {
        let mut byte = [0u8; 1];
        matches!((&worker.ready).read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
    }

    fn until_done(worker: &BatchWorker<u8, u8, ()>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while worker.shared.lock().done.is_empty() {
            assert!(Instant::now() < deadline, "the worker never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_byte_announces_waiting_results_and_take_consumes_it() {
        let worker = BatchWorker::start("test", 4, |jobs: Vec<u8>| jobs, no_failure).unwrap();
        assert!(would_block(&worker));
        worker.submit((), 7).unwrap();
        until_done(&worker);
        let mut byte = [0u8; 1];
        assert_eq!((&worker.ready).read(&mut byte).unwrap(), 1);
        assert_eq!(worker.take(), vec![((), 7)]);
        worker.submit((), 8).unwrap();
        until_done(&worker);
        assert_eq!(worker.take(), vec![((), 8)]);
        assert!(would_block(&worker), "take left the byte on the socket");
        assert!(worker.take().is_empty());
    }

    #[test]
    fn close_finishes_the_queued_jobs_and_refuses_new_ones() {
        let worker = BatchWorker::start(
            "test",
            1,
            |jobs: Vec<u32>| {
                std::thread::sleep(Duration::from_millis(2));
                jobs
            },
            no_failure,
        )
        .unwrap();
        for j in 0..4 {
            worker.submit(j, j).unwrap();
        }
        worker.close();
        assert_eq!(worker.take().len(), 4);
        assert!(matches!(
            worker.submit(9, 9),
            Err(Error::ResourceExhausted(_))
        ));
        worker.close();
    }

    #[test]
    fn a_panicking_or_short_batch_fails_its_jobs_and_the_worker_goes_on() {
        let worker = BatchWorker::start(
            "test",
            1,
            |jobs: Vec<i32>| match jobs[0] {
                0 => panic!("bad input"),
                1 => Vec::new(),
                j => vec![Ok(j)],
            },
            Err,
        )
        .unwrap();
        for j in 0..3 {
            worker.submit(j, j).unwrap();
        }
        let got = wait_for(&worker, 3);
        assert_eq!(
            got[0],
            (0, Err("the worker panicked: bad input".to_string()))
        );
        assert_eq!(got[1], (1, Err("0 results for 1 jobs".to_string())));
        assert_eq!(got[2], (2, Ok(2)));
    }

    #[test]
    fn max_batch_zero_is_refused() {
        let err = BatchWorker::<u8, u8, u8>::start("test", 0, |j| j, no_failure)
            .err()
            .unwrap();
        assert!(matches!(err, Error::InvalidArgument { ref field, .. } if field == "max_batch"));
    }
}
