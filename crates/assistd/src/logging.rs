//! Log output that can never block or stop the server.
//!
//! `assistd serve 2>&1 | tee log` is a common way to run it; when the reader goes away the pipe
//! is broken (`EPIPE`), and when the reader stops reading it fills up (a write would block). Both
//! used to be fatal: tracing's own fallback `eprintln!` panicked inside whichever task logged
//! (each HTTPS connection, the signal handler), so the server stopped answering and ignored
//! SIGTERM while `/healthz` said ok. Here a log line is handed to a bounded queue that one
//! dedicated thread writes to stderr: a full queue or a failed write drops the line and counts it
//! (`assist_log_lines_dropped_total`), and the serving threads never wait on the log.

use prometheus::IntCounter;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Lines queued for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 4096;

enum Item {
    Line(Vec<u8>),
    /// Answer once every line queued before this one has been written (or dropped).
    Flush(SyncSender<()>),
}

/// Where the server's log lines go: a non-blocking, lossy writer to stderr. Cheap to clone.
#[derive(Clone)]
pub struct LogOutput {
    inner: Arc<Inner>,
}

struct Inner {
    queue: SyncSender<Item>,
    dropped: IntCounter,
}

impl LogOutput {
    /// Starts the writer thread for `sink` (stderr in `assistd serve`). `dropped` counts the
    /// lines lost to a full queue or a failed write.
    pub fn new(
        sink: impl Write + Send + 'static,
        dropped: IntCounter,
    ) -> std::io::Result<LogOutput> {
        let (queue, rx) = mpsc::sync_channel(QUEUE_LINES);
        let thread_dropped = dropped.clone();
        std::thread::Builder::new()
            .name("assistd-log".into())
            .spawn(move || write_lines(rx, sink, thread_dropped))?;
        Ok(LogOutput {
            inner: Arc::new(Inner { queue, dropped }),
        })
    }

    /// The counter of dropped lines, for the metrics registry.
    pub fn dropped(&self) -> &IntCounter {
        &self.inner.dropped
    }

    /// Waits up to `timeout` for the lines queued so far to be written; false if they were not.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.inner.queue.try_send(Item::Flush(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }

    fn push(&self, line: &[u8]) {
        match self.inner.queue.try_send(Item::Line(line.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.inner.dropped.inc()
            }
        }
    }
}

fn write_lines(rx: Receiver<Item>, mut sink: impl Write, dropped: IntCounter) {
    loop {
        match rx.recv_timeout(Duration::from_secs(3600)) {
            Ok(Item::Line(line)) => {
                if sink.write_all(&line).and_then(|()| sink.flush()).is_err() {
                    dropped.inc();
                }
            }
            Ok(Item::Flush(done)) => {
                let _ = done.try_send(());
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// One event's writer: tracing formats the whole line, then writes it here in one call.
pub struct LogLine {
    out: LogOutput,
    buf: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.out.push(&self.buf);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogOutput {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            out: self.clone(),
            buf: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink that fails every write, as a pipe with no reader does.
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink whose writes never return, as a pipe whose reader stopped reading.
    struct Stuck(Arc<Mutex<()>>);
    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            let _hold = self.0.lock();
            Ok(0)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<u8>>>);
    impl Write for Memory {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn counter() -> IntCounter {
        IntCounter::new("dropped_total", "dropped").unwrap()
    }

    fn log(out: &LogOutput, text: &str) {
        use tracing_subscriber::fmt::MakeWriter;
        write!(out.make_writer(), "{text}").unwrap();
    }

    #[test]
    fn lines_reach_the_sink_whole_and_in_order() {
        let mem = Memory::default();
        let out = LogOutput::new(mem.clone(), counter()).unwrap();
        for i in 0..100 {
            log(&out, &format!("line {i}\n"));
        }
        assert!(out.flush(Duration::from_secs(5)));
        let text = String::from_utf8(mem.0.lock().unwrap().clone()).unwrap();
        let want: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, want);
        assert_eq!(out.dropped().get(), 0);
    }

    #[test]
    fn a_broken_sink_drops_and_counts_lines() {
        let out = LogOutput::new(Broken, counter()).unwrap();
        for _ in 0..10 {
            log(&out, "lost\n");
        }
        assert!(out.flush(Duration::from_secs(5)));
        assert_eq!(out.dropped().get(), 10);
    }

    #[test]
    fn a_stuck_sink_never_blocks_the_logger() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let out = LogOutput::new(Stuck(gate.clone()), counter()).unwrap();
        // Far more lines than the queue holds: every call returns, the excess is counted.
        for _ in 0..(QUEUE_LINES + 500) {
            log(&out, "x\n");
        }
        assert!(out.dropped().get() >= 499, "{}", out.dropped().get());
        assert!(!out.flush(Duration::from_millis(50)));
        drop(held);
    }
}
