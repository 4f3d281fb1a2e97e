//! Forwards the `log` crate to Envoy's log, under `[dynamic_modules]`.

use super::abi::{self, ModuleBuffer};

pub(super) struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        let level = match record.level() {
            log::Level::Error => 4,
            log::Level::Warn => 3,
            _ => 2,
        };
        let message = record.args().to_string();
        // SAFETY: the message outlives the call, which copies it.
        unsafe {
            abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes()))
        };
    }

    fn flush(&self) {}
}
