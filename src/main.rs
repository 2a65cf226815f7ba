//! The `vigil` command: `serve`, `check` and `inspect`. Parsing and wiring only.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use vigil::client::{AdminClient, render_models, render_rescan, table};
use vigil::config::{Config, Environment, LogFormat, ServeArgs};
use vigil::engine::{EngineKind, Engines, Signature, TensorSpec};
use vigil::serving::VersionStatus;

/// mimalloc: a request allocates and frees dozens of small blocks across worker threads, where
/// it costs a fraction of the system allocator's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// vigil: an inference gateway for ONNX models.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a model repository over HTTP (Open Inference Protocol v2 and simple JSON).
    Serve(Box<ServeArgs>),
    /// Load every version of a repository and print a table; exit 1 if any fails.
    Check {
        /// Model repository.
        dir: PathBuf,
        /// ONNX Runtime library (also VIGIL_ORT_LIB or ORT_DYLIB_PATH).
        #[arg(long, env = "VIGIL_ORT_LIB")]
        ort_lib: Option<PathBuf>,
    },
    /// Operate a running gateway through its admin API.
    Admin(AdminArgs),
    /// Print the inputs and outputs of an ONNX file.
    Inspect {
        /// The ONNX file.
        file: PathBuf,
        /// Engine to read it with.
        #[arg(long, value_enum, default_value = "ort")]
        engine: InspectEngine,
        /// ONNX Runtime library (also VIGIL_ORT_LIB or ORT_DYLIB_PATH).
        #[arg(long, env = "VIGIL_ORT_LIB")]
        ort_lib: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct AdminArgs {
    /// Gateway base URL.
    #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin token (as configured on the gateway).
    #[arg(long, env = "VIGIL_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Make the change only if the model's deployment is still at this revision (sent as
    /// `If-Match`); otherwise it is refused with the current deployment.
    #[arg(long, global = true)]
    if_revision: Option<u64>,
    #[command(subcommand)]
    action: AdminAction,
}

#[derive(Subcommand)]
enum AdminAction {
    /// Every model and version (or one model), with roles, scores and shadow comparisons.
    Models {
        /// Only this model.
        model: Option<String>,
    },
    /// Make a version the champion.
    Promote { model: String, version: String },
    /// Mirror a fraction (0–1) of the champion's traffic to a version.
    Shadow {
        model: String,
        version: String,
        #[arg(long, default_value_t = 1.0)]
        fraction: f64,
    },
    /// Stop mirroring to a version.
    Unshadow { model: String, version: String },
    /// Set the confidence threshold (0–1).
    Threshold { model: String, threshold: f64 },
    /// Bring back the previous champion.
    Rollback { model: String },
    /// Load version directories added since start.
    Rescan,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum InspectEngine {
    Ort,
    Tract,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn ort_dylib_path() -> Option<PathBuf> {
    std::env::var_os("ORT_DYLIB_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The other tools' variables vigil honours (`ORT_DYLIB_PATH`, `MLFLOW_TRACKING_*`).
fn environment() -> Environment {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Environment {
        ort_dylib_path: ort_dylib_path(),
        mlflow_tracking_uri: var("MLFLOW_TRACKING_URI"),
        mlflow_tracking_token: var("MLFLOW_TRACKING_TOKEN"),
        mlflow_tracking_username: var("MLFLOW_TRACKING_USERNAME"),
        mlflow_tracking_password: var("MLFLOW_TRACKING_PASSWORD"),
        pgpassword: var("PGPASSWORD"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("vigil: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Check { dir, ort_lib } => check(dir, ort_lib).await,
            Command::Admin(args) => admin(args).await,
            Command::Inspect {
                file,
                engine,
                ort_lib,
            } => inspect(file, engine, ort_lib),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("vigil: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::resolve(args, environment())?;
    init_logs(config.log_format);
    let listeners = vigil::Listeners::bind(&config).await?;
    vigil::run(config, listeners, vigil::shutdown::signal()).await?;
    Ok(ExitCode::SUCCESS)
}

fn describe(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| {
            let dims: Vec<String> = s.protocol_shape().iter().map(i64::to_string).collect();
            format!("{} {} [{}]", s.name, s.dtype, dims.join(","))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn print_table(rows: &[Vec<String>]) {
    print!("{}", table(rows));
}

async fn admin(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.url, args.token).if_revision(args.if_revision);
    let output = match args.action {
        AdminAction::Models { model: None } => render_models(&client.models().await?),
        AdminAction::Models { model: Some(model) } => render_models(&client.model(&model).await?),
        AdminAction::Promote { model, version } => {
            render_models(&client.promote(&model, &version).await?)
        }
        AdminAction::Shadow {
            model,
            version,
            fraction,
        } => render_models(&client.shadow(&model, &version, fraction).await?),
        AdminAction::Unshadow { model, version } => {
            render_models(&client.unshadow(&model, &version).await?)
        }
        AdminAction::Threshold { model, threshold } => {
            render_models(&client.threshold(&model, threshold).await?)
        }
        AdminAction::Rollback { model } => render_models(&client.rollback(&model).await?),
        AdminAction::Rescan => render_rescan(&client.rescan().await?),
    };
    print!("{output}");
    Ok(ExitCode::SUCCESS)
}

async fn check(dir: PathBuf, ort_lib: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    init_logs(LogFormat::Human);
    let mut config = Config::for_models(dir);
    config.ort_lib = ort_lib.or_else(ort_dylib_path);
    let registry = vigil::load(&config, false).await?.registry;
    let mut rows = vec![
        [
            "MODEL",
            "VERSION",
            "TASK",
            "ENGINE",
            "INPUTS",
            "OUTPUTS",
            "HIGHLIGHT",
            "STATUS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut failed = 0;
    for model in registry.models() {
        let deployment = model.deployment();
        for version in &deployment.versions {
            let meta = version.metadata.as_ref();
            let (inputs, outputs, status) = match &version.status {
                VersionStatus::Ready(loaded) => (
                    describe(&loaded.signature().inputs),
                    describe(&loaded.signature().outputs),
                    "ready".to_string(),
                ),
                VersionStatus::Failed(reason) => {
                    failed += 1;
                    ("-".into(), "-".into(), format!("FAILED: {reason}"))
                }
                VersionStatus::Unloaded => ("-".into(), "-".into(), "unloaded".into()),
            };
            rows.push(vec![
                deployment.model.clone(),
                version.version.clone(),
                meta.map_or("-".into(), |m| m.task.to_string()),
                meta.map_or("-".into(), |m| m.engine.to_string()),
                inputs,
                outputs,
                meta.and_then(|m| m.highlight_score())
                    .map_or("-".into(), |(name, score)| format!("{name}={score}")),
                status,
            ]);
        }
    }
    print_table(&rows);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("vigil: {failed} version(s) failed to load");
        ExitCode::FAILURE
    })
}

fn inspect(
    file: PathBuf,
    engine: InspectEngine,
    ort_lib: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let library = vigil::engine::locate_library(ort_lib.or_else(ort_dylib_path).as_deref())?;
    let engines = Engines::new(&library, 1)?;
    let kind = match engine {
        InspectEngine::Ort => EngineKind::Ort,
        InspectEngine::Tract => EngineKind::Tract,
    };
    let model = engines.load(kind, &file)?;
    let Signature { inputs, outputs } = model.signature();
    let mut rows = vec![
        ["ROLE", "NAME", "DATATYPE", "SHAPE"]
            .map(String::from)
            .to_vec(),
    ];
    for (role, specs) in [("input", inputs), ("output", outputs)] {
        for spec in specs {
            let dims: Vec<String> = spec.protocol_shape().iter().map(i64::to_string).collect();
            rows.push(vec![
                role.to_string(),
                spec.name.clone(),
                spec.dtype.to_string(),
                format!("[{}]", dims.join(", ")),
            ]);
        }
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}
