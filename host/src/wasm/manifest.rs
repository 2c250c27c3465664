//! The manifest beside a component: what the plugin is and what it may touch.

use std::path::{Path, PathBuf};

use nas_plugin_api::{ApiVersion, PluginKind};
use serde::{Deserialize, Serialize};

/// Default cap on a guest's linear memory: 256 MiB.
pub const DEFAULT_MEMORY_MAX_BYTES: u64 = 256 << 20;

/// `x.toml` (or `x.wasm.toml`) beside `x.wasm`.
///
/// ```toml
/// id = "memory.c-window"
/// kind = "memory"
/// version = "0.1.0"
/// api_version = "1.0"
/// sha256 = "<lower-case hex sha256 of the .wasm file>"
/// description = "Sliding window, written in C."
/// allowed_hosts = []                # llm: "host" or "host:port", "*.example.com"
/// allowed_dirs = []                 # dataset/evaluator reads; relative to this file, or "{data_dir}/..."
/// fuel_per_call = 1_000_000_000     # wasm instructions (roughly) per call
/// deadline_ms = 5000                # guest time per call, host calls not counted
/// memory_max_bytes = 67108864       # linear memory cap
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmManifest {
    /// `<kind>.<name>`.
    pub id: String,
    /// The role: `memory`, `llm`, `dataset` or `evaluator`.
    pub kind: PluginKind,
    /// The plugin's own version.
    pub version: String,
    /// The plugin API version it was built against, `"major.minor"`.
    pub api_version: String,
    /// Lower-case hex sha256 of the component file.
    pub sha256: String,
    /// One line for `nas plugins list`.
    #[serde(default)]
    pub description: String,
    /// Hosts the LLM world's `http.post` may reach: `host`, `host:port` or
    /// `*.domain`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Directories the `files` import may read (recursively).
    #[serde(default)]
    pub allowed_dirs: Vec<String>,
    /// Fuel (about one unit per wasm instruction) per call; none = unlimited.
    #[serde(default)]
    pub fuel_per_call: Option<u64>,
    /// Guest execution time per call in milliseconds (time in host imports,
    /// such as HTTP, not counted); none = unlimited.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Cap on linear memory in bytes.
    #[serde(default = "default_memory")]
    pub memory_max_bytes: u64,
}

fn default_memory() -> u64 {
    DEFAULT_MEMORY_MAX_BYTES
}

impl WasmManifest {
    /// The manifest file for a component: `x.toml` or `x.wasm.toml` beside
    /// `x.wasm`. Errors when neither or both exist.
    pub fn path_for(component: &Path) -> Result<PathBuf, String> {
        let plain = component.with_extension("toml");
        let mut long = component.as_os_str().to_owned();
        long.push(".toml");
        let long = PathBuf::from(long);
        match (plain.is_file(), long.is_file()) {
            (true, false) => Ok(plain),
            (false, true) => Ok(long),
            (true, true) => Err(format!(
                "both `{}` and `{}` exist beside the component: keep one manifest",
                plain.display(),
                long.display()
            )),
            (false, false) => Err(format!(
                "no manifest beside `{}`: a wasm plugin needs `{}` (id, kind, version, api_version, sha256, ...); see docs/wasm-plugins.md",
                component.display(),
                plain.display()
            )),
        }
    }

    /// Reads and checks a manifest file.
    pub fn load(path: &Path) -> Result<WasmManifest, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let manifest: WasmManifest = toml::from_str(&text)
            .map_err(|e| format!("`{}` is not a valid wasm plugin manifest: {e}", path.display()))?;
        manifest.check().map_err(|e| format!("`{}`: {e}", path.display()))?;
        Ok(manifest)
    }

    /// Checks fields that serde cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.kind.role().and_then(|r| r.wasm).is_none() {
            let kinds: Vec<&str> = PluginKind::ALL
                .into_iter()
                .filter(|k| k.role().is_some_and(|r| r.wasm.is_some()))
                .map(PluginKind::as_str)
                .collect();
            let why = match self.kind.role() {
                Some(role) => format!(" (a {} is a native plugin only)", role.noun),
                None => String::new(),
            };
            return Err(format!("`kind` must be one of {}{why}", kinds.join(", ")));
        }
        let info = nas_plugin_api::PluginInfo::new(self.id.clone(), self.kind, self.version.clone(), "");
        info.validate()?;
        self.api()?;
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
            return Err(format!("`sha256` must be 64 lower-case hex digits, got `{}`", self.sha256));
        }
        if self.memory_max_bytes < 64 * 1024 {
            return Err(format!("`memory_max_bytes` is {}, at least one 64 KiB page is needed", self.memory_max_bytes));
        }
        if self.fuel_per_call == Some(0) || self.deadline_ms == Some(0) {
            return Err("`fuel_per_call` and `deadline_ms` must be positive when given".into());
        }
        if !self.allowed_hosts.is_empty() && self.kind != PluginKind::Llm {
            return Err(format!("`allowed_hosts` is only for llm plugins, this one is a {}", self.kind));
        }
        for h in &self.allowed_hosts {
            if h.is_empty() || h.contains('/') || h.contains("://") {
                return Err(format!(
                    "`allowed_hosts` entry `{h}` must be `host`, `host:port` or `*.domain`, no scheme or path"
                ));
            }
        }
        Ok(())
    }

    /// The API version as parsed from `api_version`.
    pub fn api(&self) -> Result<ApiVersion, String> {
        let bad = || format!("`api_version` must be \"major.minor\", got `{}`", self.api_version);
        let (major, minor) = self.api_version.split_once('.').ok_or_else(bad)?;
        Ok(ApiVersion { major: major.parse().map_err(|_| bad())?, minor: minor.parse().map_err(|_| bad())? })
    }
}

/// An entry of `allowed_hosts`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostRule {
    host: String,
    port: Option<u16>,
    wildcard: bool,
}

impl HostRule {
    pub(crate) fn parse(s: &str) -> Result<HostRule, String> {
        let (wildcard, rest) = match s.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| format!("`allowed_hosts` entry `{s}` has a bad port"))?;
                (h, Some(port))
            }
            _ => (rest, None),
        };
        Ok(HostRule { host: host.trim_matches(['[', ']']).to_ascii_lowercase(), port, wildcard })
    }

    pub(crate) fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        let host_ok = if self.wildcard { host.ends_with(&format!(".{}", self.host)) } else { host == self.host };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules_match_host_port_and_subdomains() {
        let r = HostRule::parse("127.0.0.1").expect("parses");
        assert!(r.allows("127.0.0.1", 8080));
        assert!(!r.allows("127.0.0.2", 8080));
        let r = HostRule::parse("api.example.com:443").expect("parses");
        assert!(r.allows("API.example.com", 443));
        assert!(!r.allows("api.example.com", 80));
        let r = HostRule::parse("*.example.com").expect("parses");
        assert!(r.allows("a.example.com", 1));
        assert!(!r.allows("example.com", 1));
        assert!(!r.allows("evilexample.com", 1));
    }

    #[test]
    fn manifest_rejects_unknown_keys_and_bad_values() {
        let ok = format!(
            "id = \"memory.x\"\nkind = \"memory\"\nversion = \"0.1.0\"\napi_version = \"1.0\"\nsha256 = \"{}\"\n",
            "a".repeat(64)
        );
        let m: WasmManifest = toml::from_str(&ok).expect("parses");
        m.check().expect("valid");
        assert_eq!(m.memory_max_bytes, DEFAULT_MEMORY_MAX_BYTES);
        assert!(toml::from_str::<WasmManifest>(&format!("{ok}colour = 1\n")).is_err());
        let bad: WasmManifest = toml::from_str(&ok.replace("memory.x", "llm.x")).expect("parses");
        assert!(bad.check().expect_err("kind mismatch").contains("memory."));
        let bad: WasmManifest = toml::from_str(&ok.replace("\"1.0\"", "\"one\"")).expect("parses");
        assert!(bad.check().expect_err("bad api").contains("api_version"));
    }
}
