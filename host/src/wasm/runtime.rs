//! The runtime: the one engine, a store per instance with the manifest's
//! grants and limits (fuel, guest-time deadline, memory cap), calls that
//! throw a trapped instance away, and errors that say what happened.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nas_plugin_api::{ErrorCode, HostContext, PluginError, PluginInfo};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap, UpdateDeadline};

use super::bindings::t;
use super::convert;
use super::manifest::HostRule;
use super::world::{Bound, Pre};
use super::WasmManifest;

/// How often the epoch ticks (the granularity of `deadline_ms`).
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The one engine of the process (fuel and epoch interruption on), with a
/// ticker thread driving epochs.
pub(super) fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.wasm_component_model(true);
            config.consume_fuel(true);
            config.epoch_interruption(true);
            let engine = Engine::new(&config).map_err(|e| format!("cannot start the wasm engine: {e}"))?;
            let ticker = engine.clone();
            std::thread::Builder::new()
                .name("nas-wasm-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.increment_epoch();
                })
                .map_err(|e| format!("cannot start the wasm epoch thread: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Per-store data: the sandbox's grants and the per-call accounting.
pub(crate) struct GuestState {
    pub(super) plugin_id: String,
    pub(super) limiter: Limiter,
    pub(super) allowed_hosts: Vec<HostRule>,
    pub(super) allowed_host_names: Vec<String>,
    pub(super) base_read_dirs: Vec<PathBuf>,
    pub(super) read_dirs: Vec<PathBuf>,
    pub(super) allowed_dir_names: Vec<String>,
    pub(super) write_dir: Option<PathBuf>,
    pub(super) api_key: Option<(String, String)>,
    pub(super) http: Option<reqwest::blocking::Client>,
    pub(super) denials: Vec<String>,
    pub(super) host_time: Duration,
    pub(super) call_start: Instant,
    pub(super) deadline: Option<Duration>,
    pub(super) deadline_hit: bool,
    pub(super) log: Vec<String>,
    pub(super) log_to_stderr: bool,
}

/// Caps linear memory, remembering a refused growth so the error can say so.
pub(super) struct Limiter {
    pub(super) cap: usize,
    pub(super) refused: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.refused = Some(desired);
            return Err(wasmtime::Error::msg(format!(
                "memory growth to {desired} bytes refused: the cap is {} bytes",
                self.cap
            )));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// What every instance of a loaded component shares.
pub(super) struct Shared {
    pub(super) path: PathBuf,
    pub(super) manifest: WasmManifest,
    pub(super) manifest_dir: PathBuf,
    pub(super) info: PluginInfo,
    pub(super) pre: Pre,
    pub(super) log_to_stderr: bool,
    pub(super) from_cache: bool,
}

/// Explains a failed call: memory cap, deadline, fuel, trap, or host error.
pub(super) fn describe_trap(shared: &Shared, store: &Store<GuestState>, e: &wasmtime::Error, what: &str) -> String {
    classify(shared, store, e, what).message
}

pub(super) fn classify(shared: &Shared, store: &Store<GuestState>, e: &wasmtime::Error, what: &str) -> PluginError {
    let id = &shared.info.id;
    let m = &shared.manifest;
    let data = store.data();
    if let Some(bytes) = data.limiter.refused {
        return PluginError::internal(format!(
            "wasm plugin `{id}` tried to grow its memory to {bytes} bytes in `{what}`, over its manifest's memory_max_bytes = {}; the call was stopped",
            m.memory_max_bytes
        ));
    }
    if data.deadline_hit {
        return PluginError::new(
            ErrorCode::Timeout,
            format!(
                "wasm plugin `{id}` ran past its deadline of {} ms of guest time in `{what}` and was stopped",
                m.deadline_ms.unwrap_or(0)
            ),
        );
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginError::new(
            ErrorCode::Timeout,
            format!(
                "wasm plugin `{id}` ran out of fuel in `{what}` (fuel_per_call = {}): it was stopped, an endless loop is likely",
                m.fuel_per_call.unwrap_or(u64::MAX)
            ),
        ),
        Some(Trap::Interrupt) => {
            PluginError::new(ErrorCode::Timeout, format!("wasm plugin `{id}` was interrupted in `{what}`"))
        }
        Some(trap) => PluginError::new(ErrorCode::Panic, format!("wasm plugin `{id}` trapped in `{what}`: {trap}")),
        None => PluginError::internal(format!("wasm plugin `{id}` failed in `{what}`: {}", one_line(e))),
    }
}

fn one_line(e: &wasmtime::Error) -> String {
    format!("{e:?}").lines().next().unwrap_or_default().to_string()
}

impl Shared {
    /// A fresh store with the manifest's grants and limits.
    pub(super) fn new_store(
        &self,
        engine: &Engine,
        ctx: &HostContext,
        api_key: Option<(String, String)>,
    ) -> Result<Store<GuestState>, PluginError> {
        let m = &self.manifest;
        let allowed_hosts = m
            .allowed_hosts
            .iter()
            .map(|h| HostRule::parse(h))
            .collect::<Result<Vec<_>, _>>()
            .map_err(PluginError::config)?;
        let mut read_dirs = Vec::new();
        for d in &m.allowed_dirs {
            let expanded = match (d.strip_prefix("{data_dir}"), &ctx.data_dir) {
                (Some(rest), Some(data)) => data.join(rest.trim_start_matches('/')),
                (Some(_), None) => continue,
                (None, _) => self.manifest_dir.join(d),
            };
            // A granted directory that does not exist grants nothing.
            if let Ok(real) = expanded.canonicalize() {
                read_dirs.push(real);
            }
        }
        let cap = usize::try_from(m.memory_max_bytes).unwrap_or(usize::MAX);
        let state = GuestState {
            plugin_id: self.info.id.clone(),
            limiter: Limiter { cap, refused: None },
            allowed_hosts,
            allowed_host_names: m.allowed_hosts.clone(),
            base_read_dirs: read_dirs.clone(),
            read_dirs,
            allowed_dir_names: m.allowed_dirs.clone(),
            write_dir: None,
            api_key,
            http: None,
            denials: Vec::new(),
            host_time: Duration::ZERO,
            call_start: Instant::now(),
            deadline: m.deadline_ms.map(Duration::from_millis),
            deadline_hit: false,
            log: Vec::new(),
            log_to_stderr: self.log_to_stderr,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            if let Some(limit) = s.deadline {
                if s.call_start.elapsed().saturating_sub(s.host_time) > limit {
                    s.deadline_hit = true;
                    return Ok(UpdateDeadline::Interrupt);
                }
            }
            Ok(UpdateDeadline::Continue(1))
        });
        Ok(store)
    }

    /// Resets the per-call accounting and refuels before a call.
    pub(super) fn arm(&self, store: &mut Store<GuestState>) {
        let fuel = self.manifest.fuel_per_call.unwrap_or(u64::MAX);
        // Fuel is enabled on the engine, so this cannot fail.
        let _ = store.set_fuel(fuel);
        store.set_epoch_deadline(1);
        let s = store.data_mut();
        s.denials.clear();
        s.host_time = Duration::ZERO;
        s.call_start = Instant::now();
        s.deadline_hit = false;
        s.limiter.refused = None;
    }
}

/// One plugin instance: its own store, remade after a trap.
pub(super) struct Instance {
    pub(super) shared: Arc<Shared>,
    pub(super) settings: String,
    pub(super) ctx: HostContext,
    pub(super) api_key: Option<(String, String)>,
    pub(super) live: Option<(Store<GuestState>, Bound)>,
}

impl Instance {
    /// Instantiates and calls `init`.
    pub(super) fn start(&mut self) -> Result<(), PluginError> {
        let engine = engine().map_err(PluginError::internal)?;
        let mut store = self.shared.new_store(engine, &self.ctx, self.api_key.clone())?;
        self.shared.arm(&mut store);
        let bound =
            self.shared.pre.instantiate(&mut store).map_err(|e| classify(&self.shared, &store, &e, "instantiation"))?;
        self.shared.arm(&mut store);
        let ctx = convert::ctx(&self.ctx);
        match bound.init(&mut store, &self.settings, &ctx) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(convert::error(e)),
            Err(e) => return Err(classify(&self.shared, &store, &e, "init")),
        }
        self.live = Some((store, bound));
        Ok(())
    }

    /// Calls into the guest with fresh fuel and deadline; a trap throws the
    /// instance away (the next call makes a new one).
    pub(super) fn call<R>(
        &mut self,
        what: &str,
        extra_read: Option<&Path>,
        write_dir: Option<&Path>,
        f: impl FnOnce(&mut Store<GuestState>, &Bound) -> wasmtime::Result<Result<R, t::PluginError>>,
    ) -> Result<R, PluginError> {
        if self.live.is_none() {
            self.start()?;
        }
        let (mut store, bound) = self.live.take().expect("started above");
        self.shared.arm(&mut store);
        {
            let s = store.data_mut();
            s.read_dirs = s.base_read_dirs.clone();
            if let Some(real) = extra_read.and_then(|d| d.canonicalize().ok()) {
                s.read_dirs.push(real);
            }
            s.write_dir = write_dir.and_then(|d| d.canonicalize().ok());
        }
        let result = f(&mut store, &bound);
        store.data_mut().write_dir = None;
        match result {
            Ok(Ok(r)) => {
                self.live = Some((store, bound));
                Ok(r)
            }
            Ok(Err(e)) => {
                let denials = std::mem::take(&mut store.data_mut().denials);
                self.live = Some((store, bound));
                let e = convert::error(e);
                match denials.first() {
                    Some(d) => Err(PluginError::new(
                        ErrorCode::Unauthorized,
                        format!("{d} (the plugin then failed with: {e})"),
                    )),
                    None => Err(e),
                }
            }
            Err(e) => Err(classify(&self.shared, &store, &e, what)),
        }
    }
}
