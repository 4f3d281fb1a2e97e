//! A filter configuration: the plugin's JSON, parsed once, and the
//! counters Envoy lets a module define only while it is created.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::abi::{self, EnvoyBuffer, ModuleBuffer};
use crate::config::Config;
use crate::metrics::Counter;

/// One filter configuration: the parsed JSON and the ids of its counters,
/// which Envoy takes only while the configuration is created.
pub(super) struct FilterConfig {
    /// Tells this configuration's per-thread copy from others'.
    pub id: u64,
    pub config: Config,
    pub counters: HashMap<Counter, usize>,
}

static NEXT_CONFIG_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Each worker's copy of each configuration, for the state machines
    /// (which share it by `Rc`, as in the Wasm VM of a worker).
    pub(super) static CONFIGS: RefCell<HashMap<u64, Rc<Config>>> = RefCell::new(HashMap::new());
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: *mut c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    let created = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Envoy's buffer is valid for this call.
        let json = unsafe { config.as_slice() };
        let config = match Config::from_json(json) {
            Ok(config) => config,
            Err(error) => {
                log::error!("grpc-web-bridge: {error}");
                return std::ptr::null();
            }
        };
        let mut counters = HashMap::new();
        for counter in Counter::all() {
            let name = counter.name(config.side);
            let mut id = 0usize;
            // SAFETY: the name outlives the call; `id` is ours.
            let result = unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                    config_envoy,
                    ModuleBuffer::of(name.as_bytes()),
                    std::ptr::null_mut(),
                    0,
                    &mut id,
                )
            };
            if result == 0 {
                counters.insert(counter, id);
            }
        }
        log::info!("grpc-web-bridge: configured as {:?} (native)", config.side);
        let id = NEXT_CONFIG_ID.fetch_add(1, Ordering::Relaxed);
        Box::into_raw(Box::new(FilterConfig {
            id,
            config,
            counters,
        })) as *const c_void
    }));
    created.unwrap_or(std::ptr::null())
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    if !config.is_null() {
        // SAFETY: made by Box::into_raw in config_new, destroyed once.
        drop(unsafe { Box::from_raw(config as *mut FilterConfig) });
    }
}
