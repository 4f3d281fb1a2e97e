//! Deadlines: the ABI has no per-stream timer for HTTP filters, so one
//! thread of the module's own wakes each stream through its scheduler.

use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::abi::{FilterEnvoy, Scheduler};

pub(super) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A stream's timer, shared with the timer thread. The scheduler is
/// created on first arming and deleted when the stream goes, under the
/// lock the timer thread holds while it commits.
#[derive(Default)]
pub(super) struct TimerSlot {
    scheduler: Mutex<Option<Scheduler>>,
    /// The event id of the latest arming; 0: not armed.
    armed: AtomicU64,
}

static NEXT_EVENT: AtomicU64 = AtomicU64::new(1);

impl TimerSlot {
    /// Runs `f` on the stream's scheduler, made first if there is none yet
    /// (inside one of its callbacks); `None` if there can be none.
    pub(super) fn with_scheduler<R>(
        &self,
        envoy: FilterEnvoy,
        f: impl FnOnce(&Scheduler) -> R,
    ) -> Option<R> {
        let mut scheduler = self.scheduler.lock().ok()?;
        if scheduler.is_none() {
            *scheduler = Scheduler::new(envoy);
        }
        scheduler.as_ref().map(f)
    }

    /// Delivers `event` to the stream on the next turn of its event loop.
    pub(super) fn commit_now(&self, envoy: FilterEnvoy, event: u64) -> bool {
        self.with_scheduler(envoy, |scheduler| scheduler.commit(event))
            .is_some()
    }

    pub(super) fn arm(self: &Arc<Self>, envoy: FilterEnvoy, at_millis: u64) {
        if self.with_scheduler(envoy, |_| ()).is_none() {
            return;
        }
        let event = NEXT_EVENT.fetch_add(1, Ordering::Relaxed);
        self.armed.store(event, Ordering::Release);
        let _ = timer_thread().send(Due {
            at_millis,
            event,
            slot: Arc::downgrade(self),
        });
    }

    pub(super) fn disarm(&self) {
        self.armed.store(0, Ordering::Release);
    }

    /// Whether `event` is the latest arming; it then counts as fired.
    pub(super) fn fired(&self, event: u64) -> bool {
        event != 0
            && self
                .armed
                .compare_exchange(event, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn commit(&self, event: u64) {
        if self.armed.load(Ordering::Acquire) != event {
            return;
        }
        if let Ok(scheduler) = self.scheduler.lock() {
            if let Some(scheduler) = scheduler.as_ref() {
                scheduler.commit(event);
            }
        }
    }

    /// The stream is gone: no event reaches it again.
    pub(super) fn close(&self) {
        self.disarm();
        if let Ok(mut scheduler) = self.scheduler.lock() {
            drop(scheduler.take());
        }
    }
}

/// An armed timer on its way to the timer thread.
struct Due {
    at_millis: u64,
    event: u64,
    slot: Weak<TimerSlot>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at_millis, self.event) == (other.at_millis, other.event)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    /// Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at_millis, other.event).cmp(&(self.at_millis, self.event))
    }
}

/// The module's one timer thread, started on first use.
fn timer_thread() -> Sender<Due> {
    static SENDER: OnceLock<Mutex<Sender<Due>>> = OnceLock::new();
    let sender = SENDER.get_or_init(|| {
        let (sender, receiver) = channel();
        let _ = std::thread::Builder::new()
            .name("grpc-web-bridge-timers".into())
            .spawn(move || run_timers(receiver));
        Mutex::new(sender)
    });
    match sender.lock() {
        Ok(sender) => sender.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn run_timers(receiver: Receiver<Due>) {
    let mut heap: BinaryHeap<Due> = BinaryHeap::new();
    loop {
        let now = now_millis();
        while heap.peek().is_some_and(|due| due.at_millis <= now) {
            if let Some(due) = heap.pop() {
                if let Some(slot) = due.slot.upgrade() {
                    slot.commit(due.event);
                }
            }
        }
        let wait = heap.peek().map_or(Duration::from_secs(3600), |due| {
            Duration::from_millis(due.at_millis - now)
        });
        match receiver.recv_timeout(wait) {
            Ok(due) => heap.push(due),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}
