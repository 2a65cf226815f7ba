//! The Kubernetes manifests under `deploy/` against the binary and the code: every flag and
//! `VIGIL_*` name exists in `vigil serve --help`, the ConfigMap's `vigil.toml` (with the
//! container's arguments and environment) is accepted by `Config::resolve` and by a running
//! `vigil serve`, ports and probe paths agree with the listen address and answer, the drain fits
//! in the grace period, tokens and the database URL come from a Secret, and the Service, the
//! PodDisruptionBudget and the Prometheus annotations point at the Deployment's pods.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use clap::{Args, FromArgMatches};
use common::process::{ServingProcess, vigil};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use vigil::config::{Config, ConfigError, Environment, ServeArgs};
use yaml_rust2::{Yaml, YamlLoader};

/// What `status.podIP` stands for when the environment is expanded.
const POD_IP: &str = "10.1.2.3";
/// The readiness path: 503 while draining.
const READY: &str = "/v2/health/ready";
/// The liveness path: 200 while the process serves HTTP, draining or not.
const LIVE: &str = "/v2/health/live";

// ---------------------------------------------------------------------------------------------
// The manifests

/// Every document of every `*.yaml`/`*.yml` file under `deploy/`.
struct Manifests {
    documents: Vec<(String, Yaml)>,
}

impl Manifests {
    fn load() -> Manifests {
        let dir = common::root().join("deploy");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut documents = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("manifest read");
            let name = file
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .to_string();
            let loaded = YamlLoader::load_from_str(&text)
                .unwrap_or_else(|e| panic!("{name} is not YAML: {e}"));
            for document in loaded.into_iter().filter(|d| !d.is_null()) {
                assert!(
                    document["kind"].as_str().is_some(),
                    "{name}: a document without a kind: {document:?}"
                );
                documents.push((name.clone(), document));
            }
        }
        assert!(
            !documents.is_empty(),
            "no manifests under {}",
            dir.display()
        );
        Manifests { documents }
    }

    fn of_kind(&self, kind: &str) -> Vec<&Yaml> {
        self.documents
            .iter()
            .filter(|(_, d)| d["kind"].as_str() == Some(kind))
            .map(|(_, d)| d)
            .collect()
    }

    fn one(&self, kind: &str) -> &Yaml {
        let found = self.of_kind(kind);
        assert_eq!(found.len(), 1, "expected exactly one {kind}");
        found[0]
    }

    fn named(&self, kind: &str, name: &str) -> Option<&Yaml> {
        self.of_kind(kind)
            .into_iter()
            .find(|d| d["metadata"]["name"].as_str() == Some(name))
    }

    /// The Deployment's pod template and its one container.
    fn pod(&self) -> Pod<'_> {
        let deployment = self.one("Deployment");
        let template = &deployment["spec"]["template"];
        let containers = items(&template["spec"]["containers"]);
        assert_eq!(containers.len(), 1, "one container per vigil pod");
        Pod {
            deployment,
            template,
            container: &containers[0],
        }
    }

    /// `key` of Secret `name`, from `stringData` or (base64) `data`.
    fn secret_value(&self, name: &str, key: &str) -> Option<String> {
        let secret = self.named("Secret", name)?;
        if let Some(value) = secret["stringData"][key].as_str() {
            return Some(value.to_string());
        }
        secret["data"][key].as_str().map(|encoded| {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap_or_else(|e| panic!("Secret {name} key {key}: {e}"));
            String::from_utf8(bytes).expect("UTF-8 secret")
        })
    }
}

struct Pod<'a> {
    deployment: &'a Yaml,
    template: &'a Yaml,
    container: &'a Yaml,
}

/// Where an environment variable's value comes from.
#[derive(Debug)]
enum Source {
    Literal(String),
    Secret {
        name: String,
        key: String,
        optional: bool,
    },
    Field(String),
    Other,
}

impl Pod<'_> {
    fn args(&self) -> Vec<String> {
        items(&self.container["args"])
            .iter()
            .map(|a| text(a, "container args").to_string())
            .collect()
    }

    fn env(&self) -> Vec<(String, Source)> {
        items(&self.container["env"])
            .iter()
            .map(|entry| {
                let name = text(&entry["name"], "env name").to_string();
                let from = &entry["valueFrom"];
                let source = if let Some(value) = entry["value"].as_str() {
                    Source::Literal(value.to_string())
                } else if !from["secretKeyRef"].is_badvalue() {
                    let reference = &from["secretKeyRef"];
                    Source::Secret {
                        name: text(&reference["name"], "secretKeyRef name").to_string(),
                        key: text(&reference["key"], "secretKeyRef key").to_string(),
                        optional: reference["optional"].as_bool() == Some(true),
                    }
                } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                    Source::Field(path.to_string())
                } else {
                    Source::Other
                };
                (name, source)
            })
            .collect()
    }

    /// What the container sees: `$(NAME)` references expanded as the kubelet does (only names
    /// defined earlier in the list), secrets read from the manifests' Secret, `status.podIP` as
    /// [`POD_IP`]. `None`: an optional secret key that is not there.
    fn env_values(&self, manifests: &Manifests) -> Vec<(String, Option<String>)> {
        let mut values: Vec<(String, Option<String>)> = Vec::new();
        for (name, source) in self.env() {
            let value = match source {
                Source::Literal(value) => Some(expand(&name, &value, &values)),
                Source::Secret {
                    name: secret,
                    key,
                    optional,
                } => {
                    let value = manifests.secret_value(&secret, &key);
                    assert!(
                        value.is_some() || optional,
                        "{name}: Secret {secret} has no key {key} in the manifests"
                    );
                    value
                }
                Source::Field(path) if path == "status.podIP" => Some(POD_IP.to_string()),
                Source::Field(path) => Some(format!("<{path}>")),
                Source::Other => None,
            };
            values.push((name, value));
        }
        values
    }

    /// The container port `port` (a number or a port name) stands for.
    fn resolve_port(&self, port: &Yaml, what: &str) -> i64 {
        if let Some(number) = port.as_i64() {
            return number;
        }
        let name = text(port, what);
        if let Ok(number) = name.parse() {
            return number;
        }
        items(&self.container["ports"])
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .map(|p| int(&p["containerPort"], "containerPort"))
            .unwrap_or_else(|| panic!("{what}: no container port named {name}"))
    }

    fn labels(&self) -> BTreeMap<String, String> {
        string_map(&self.template["metadata"]["labels"], "pod labels")
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        string_map(&self.template["metadata"]["annotations"], "pod annotations")
    }

    fn mounts(&self) -> Vec<&Yaml> {
        items(&self.container["volumeMounts"]).iter().collect()
    }

    fn volume(&self, name: &str) -> &Yaml {
        items(&self.template["spec"]["volumes"])
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no volume {name}"))
    }

    /// The mount holding `path` (the longest mount path that is a prefix of it).
    fn mount_of(&self, path: &Path) -> Option<&Yaml> {
        self.mounts()
            .into_iter()
            .filter(|m| path.starts_with(text(&m["mountPath"], "mountPath")))
            .max_by_key(|m| text(&m["mountPath"], "mountPath").len())
    }

    /// Mount paths that do not exist on this machine: the problems `Config::resolve` may report
    /// about them only exist here.
    fn cluster_only_paths(&self) -> Vec<String> {
        self.mounts()
            .iter()
            .map(|m| text(&m["mountPath"], "mountPath").to_string())
            .filter(|p| !Path::new(p).exists())
            .collect()
    }

    /// The `--config` file the container is started with (flag, else `VIGIL_CONFIG`).
    fn config_path(&self) -> PathBuf {
        if let Some(path) = flag_value(&self.args(), "--config") {
            return PathBuf::from(path);
        }
        self.env()
            .into_iter()
            .find_map(|(name, source)| match source {
                Source::Literal(value) if name == "VIGIL_CONFIG" => Some(PathBuf::from(value)),
                _ => None,
            })
            .expect("the container names a config file (--config or VIGIL_CONFIG)")
    }

    /// The ConfigMap's text the container reads as its config file.
    fn config_text(&self, manifests: &Manifests) -> String {
        let path = self.config_path();
        let mount = self
            .mount_of(&path)
            .unwrap_or_else(|| panic!("{} is on no volume mount", path.display()));
        let mount_path = Path::new(text(&mount["mountPath"], "mountPath"));
        let volume = self.volume(text(&mount["name"], "mount name"));
        let config_map = text(
            &volume["configMap"]["name"],
            "the config file's volume is a ConfigMap",
        );
        let relative = match mount["subPath"].as_str() {
            Some(sub_path) => {
                assert_eq!(mount_path, path, "a subPath mount is the file itself");
                sub_path.to_string()
            }
            None => path
                .strip_prefix(mount_path)
                .expect("under the mount")
                .to_string_lossy()
                .to_string(),
        };
        // `items` maps keys to other file names.
        let key = items(&volume["configMap"]["items"])
            .iter()
            .find(|item| item["path"].as_str() == Some(relative.as_str()))
            .map_or(relative.clone(), |item| {
                text(&item["key"], "item key").to_string()
            });
        let map = manifests
            .named("ConfigMap", config_map)
            .unwrap_or_else(|| panic!("no ConfigMap {config_map} in the manifests"));
        text(&map["data"][key.as_str()], "the ConfigMap's config file").to_string()
    }

    /// Seconds the preStop hook waits: `sleep.seconds`, or an `exec` of `sleep N`.
    fn pre_stop_seconds(&self) -> i64 {
        let hook = &self.container["lifecycle"]["preStop"];
        if let Some(seconds) = hook["sleep"]["seconds"].as_i64() {
            return seconds;
        }
        let command: Vec<&str> = items(&hook["exec"]["command"])
            .iter()
            .map(|c| text(c, "preStop command"))
            .collect();
        let words: Vec<&str> = command.iter().flat_map(|c| c.split_whitespace()).collect();
        let at = words
            .iter()
            .position(|w| *w == "sleep" || w.ends_with("/sleep"))
            .unwrap_or_else(|| panic!("no preStop sleep: {hook:?}"));
        words
            .get(at + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("preStop sleep without whole seconds: {command:?}"))
    }
}

fn items(yaml: &Yaml) -> &[Yaml] {
    yaml.as_vec().map_or(&[], Vec::as_slice)
}

fn text<'a>(yaml: &'a Yaml, what: &str) -> &'a str {
    yaml.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {yaml:?}"))
}

fn int(yaml: &Yaml, what: &str) -> i64 {
    yaml.as_i64()
        .unwrap_or_else(|| panic!("{what}: expected an integer, found {yaml:?}"))
}

/// A mapping of strings to strings (labels, annotations, selectors). Kubernetes refuses other
/// values, e.g. an unquoted `true`.
fn string_map(yaml: &Yaml, what: &str) -> BTreeMap<String, String> {
    yaml.as_hash()
        .unwrap_or_else(|| panic!("{what}: expected a mapping, found {yaml:?}"))
        .iter()
        .map(|(k, v)| {
            (
                text(k, what).to_string(),
                text(v, &format!("{what}: value")).to_string(),
            )
        })
        .collect()
}

/// `value` with `$(NAME)` replaced by the value of `NAME` defined earlier; any other reference
/// would reach the process as it is written, which is a mistake here.
fn expand(name: &str, value: &str, earlier: &[(String, Option<String>)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find("$(") {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(')')
            .unwrap_or_else(|| panic!("{name}: unterminated $( in {value}"));
        let reference = &rest[at + 2..at + end];
        let found = earlier
            .iter()
            .find(|(n, _)| n == reference)
            .and_then(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name}: $({reference}) is not defined before it"));
        out.push_str(&found);
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    out
}

/// The value of `--flag value` or `--flag=value` in `args`.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, arg)| {
        if arg == flag {
            args.get(i + 1).cloned()
        } else {
            arg.strip_prefix(flag)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
        }
    })
}

/// `args` without `flag` and its value.
fn without_flag(args: &[String], flag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for arg in args {
        if skip {
            skip = false;
        } else if arg == flag {
            skip = true;
        } else if !arg.starts_with(&format!("{flag}=")) {
            out.push(arg.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The binary

/// `vigil serve --help`: its flags, and the `VIGIL_*` variable of each.
struct Help {
    text: String,
    flags: BTreeSet<String>,
    env: BTreeMap<String, String>,
}

fn help() -> &'static Help {
    static HELP: OnceLock<Help> = OnceLock::new();
    HELP.get_or_init(|| {
        let output = vigil()
            .args(["serve", "--help"])
            .output()
            .expect("vigil runs");
        assert!(output.status.success(), "vigil serve --help failed");
        let text = String::from_utf8(output.stdout).expect("UTF-8 help");
        let mut flags = BTreeSet::new();
        let mut env = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines().map(str::trim_start) {
            if line.starts_with("--") || (line.starts_with('-') && line.contains(", --")) {
                // `--addr <ADDR>`, `-h, --help` (not `- human: ...`, a value's description)
                current = line
                    .split_whitespace()
                    .map(|w| w.trim_end_matches(','))
                    .find(|w| w.starts_with("--"))
                    .map(str::to_string);
                flags.extend(current.clone());
            } else if let Some(at) = line.find("[env: ") {
                // `[env: VIGIL_ADDR=]`, or `[env: VIGIL_ADMIN_TOKEN]` when values are hidden
                let name: String = line[at + 6..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let flag = current
                    .clone()
                    .unwrap_or_else(|| panic!("{name} before any flag"));
                env.insert(name, flag);
            }
        }
        // The parser reads both forms of `[env: ...]` and the flags around them.
        assert_eq!(
            env.get("VIGIL_ADDR").map(String::as_str),
            Some("--addr"),
            "{text}"
        );
        assert_eq!(
            env.get("VIGIL_ADMIN_TOKEN").map(String::as_str),
            Some("--admin-token"),
            "{text}"
        );
        assert!(flags.contains("--config") && flags.contains("--help"));
        Help { text, flags, env }
    })
}

/// `vigil serve <argv>` parsed by the binary's own `ServeArgs`, without reading this process's
/// environment (the manifests' variables are passed as the flags they stand for).
fn parse_serve(argv: &[String]) -> ServeArgs {
    let command = ServeArgs::augment_args(clap::Command::new("serve").no_binary_name(true))
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(argv)
        .unwrap_or_else(|e| panic!("vigil serve {argv:?}: {e}"));
    ServeArgs::from_arg_matches(&matches).expect("ServeArgs")
}

/// The container's `serve` arguments, then its `VIGIL_*` variables as flags (arguments win, as
/// with clap), the config file replaced by `config_file`, then `extra`.
fn serve_argv(
    pod: &Pod<'_>,
    manifests: &Manifests,
    config_file: &Path,
    extra: &[String],
) -> Vec<String> {
    let args = pod.args();
    assert_eq!(
        args.first().map(String::as_str),
        Some("serve"),
        "the container runs `vigil serve`: {args:?}"
    );
    let mut argv = without_flag(&args[1..], "--config");
    argv.push("--config".into());
    argv.push(config_file.display().to_string());
    for (name, value) in pod.env_values(manifests) {
        let (Some(flag), Some(value)) = (help().env.get(&name), value) else {
            continue;
        };
        if flag == "--config" || flag_value(&args, flag).is_some() {
            continue;
        }
        argv.push(flag.clone());
        argv.push(value);
    }
    argv.extend(extra.iter().cloned());
    argv
}

/// The other tools' variables the binary honours, from the container's environment.
fn environment(pod: &Pod<'_>, manifests: &Manifests) -> Environment {
    let values: BTreeMap<String, String> = pod
        .env_values(manifests)
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect();
    let var = |name: &str| values.get(name).cloned();
    Environment {
        ort_dylib_path: var("ORT_DYLIB_PATH").map(PathBuf::from),
        mlflow_tracking_uri: var("MLFLOW_TRACKING_URI"),
        mlflow_tracking_token: var("MLFLOW_TRACKING_TOKEN"),
        mlflow_tracking_username: var("MLFLOW_TRACKING_USERNAME"),
        mlflow_tracking_password: var("MLFLOW_TRACKING_PASSWORD"),
        pgpassword: var("PGPASSWORD"),
    }
}

/// `Config::resolve` of the container's arguments, environment and the ConfigMap's file (or
/// `toml` instead of it), plus `extra` flags.
fn resolve(
    manifests: &Manifests,
    toml: Option<&str>,
    extra: &[String],
) -> Result<Config, ConfigError> {
    let pod = manifests.pod();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("vigil.toml");
    let text = toml.map_or_else(|| pod.config_text(manifests), str::to_string);
    std::fs::write(&file, text).expect("config written");
    let argv = serve_argv(&pod, manifests, &file, extra);
    Config::resolve(parse_serve(&argv), environment(&pod, manifests))
}

/// The settings the pods run with, but with the repository's `models/` for the cluster's.
fn cluster_config(manifests: &Manifests) -> Config {
    let models = vec![
        "--models".to_string(),
        common::models_dir().display().to_string(),
    ];
    resolve(manifests, None, &models)
        .unwrap_or_else(|e| panic!("the manifests' settings with local models: {e}"))
}

/// `GET path` over a fresh connection: status and body.
fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response}"));
    (status, response)
}

// ---------------------------------------------------------------------------------------------
// The checks

#[test]
fn every_flag_and_variable_exists_in_the_binary() {
    let manifests = Manifests::load();
    let pod = manifests.pod();
    let help = help();
    let command: Vec<&str> = items(&pod.container["command"])
        .iter()
        .map(|c| text(c, "command"))
        .collect();
    assert!(
        command.len() == 1 && Path::new(command[0]).file_name() == Some("vigil".as_ref()),
        "the container runs the vigil binary: {command:?}"
    );
    let mut missing = Vec::new();
    let args = pod.args();
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap_or(arg);
        if !help.flags.contains(flag) {
            missing.push(format!("flag {flag}"));
        }
    }
    let env = pod.env();
    for (at, (name, _)) in env.iter().enumerate() {
        if name.starts_with("VIGIL_") {
            if !help.env.contains_key(name) {
                missing.push(format!("variable {name}"));
            }
            continue;
        }
        // Another tool's variable the help names (ORT_DYLIB_PATH, MLFLOW_TRACKING_*, ...), or a
        // helper that a later variable expands.
        let named_in_help = help
            .text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| word == name);
        let expanded_later = env[at + 1..].iter().any(
            |(_, source)| matches!(source, Source::Literal(v) if v.contains(&format!("$({name})"))),
        );
        if !named_in_help && !expanded_later {
            missing.push(format!("variable {name} (neither honoured nor expanded)"));
        }
    }
    assert!(
        missing.is_empty(),
        "not in `vigil serve --help`: {missing:?}"
    );
    // Every value given on the command line or in the environment parses as the binary would.
    let config_file = PathBuf::from("/nonexistent/vigil.toml");
    let argv = serve_argv(&pod, &manifests, &config_file, &[]);
    assert_eq!(parse_serve(&argv).config, Some(config_file));
}

#[test]
fn the_config_map_is_a_config_the_binary_accepts() {
    let manifests = Manifests::load();
    let pod = manifests.pod();
    let toml_text = pod.config_text(&manifests);
    // As the pods read it: the only problems may be about paths that exist only in the cluster.
    if let Err(ConfigError(problems)) = resolve(&manifests, None, &[]) {
        let cluster = pod.cluster_only_paths();
        let elsewhere: Vec<&String> = problems
            .iter()
            .filter(|p| !cluster.iter().any(|path| p.contains(path.as_str())))
            .collect();
        assert!(
            elsewhere.is_empty(),
            "problems not explained by the cluster's mounts {cluster:?}: {elsewhere:?}"
        );
    }
    let config = cluster_config(&manifests);
    assert!(
        config.database.is_some(),
        "replicas share a database: {config:?}"
    );
    // Settings left commented out (`# key = value`) are valid once uncommented.
    let uncommented: Vec<String> = toml_text
        .lines()
        .map(|line| {
            let setting = line.trim_start().strip_prefix("# ").filter(|rest| {
                rest.split_once(" = ").is_some_and(|(key, _)| {
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                })
            });
            setting.map_or_else(|| line.to_string(), str::to_string)
        })
        .collect();
    let models = [
        "--models".to_string(),
        common::models_dir().display().to_string(),
    ];
    resolve(&manifests, Some(&uncommented.join("\n")), &models)
        .unwrap_or_else(|e| panic!("the commented-out settings: {e}"));
    // The repository is mounted read-only; the state is on a writable volume (the root file
    // system is read-only).
    let models_mount = pod
        .mount_of(&toml_path(&toml_text, "models"))
        .expect("the models directory is on a volume");
    assert_eq!(
        models_mount["readOnly"].as_bool(),
        Some(true),
        "models mounted read-only"
    );
    let state_mount = pod
        .mount_of(&toml_path(&toml_text, "state"))
        .expect("the state is on a volume");
    assert_ne!(
        state_mount["readOnly"].as_bool(),
        Some(true),
        "state is written"
    );
    let state_volume = pod.volume(text(&state_mount["name"], "mount name"));
    assert!(
        !state_volume["emptyDir"].is_badvalue()
            || !state_volume["persistentVolumeClaim"].is_badvalue(),
        "state on an emptyDir or a claim, not {state_volume:?}"
    );
}

/// The path `key` names in the config file.
fn toml_path(text: &str, key: &str) -> PathBuf {
    let table: toml::Table = toml::from_str(text).expect("TOML");
    PathBuf::from(
        table
            .get(key)
            .and_then(toml::Value::as_str)
            .unwrap_or_else(|| panic!("vigil.toml sets no {key}")),
    )
}

#[test]
fn ports_agree_with_the_listen_address() {
    let manifests = Manifests::load();
    let pod = manifests.pod();
    let config = cluster_config(&manifests);
    assert!(
        config.addr.ip().is_unspecified(),
        "listens on every interface of the pod, not {}",
        config.addr
    );
    let port = i64::from(config.addr.port());
    let grpc = config.grpc_addr.expect("the gRPC service is on");
    assert!(
        grpc.ip().is_unspecified(),
        "gRPC listens on every interface of the pod, not {grpc}"
    );
    let grpc_port = i64::from(grpc.port());
    let declared: Vec<i64> = items(&pod.container["ports"])
        .iter()
        .map(|p| int(&p["containerPort"], "containerPort"))
        .collect();
    assert_eq!(declared, [port, grpc_port], "container ports");

    let probe = |kind: &str| {
        let get = &pod.container[kind]["httpGet"];
        let path = text(&get["path"], kind).to_string();
        (path, pod.resolve_port(&get["port"], kind))
    };
    assert_eq!(probe("readinessProbe"), (READY.to_string(), port));
    assert_eq!(probe("livenessProbe"), (LIVE.to_string(), port));
    if !pod.container["startupProbe"].is_badvalue() {
        let (path, probe_port) = probe("startupProbe");
        assert!(path == LIVE || path == READY, "startup probe path {path}");
        assert_eq!(probe_port, port, "startup probe port");
    }

    let service = manifests.one("Service");
    let service_ports = items(&service["spec"]["ports"]);
    let targets: Vec<i64> = service_ports
        .iter()
        .map(|service_port| {
            let target = &service_port["targetPort"];
            let target = if target.is_badvalue() {
                &service_port["port"]
            } else {
                target
            };
            pod.resolve_port(target, "Service targetPort")
        })
        .collect();
    assert_eq!(
        targets,
        [port, grpc_port],
        "the Service reaches HTTP and gRPC"
    );

    assert_eq!(
        pod.annotations().get("prometheus.io/port"),
        Some(&port.to_string()),
        "scrape port"
    );

    // Other replicas and GET /admin/replicas reach this one at the pod's IP and this port.
    let advertised = config
        .database
        .as_ref()
        .and_then(|d| d.advertise_address.clone());
    assert_eq!(advertised, Some(format!("{POD_IP}:{port}")));
}

#[test]
fn probe_and_scrape_paths_answer_on_a_running_gateway() {
    let manifests = Manifests::load();
    let pod = manifests.pod();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("vigil.toml");
    std::fs::write(&file, pod.config_text(&manifests)).expect("config written");
    // The container's arguments and the ConfigMap's file, with local models, state and port
    // (ServingProcess adds `--addr 127.0.0.1:0`); no database.
    let args = without_flag(&without_flag(&pod.args()[1..], "--config"), "--addr");
    let mut argv: Vec<OsString> = args.into_iter().map(OsString::from).collect();
    argv.extend([
        "--config".into(),
        file.into_os_string(),
        "--models".into(),
        common::models_dir().into_os_string(),
        "--state".into(),
        dir.path().join("state").into_os_string(),
    ]);
    let argv: Vec<&std::ffi::OsStr> = argv.iter().map(OsString::as_os_str).collect();
    let gateway = ServingProcess::start(&argv);

    let annotations = pod.annotations();
    let scrape = annotations
        .get("prometheus.io/path")
        .expect("prometheus.io/path");
    for kind in ["readinessProbe", "livenessProbe", "startupProbe"] {
        if let Some(path) = pod.container[kind]["httpGet"]["path"].as_str() {
            let (status, response) = get(&gateway.address, path);
            assert_eq!(status, 200, "{kind} {path}: {response}");
        }
    }
    let (status, response) = get(&gateway.address, scrape);
    assert_eq!(status, 200, "{scrape}: {response}");
    assert!(
        response.contains("text/plain") && response.contains("# TYPE vigil_"),
        "{scrape} is Prometheus text: {response}"
    );
}

#[test]
fn the_drain_fits_in_the_termination_grace_period() {
    let manifests = Manifests::load();
    let pod = manifests.pod();
    let config = cluster_config(&manifests);
    let pre_stop = pod.pre_stop_seconds();
    assert!(pre_stop > 0, "preStop waits before SIGTERM");
    let drain = i64::try_from(config.shutdown_grace.as_secs()).expect("seconds");
    let grace = int(
        &pod.template["spec"]["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    assert!(
        grace > pre_stop + drain,
        "terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} s + \
         shutdown_grace_secs {drain} s, or in-flight requests are killed"
    );
}

#[test]
fn tokens_and_the_database_url_come_from_a_secret() {
    let manifests = Manifests::load();
    let pod = manifests.pod();
    let env = pod.env();
    for name in ["VIGIL_ADMIN_TOKEN", "VIGIL_DATABASE_URL"] {
        let (_, source) = env
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is not set"));
        let Source::Secret {
            name: secret,
            key,
            optional,
        } = source
        else {
            panic!("{name} must come from a secretKeyRef, not {source:?}");
        };
        assert!(!optional, "{name}: the pods must not start without it");
        let value = manifests
            .secret_value(secret, key)
            .unwrap_or_else(|| panic!("{name}: no Secret {secret} with key {key}"));
        assert!(!value.is_empty(), "{name}: Secret {secret} key {key} empty");
    }
    // No secret is written in plain sight: not as a literal variable, not in the ConfigMap.
    for (name, source) in &env {
        let secret_like = ["TOKEN", "SECRET", "PASSWORD", "DATABASE_URL"]
            .iter()
            .any(|s| name.contains(s));
        assert!(
            !(secret_like && matches!(source, Source::Literal(_))),
            "{name} is a literal value"
        );
    }
    let table: toml::Table = toml::from_str(&pod.config_text(&manifests)).expect("TOML");
    for key in [
        "admin_token",
        "feedback_token",
        "database_url",
        "retrain_secret",
        "mlflow_webhook_secret",
    ] {
        assert!(!table.contains_key(key), "{key} is in the ConfigMap");
    }
    // And the settings the pods resolve have them.
    let config = cluster_config(&manifests);
    assert!(config.admin_token.is_some(), "admin token reaches vigil");
    assert!(config.database.is_some(), "database URL reaches vigil");
}

#[test]
fn the_service_and_the_budget_select_the_deployments_pods() {
    let manifests = Manifests::load();
    let pod = manifests.pod();
    let labels = pod.labels();
    let selects = |selector: &BTreeMap<String, String>, what: &str| {
        assert!(!selector.is_empty(), "{what}: an empty selector");
        for (key, value) in selector {
            assert_eq!(
                labels.get(key),
                Some(value),
                "{what} selects {key}={value}; the pods are labelled {labels:?}"
            );
        }
    };
    selects(
        &string_map(
            &pod.deployment["spec"]["selector"]["matchLabels"],
            "Deployment selector",
        ),
        "Deployment",
    );
    selects(
        &string_map(&manifests.one("Service")["spec"]["selector"], "Service"),
        "Service",
    );
    let budget = manifests.one("PodDisruptionBudget");
    assert!(
        budget["spec"]["selector"]["matchExpressions"].is_badvalue(),
        "matchLabels only"
    );
    selects(
        &string_map(
            &budget["spec"]["selector"]["matchLabels"],
            "PodDisruptionBudget selector",
        ),
        "PodDisruptionBudget",
    );
    // The budget lets a node drain take one pod and keeps the others serving.
    let replicas = int(&pod.deployment["spec"]["replicas"], "replicas");
    assert!(replicas >= 2, "N replicas, not {replicas}");
    let spec = &budget["spec"];
    let allowed = match (
        spec["maxUnavailable"].as_i64(),
        spec["minAvailable"].as_i64(),
    ) {
        (Some(max_unavailable), None) => max_unavailable,
        (None, Some(min_available)) => replicas - min_available,
        other => panic!("an integer maxUnavailable or minAvailable, not {other:?}"),
    };
    assert!(
        (1..replicas).contains(&allowed),
        "the budget allows {allowed} of {replicas} pods down"
    );
}

#[test]
fn the_pod_template_asks_to_be_scraped() {
    let manifests = Manifests::load();
    let pod = manifests.pod();
    let annotations = pod.annotations();
    assert_eq!(
        annotations.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        annotations.get("prometheus.io/path").map(String::as_str),
        Some("/metrics")
    );
    let port = i64::from(cluster_config(&manifests).addr.port());
    assert_eq!(
        annotations.get("prometheus.io/port"),
        Some(&port.to_string())
    );
}

#[test]
fn requests_and_limits_are_set() {
    let manifests = Manifests::load();
    let pod = manifests.pod();
    let resources = &pod.container["resources"];
    let mebibytes = |yaml: &Yaml, what: &str| -> u64 {
        let quantity = text(yaml, what);
        let (number, unit) = quantity.split_at(
            quantity
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(quantity.len()),
        );
        let number: u64 = number.parse().expect("a whole number");
        match unit {
            "Mi" => number,
            "Gi" => number * 1024,
            other => panic!("{what}: unit {other}, expected Mi or Gi"),
        }
    };
    let request = mebibytes(&resources["requests"]["memory"], "memory request");
    let limit = mebibytes(&resources["limits"]["memory"], "memory limit");
    assert!(
        request <= limit,
        "memory request {request}Mi above its limit {limit}Mi"
    );
    assert!(!resources["requests"]["cpu"].is_badvalue(), "a CPU request");
}
